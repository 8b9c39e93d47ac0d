import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { parseDigest, type Digest, type DigestAlgorithm } from './digest.js';

/**
 * Digests of uploads written to local files, computed on worker threads that read each file behind
 * its writes. On the event loop, sha256 took about as long as everything else a push did there, and
 * the loop was the push's bottleneck. Handing the bytes to a thread in memory cost the loop nearly as
 * much as hashing them (copies into shared memory and one message per batch); reading them back from
 * the page cache costs it one small message per MiB.
 */

/** Written bytes a thread is told about at a time. */
const ADVANCE_BYTES = 1 << 20;

// Plain JavaScript, evaluated as the worker's script: nothing to resolve or build.
const THREAD_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { closeSync, openSync, readSync } = require('node:fs');
const { createHash } = require('node:crypto');
const buffer = Buffer.allocUnsafe(1 << 20);
const files = new Map();
function catchUp(file, upTo) {
  while (file.offset < upTo) {
    const n = readSync(file.fd, buffer, 0, Math.min(buffer.length, upTo - file.offset), file.offset);
    if (n === 0) throw new Error('the file ends at ' + file.offset + ', before the ' + upTo + ' bytes written');
    file.hash.update(n === buffer.length ? buffer : buffer.subarray(0, n));
    file.offset += n;
  }
}
function drop(id) {
  const file = files.get(id);
  files.delete(id);
  if (file && file.fd !== undefined) closeSync(file.fd);
}
parentPort.on('message', (m) => {
  switch (m.op) {
    case 'open': {
      const file = { hash: createHash(m.algorithm), offset: 0, fd: undefined, error: undefined };
      files.set(m.id, file);
      try { file.fd = openSync(m.path, 'r'); } catch (err) { file.error = String(err && err.message); }
      break;
    }
    case 'advance': {
      const file = files.get(m.id);
      if (!file || file.error) break;
      try { catchUp(file, m.upTo); } catch (err) { file.error = String(err && err.message); }
      break;
    }
    case 'digest': {
      const file = files.get(m.id);
      let answer;
      if (!file) answer = { error: 'no such file hash' };
      else {
        if (!file.error) { try { catchUp(file, m.upTo); } catch (err) { file.error = String(err && err.message); } }
        answer = file.error ? { error: file.error } : { hex: file.hash.copy().digest('hex') };
      }
      parentPort.postMessage({ ticket: m.ticket, ...answer });
      break;
    }
    case 'drop':
      drop(m.id);
      break;
  }
});
`;

type ToThread =
  | { op: 'open'; id: number; path: string; algorithm: DigestAlgorithm }
  | { op: 'advance'; id: number; upTo: number }
  | { op: 'digest'; id: number; upTo: number; ticket: number }
  | { op: 'drop'; id: number };

interface FromThread {
  readonly ticket: number;
  readonly hex?: string;
  readonly error?: string;
}

/** One hashing thread. A thread that dies fails the digests it owes; new hashes go to another. */
class HashingThread {
  private readonly worker: Worker;
  private readonly pending = new Map<
    number,
    { resolve: (hex: string) => void; reject: (e: Error) => void }
  >();
  private nextTicket = 1;
  files = 0;
  error: Error | undefined;

  constructor(onDeath: (thread: HashingThread) => void) {
    this.worker = new Worker(THREAD_SOURCE, { eval: true, name: 'wharf-hash' });
    this.worker.on('message', (m: FromThread) => {
      const waiter = this.pending.get(m.ticket);
      this.pending.delete(m.ticket);
      if (this.pending.size === 0) this.worker.unref();
      if (m.hex !== undefined) waiter?.resolve(m.hex);
      else waiter?.reject(new Error(`hashing thread: ${m.error ?? 'no answer'}`));
    });
    const die = (err: Error): void => {
      if (this.error) return;
      this.error = err;
      onDeath(this);
      for (const waiter of this.pending.values()) waiter.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => {
      die(new Error(`hashing thread exited with code ${code}`));
    });
    // An idle hashing thread must not keep a process (a CLI command, a test) alive; one that owes
    // a digest must. After the listeners: adding a 'message' listener refs the worker's port again.
    this.worker.unref();
  }

  post(message: ToThread): void {
    if (!this.error) this.worker.postMessage(message);
  }

  digest(id: number, upTo: number): Promise<string> {
    if (this.error) return Promise.reject(this.error);
    const ticket = this.nextTicket++;
    if (this.pending.size === 0) this.worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(ticket, { resolve, reject });
      this.post({ op: 'digest', id, upTo, ticket });
    });
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

/** The hashing threads of a process: started on first use, at most one per core (and two). */
export class FileHashing {
  private readonly threads: HashingThread[] = [];
  private nextId = 1;

  constructor(private readonly size = Math.max(1, Math.min(2, availableParallelism()))) {}

  /** A digest of the file at `path` (a local file an upload appends to), from byte 0. */
  start(path: string, algorithm: DigestAlgorithm): FileHash {
    const thread = this.thread();
    const id = this.nextId++;
    thread.files++;
    thread.post({ op: 'open', id, path, algorithm });
    return new FileHash(thread, id, algorithm);
  }

  /** Stops the threads; digests they owe fail (uploads then read their data back to hash it). */
  async close(): Promise<void> {
    await Promise.all(this.threads.splice(0).map((t) => t.terminate()));
  }

  private thread(): HashingThread {
    if (this.threads.length < this.size) {
      const thread = new HashingThread((dead) => {
        const at = this.threads.indexOf(dead);
        if (at >= 0) this.threads.splice(at, 1);
      });
      this.threads.push(thread);
      return thread;
    }
    return this.threads.reduce((a, b) => (b.files < a.files ? b : a));
  }
}

/**
 * The running digest of a file that grows by appends. `advance(n)` says that the first `n` bytes are
 * written (a write's callback has run); the thread hashes them when it gets to them. `digest(n)`
 * hashes up to `n` and answers; it rejects when the thread could not read them (the upload then reads
 * its data back instead).
 */
export class FileHash {
  private told = 0;
  private written = 0;
  private failure: Error | undefined;
  private waiters: { upTo: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  private disposed = false;

  constructor(
    private readonly thread: HashingThread,
    private readonly id: number,
    readonly algorithm: DigestAlgorithm,
  ) {}

  advance(upTo: number): void {
    if (upTo <= this.written) return;
    this.written = upTo;
    if (this.written - this.told >= ADVANCE_BYTES) {
      this.told = this.written;
      this.thread.post({ op: 'advance', id: this.id, upTo: this.written });
    }
    // Called for every chunk written: nothing to do unless a digest waits.
    if (this.waiters.length === 0) return;
    this.waiters = this.waiters.filter((w) => {
      if (w.upTo > this.written) return true;
      w.resolve();
      return false;
    });
  }

  /** A write failed: the bytes after `written` will never be there. */
  fail(error: Error): void {
    this.failure ??= error;
    for (const w of this.waiters.splice(0)) w.reject(error);
  }

  /** The digest of the first `upTo` bytes, once they are written. */
  async digest(upTo: number): Promise<Digest> {
    if (this.disposed) throw new Error('file hash already disposed');
    if (upTo > this.written) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve, reject) => this.waiters.push({ upTo, resolve, reject }));
    }
    const hex = await this.thread.digest(this.id, upTo);
    const digest = parseDigest(`${this.algorithm}:${hex}`);
    if (!digest) throw new Error(`hashing thread answered ${hex}`);
    return digest;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.thread.files--;
    this.thread.post({ op: 'drop', id: this.id });
    this.fail(new Error('file hash disposed'));
  }
}

/** The process's hashing threads. */
export const fileHashing = new FileHashing();
