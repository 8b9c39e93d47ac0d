import { randomUUID, type Hash } from 'node:crypto';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { LRUCache } from 'lru-cache';
import type { FileWriter, StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import type { BlobDescriptor, BlobStore } from './blobs.js';
import { digestOfHash, newHasher, sameDigest, type Digest, type DigestAlgorithm } from './digest.js';
import { BlobUploadUnknownError, DigestInvalidError, ChunkOutOfOrderError } from './errors.js';
import { deleteIfExists, fileExists } from './links.js';
import { fileHashing, type FileHash, type FileHashing } from './file-hashing.js';
import { KeyedMutex } from './mutex.js';
import { pathFor } from './paths.js';
import type { CacheObserver } from './registry.js';

const UPLOAD_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Running hash of an upload's first `offset` bytes, kept while this process sees every chunk: on the
 * event loop (`hash`), or, for data in a local file, on a hashing thread that reads it back (`file`).
 */
interface HashState {
  readonly algorithm: DigestAlgorithm;
  readonly hash?: Hash;
  readonly file?: FileHash;
  offset: number;
}

function disposeHash(state: HashState | undefined): void {
  state?.file?.dispose();
}

/**
 * Upload sessions. Everything a session needs lives in storage (`_uploads/<id>/`), so a chunk may
 * land on any replica or after a restart. The digest is computed while bytes stream in; when this
 * process has not seen every byte (another replica, a restart, a broken chunk) the stored data is
 * re-read at completion instead: correctness on the rare path, speed on the common one.
 */
export class UploadStore {
  // Deletes dispose of the state themselves: it may still be in use then.
  private readonly hashes = new LRUCache<string, HashState>({
    max: 10_000,
    dispose: (state, _key, reason) => {
      if (reason === 'evict') disposeHash(state);
    },
  });
  private readonly locks = new KeyedMutex();

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
    private readonly cacheObserver?: CacheObserver,
    private readonly hashing: FileHashing = fileHashing,
  ) {}

  static isValidId(id: string): boolean {
    return UPLOAD_ID_PATTERN.test(id);
  }

  async start(name: string): Promise<string> {
    const id = randomUUID();
    await this.driver.putContent(pathFor({ kind: 'uploadStartedAt', name, id }), new Date().toISOString());
    this.hashes.set(`${name}/${id}`, { algorithm: 'sha256', hash: newHasher('sha256'), offset: 0 });
    return id;
  }

  /** Bytes received so far. */
  async size(name: string, id: string): Promise<number> {
    if (!UploadStore.isValidId(id)) throw new BlobUploadUnknownError();
    try {
      return (await this.driver.stat(pathFor({ kind: 'uploadData', name, id }))).size;
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
    // No data yet: the session exists if it was started.
    if (await fileExists(this.driver, pathFor({ kind: 'uploadStartedAt', name, id }))) return 0;
    throw new BlobUploadUnknownError();
  }

  /**
   * Appends a chunk. `start`, when the client sent `Content-Range`, must equal the bytes received so far
   * (416 otherwise). A chunk broken off midway keeps the bytes that arrived; the client can ask for the
   * range and resume. Returns the new size.
   */
  append(name: string, id: string, body: Readable, start?: number): Promise<number> {
    return this.locks.run(id, () => this.appendLocked(name, id, body, start));
  }

  async complete(name: string, id: string, expected: Digest, body?: Readable): Promise<BlobDescriptor> {
    return this.locks.run(id, async () => {
      // The data stays open until its commit: opening it again costs an object store another round of
      // listings (the session's uploads and parts).
      const { size, writer } = body
        ? await this.appendLocked(name, id, body, undefined, true)
        : await this.openData(name, id);
      const data = pathFor({ kind: 'uploadData', name, id });
      let committed = size === 0;
      let closed = writer === undefined;
      // Finalises the data (an object store completes its multipart upload) before it is read or moved.
      const commit = async (): Promise<void> => {
        if (committed) return;
        await (writer ?? (await this.driver.writer(data, true))).commit();
        committed = closed = true;
      };
      // The bytes are not wanted: the open writer lets go of them before the session goes.
      const drop = async (): Promise<void> => {
        if (!closed) await writer?.cancel();
        closed = true;
      };
      try {
        let actual = await this.digestFromState(name, id, size, expected.algorithm);
        this.cacheObserver?.('upload_hash', actual !== undefined);
        if (!actual) {
          await commit();
          actual = await this.digestByReading(name, id, size, expected.algorithm);
        }
        if (!sameDigest(actual, expected)) {
          // The bytes can never become the blob the client named; keep nothing of them.
          await drop();
          await this.cancelLocked(name, id);
          throw new DigestInvalidError(undefined, {
            expected: expected.toString(),
            actual: actual.toString(),
          });
        }
        // Deduplication: when the blob exists already, the uploaded copy is dropped (never made durable).
        if (!(await this.blobs.statGlobal(actual))) {
          await commit();
          if (size > 0) await this.driver.move(data, pathFor({ kind: 'blobData', digest: actual }));
          else await this.blobs.putSmall(actual, Buffer.alloc(0));
        }
        await drop();
        await this.blobs.link(name, actual, size);
        await this.cancelLocked(name, id);
        return { digest: actual, size };
      } catch (err) {
        // A failure keeps what arrived, as a broken chunk does: the client may retry the PUT.
        if (!closed && writer) await endQuietly(writer);
        throw err;
      }
    });
  }

  async cancel(name: string, id: string): Promise<void> {
    await this.locks.run(id, async () => {
      await this.size(name, id);
      await this.cancelLocked(name, id);
    });
  }

  private async cancelLocked(name: string, id: string): Promise<void> {
    this.forgetHash(`${name}/${id}`);
    await deleteIfExists(this.driver, pathFor({ kind: 'uploadDir', name, id }));
  }

  /** The session's data open for appending, and its size; no writer while the session has no data. */
  private async openData(name: string, id: string): Promise<{ size: number; writer?: FileWriter }> {
    if (!UploadStore.isValidId(id)) throw new BlobUploadUnknownError();
    try {
      const writer = await this.driver.writer(pathFor({ kind: 'uploadData', name, id }), true);
      return { size: writer.size, writer };
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
    // No data yet: the session exists if it was started.
    if (await fileExists(this.driver, pathFor({ kind: 'uploadStartedAt', name, id }))) return { size: 0 };
    throw new BlobUploadUnknownError();
  }

  private appendLocked(name: string, id: string, body: Readable, start?: number): Promise<number>;
  /** With `keepOpen`, the writer is returned open (not ended), for the caller to commit. */
  private appendLocked(
    name: string,
    id: string,
    body: Readable,
    start: number | undefined,
    keepOpen: true,
  ): Promise<{ size: number; writer: FileWriter }>;
  private async appendLocked(
    name: string,
    id: string,
    body: Readable,
    start?: number,
    keepOpen = false,
  ): Promise<number | { size: number; writer: FileWriter }> {
    // Opening the data for appending tells its size too: one round of storage requests, not two.
    const opened = await this.openData(name, id);
    const size = opened.size;
    // Empty data starts over, as a new file (an object store then keeps its upload in progress).
    if (opened.writer && (size === 0 || (start !== undefined && start !== size))) {
      await endQuietly(opened.writer);
    }
    if (start !== undefined && start !== size) {
      throw new ChunkOutOfOrderError(`chunk starts at ${start} but the upload has ${size} bytes`);
    }
    const key = `${name}/${id}`;
    // Out of the cache while the chunk streams; a chunk that fails leaves it out (disposed).
    const previous = this.hashes.get(key);
    this.hashes.delete(key);
    let writer: FileWriter;
    try {
      writer =
        size > 0 && opened.writer
          ? opened.writer
          : await this.driver.writer(pathFor({ kind: 'uploadData', name, id }), false);
    } catch (err) {
      disposeHash(previous);
      throw err;
    }
    let state = size > 0 && previous?.offset === size ? previous : undefined;
    if (state !== previous) disposeHash(previous);
    if (size === 0) state = this.newHashState(writer);

    const { hash, file } = state ?? {};
    let written = 0;
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        hash?.update(chunk);
        written += chunk.length;
        const end = size + written;
        const more = file
          ? writer.write(chunk, (err) => {
              if (err) file.fail(err);
              else file.advance(end);
            })
          : writer.write(chunk);
        if (!more) await once(writer, 'drain');
      }
      if (!keepOpen) {
        writer.end();
        await finished(writer);
      }
    } catch (err) {
      disposeHash(state);
      await endQuietly(writer);
      throw err;
    }
    if (state) {
      state.offset = size + written;
      this.hashes.set(key, state);
    }
    return keepOpen ? { size: size + written, writer } : size + written;
  }

  /** A hash for data that starts now: on a hashing thread when the data is a local file. */
  private newHashState(writer: FileWriter): HashState {
    const path = writer.localPath;
    return path === undefined
      ? { algorithm: 'sha256', hash: newHasher('sha256'), offset: 0 }
      : { algorithm: 'sha256', file: this.hashing.start(path, 'sha256'), offset: 0 };
  }

  /** The digest from the running hash, when this process saw every byte (and could hash them). */
  private async digestFromState(
    name: string,
    id: string,
    size: number,
    algorithm: DigestAlgorithm,
  ): Promise<Digest | undefined> {
    const key = `${name}/${id}`;
    const state = this.hashes.get(key);
    if (state?.algorithm !== algorithm || state.offset !== size) return undefined;
    if (state.hash) return digestOfHash(algorithm, state.hash.copy());
    try {
      return await state.file?.digest(size);
    } catch {
      // The thread could not read the data (or died): reading it back decides.
      this.forgetHash(key);
      return undefined;
    }
  }

  private forgetHash(key: string): void {
    disposeHash(this.hashes.get(key));
    this.hashes.delete(key);
  }

  /** The digest by reading back what this process did not see (another replica, a restart, a broken chunk). */
  private async digestByReading(
    name: string,
    id: string,
    size: number,
    algorithm: DigestAlgorithm,
  ): Promise<Digest> {
    const state = this.hashes.get(`${name}/${id}`);
    // Only a hash on the loop can be continued from where it is.
    const usable = state?.hash && state.algorithm === algorithm && state.offset <= size ? state : undefined;
    const hash = usable?.hash?.copy() ?? newHasher(algorithm);
    const from = usable?.offset ?? 0;
    if (from < size) {
      const stream = await this.driver.reader(pathFor({ kind: 'uploadData', name, id }), { offset: from });
      for await (const chunk of stream as AsyncIterable<Buffer>) hash.update(chunk);
    }
    return digestOfHash(algorithm, hash);
  }
}

/** Flushes what a broken chunk delivered so the session stays resumable; a second failure changes nothing. */
async function endQuietly(writer: FileWriter): Promise<void> {
  try {
    writer.end();
    await finished(writer);
  } catch {
    // The chunk already failed; the client learns the stored size from the session's Range.
  }
}
