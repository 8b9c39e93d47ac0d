import { open, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { StorageDriverError, type FileWriter } from '../driver.js';
import { toStorageDriverError } from '../base.js';

export interface FilesystemWriterHooks {
  readonly driver: string;
  /** Removes the file and prunes its empty parents. */
  readonly remove: () => Promise<void>;
}

/**
 * Bytes a writer lets pile up in the page cache before it starts flushing them in the background.
 * Without it, the kernel writes nothing back until commit's fsync (a 256 MiB blob is far under the
 * dirty ratio), and that fsync then waits for the whole file: about as long as receiving it took.
 */
const BACKGROUND_FLUSH_BYTES = 16 << 20;
/**
 * Background flushes in flight in this process. Each holds a thread-pool thread for as long as the
 * disk takes, so only one runs at a time; a writer that finds it busy flushes at a later write.
 */
let backgroundFlushes = 0;
const MAX_BACKGROUND_FLUSHES = 1;

/**
 * Appends to a file in place through one fd opened with O_APPEND, so an upload can resume from what an
 * earlier writer left. `end()` closes the fd; `commit()` makes the bytes durable.
 */
export class FilesystemWriter extends Writable implements FileWriter {
  #size: number;
  #handle: FileHandle | undefined;
  #syncOnFinal = false;
  /** Bytes written since the last background flush started. */
  #unflushed = 0;
  #flushing: Promise<void> | undefined;
  #state: 'open' | 'committing' | 'committed' | 'cancelled' = 'open';

  constructor(
    handle: FileHandle,
    size: number,
    private readonly fullPath: string,
    private readonly hooks: FilesystemWriterHooks,
  ) {
    // Room for the socket to keep delivering while a write is in the thread pool.
    super({ highWaterMark: 8 << 20 });
    this.#handle = handle;
    this.#size = size;
  }

  get size(): number {
    return this.#size;
  }

  get localPath(): string {
    return this.fullPath;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#append([chunk]).then(
      () => {
        callback();
      },
      (err: unknown) => {
        callback(this.#error(err, 'write'));
      },
    );
  }

  override _writev(
    chunks: { chunk: Buffer; encoding: BufferEncoding }[],
    callback: (error?: Error | null) => void,
  ): void {
    this.#append(chunks.map((c) => c.chunk)).then(
      () => {
        callback();
      },
      (err: unknown) => {
        callback(this.#error(err, 'write'));
      },
    );
  }

  override _final(callback: (error?: Error | null) => void): void {
    const handle = this.#handle;
    const flushing = this.#flushing;
    if (!this.#syncOnFinal && handle && flushing) {
      // Every byte is written; only the fd waits for the background flush, not the request. Whoever
      // commits later fsyncs through an fd of its own.
      this.#handle = undefined;
      void flushing.then(() => handle.close()).catch(() => undefined);
      callback();
      return;
    }
    // A background flush that failed says nothing about durability: the final fsync decides.
    (flushing ?? Promise.resolve())
      .then(() => (this.#syncOnFinal && handle ? handle.sync() : undefined))
      .then(() => this.#close())
      .then(
        () => {
          callback();
        },
        (err: unknown) => {
          callback(this.#error(err, 'flush'));
        },
      );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#close().then(
      () => {
        callback(error);
      },
      (err: unknown) => {
        callback(error ?? this.#error(err, 'close'));
      },
    );
  }

  async commit(): Promise<void> {
    if (this.#state !== 'open')
      throw new StorageDriverError(`writer already ${this.#state}`, this.hooks.driver);
    this.#state = 'committing';
    try {
      if (!this.writableEnded) {
        // Still open: fsync through our own fd before closing it.
        this.#syncOnFinal = true;
        this.end();
        await finished(this);
      } else {
        await finished(this);
        const handle = await open(this.fullPath, 'r');
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
      }
    } catch (err) {
      this.#state = 'open';
      throw this.#error(err, 'commit');
    }
    this.#state = 'committed';
  }

  async cancel(): Promise<void> {
    if (this.#state === 'committed' || this.#state === 'committing') {
      throw new StorageDriverError(`writer already ${this.#state}`, this.hooks.driver);
    }
    this.#state = 'cancelled';
    if (!this.closed) {
      const closed = new Promise((resolve) => this.once('close', resolve));
      this.destroy();
      await closed;
    }
    await this.hooks.remove();
  }

  async #append(buffers: Buffer[]): Promise<void> {
    const handle = this.#handle;
    if (!handle) throw new Error('file is closed');
    let pending = buffers;
    while (pending.length > 0) {
      const { bytesWritten } = await handle.writev(pending);
      if (bytesWritten === 0) throw new Error('writev wrote nothing');
      this.#size += bytesWritten;
      this.#unflushed += bytesWritten;
      pending = skipBytes(pending, bytesWritten);
    }
    if (this.#unflushed >= BACKGROUND_FLUSH_BYTES) this.#flushInBackground(handle);
  }

  /** Starts writing the file's dirty pages to disk while more bytes arrive; not waited for. */
  #flushInBackground(handle: FileHandle): void {
    if (this.#flushing || backgroundFlushes >= MAX_BACKGROUND_FLUSHES) return;
    backgroundFlushes++;
    this.#unflushed = 0;
    this.#flushing = handle
      .datasync()
      .catch(() => undefined)
      .finally(() => {
        backgroundFlushes--;
        this.#flushing = undefined;
      });
  }

  async #close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    // FileHandle.close waits for writes still in flight on it.
    await handle?.close();
  }

  #error(err: unknown, op: string): StorageDriverError {
    return toStorageDriverError(err, this.hooks.driver, `${op} ${this.fullPath}`);
  }
}

/** What is left of `buffers` after the first `count` bytes were written (a short writev). */
function skipBytes(buffers: Buffer[], count: number): Buffer[] {
  let rest = count;
  const out: Buffer[] = [];
  for (const buf of buffers) {
    if (rest >= buf.length) {
      rest -= buf.length;
    } else {
      out.push(rest > 0 ? buf.subarray(rest) : buf);
      rest = 0;
    }
  }
  return out;
}
