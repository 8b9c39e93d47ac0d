import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { StorageDriverError, type FileWriter } from '../driver.js';
import { MIN_PART_SIZE } from './config.js';
import { uploadMarkerKey, type PartInfo, type S3Bucket } from './bucket.js';

export interface S3WriterInit {
  readonly bucket: S3Bucket;
  readonly key: string;
  readonly path: string;
  readonly driver: string;
  readonly chunkSize: number;
  /** Opened without append: the file starts empty. */
  readonly fresh: boolean;
  /** The key's upload marker exists already (bucket.ts). */
  readonly marked: boolean;
  /** An in-progress multipart upload left by an earlier writer's `end()`. */
  readonly upload?: { readonly uploadId: string; readonly parts: readonly PartInfo[] };
  /** A committed object at the key whose content this writer continues. */
  readonly base?: { readonly size: number };
}

/**
 * Writes one file as an S3 multipart upload, in parts of `chunkSize` bytes uploaded while the next
 * part fills (so at most two parts are in memory). What is where after `end()` without `commit()`:
 *
 * - Less than one part written and no upload started: the bytes are PutObject at the key. The object
 *   is then the file so far (visible early, which the contract allows), and appending continues it.
 * - An upload started: the tail goes up as one more part, possibly under 5 MiB, and the upload stays
 *   in progress; `writer(path, true)` finds it (ListMultipartUploads, ListParts) and goes on.
 *
 * S3 accepts a part under 5 MiB only as the last one, and cannot read back a part of an unfinished
 * upload. So when new bytes must follow a small last part, this writer completes the upload (the object
 * at the key is then the file so far) and continues that object: a new upload whose first parts are
 * UploadPartCopy of the object (in equal pieces of at most 5 GiB), or, for an object under 5 MiB, its
 * bytes downloaded into the part buffer. A writer that continues an object keeps it current: its `end()`
 * completes the upload rather than leaving a second copy of the file in progress.
 *
 * `commit()` completes the upload, or PutObjects what is buffered when no upload was needed.
 * `cancel()` aborts every upload of the key and deletes the object and the upload marker.
 *
 * Before it creates an upload, a writer makes sure the key's upload marker exists (bucket.ts); the marker
 * stays after a commit (so a commit costs no extra request) until the file is deleted or moved.
 */
export class S3Writer extends Writable implements FileWriter {
  readonly #bucket: S3Bucket;
  readonly #key: string;
  readonly #path: string;
  readonly #driver: string;
  readonly #chunkSize: number;
  readonly #fresh: boolean;
  #marked: boolean;
  #size: number;
  #uploadId: string | undefined;
  #parts: PartInfo[];
  #base: { readonly size: number } | undefined;
  /** An object at the key holds the file so far; `end()` must leave it current. */
  #objectBacked: boolean;
  /** New bytes arrived, and what appending needs (a small last part, a base object) was handled. */
  #prepared = false;
  #buffer: Buffer | undefined;
  #filled = 0;
  #inflight: Promise<void> | undefined;
  #commitOnFinal = false;
  #state: 'open' | 'committing' | 'committed' | 'cancelled' = 'open';

  constructor(init: S3WriterInit) {
    super({ highWaterMark: 1 << 20 });
    this.#bucket = init.bucket;
    this.#key = init.key;
    this.#path = init.path;
    this.#driver = init.driver;
    this.#chunkSize = init.chunkSize;
    this.#fresh = init.fresh;
    this.#marked = init.marked;
    this.#uploadId = init.upload?.uploadId;
    this.#parts = [...(init.upload?.parts ?? [])];
    this.#base = init.base;
    this.#objectBacked = init.base !== undefined;
    this.#size = init.base?.size ?? this.#parts.reduce((sum, p) => sum + p.Size, 0);
  }

  get size(): number {
    return this.#size;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#ingest(chunk).then(
      () => {
        callback();
      },
      (err: unknown) => {
        callback(this.#fail(err, 'write'));
      },
    );
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#finish(this.#commitOnFinal).then(
      () => {
        callback();
      },
      (err: unknown) => {
        callback(this.#fail(err, this.#commitOnFinal ? 'commit' : 'flush'));
      },
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#buffer = undefined;
    callback(error);
  }

  async commit(): Promise<void> {
    if (this.#state !== 'open') throw new StorageDriverError(`writer already ${this.#state}`, this.#driver);
    this.#state = 'committing';
    try {
      if (!this.writableEnded) {
        this.#commitOnFinal = true;
        this.end();
        await finished(this);
      } else {
        // end() already flushed; what is left is to complete an upload it left in progress.
        await finished(this);
        if (this.#uploadId !== undefined) await this.#complete();
      }
    } catch (err) {
      this.#state = 'open';
      throw this.#fail(err, 'commit');
    }
    this.#state = 'committed';
    this.#bucket.rememberCommitted(this.#key, this.#size);
  }

  async cancel(): Promise<void> {
    if (this.#state === 'committed' || this.#state === 'committing') {
      throw new StorageDriverError(`writer already ${this.#state}`, this.#driver);
    }
    this.#state = 'cancelled';
    this.#bucket.forgetCommitted(this.#key);
    if (!this.closed) {
      const closed = new Promise((resolve) => this.once('close', resolve));
      this.destroy();
      await closed;
    }
    try {
      await this.#inflight?.catch(() => undefined);
      if (this.#uploadId !== undefined) await this.#bucket.abortUpload(this.#key, this.#uploadId);
      // Uploads of earlier writers of this file, and the object an earlier end() left.
      await this.#bucket.abortUploads(this.#key);
      await this.#bucket.deleteObjects([this.#key, uploadMarkerKey(this.#key)]);
    } catch (err) {
      throw this.#fail(err, 'cancel');
    }
  }

  async #ingest(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    if (!this.#prepared) await this.#prepare();
    let pos = 0;
    while (pos < chunk.length) {
      this.#buffer ??= Buffer.allocUnsafe(this.#chunkSize);
      // Copied, so the caller may reuse its buffer once the write's callback ran.
      const copied = chunk.copy(this.#buffer, this.#filled, pos);
      this.#filled += copied;
      pos += copied;
      if (this.#filled === this.#chunkSize) await this.#sendFullPart();
    }
    this.#size += chunk.length;
  }

  /** Makes the state one that new bytes can follow: no small last part, no base object outside the upload. */
  async #prepare(): Promise<void> {
    const last = this.#parts.at(-1);
    if (this.#uploadId !== undefined && last !== undefined && last.Size < MIN_PART_SIZE) {
      const size = this.#parts.reduce((sum, p) => sum + p.Size, 0);
      await this.#complete();
      this.#base = { size };
      this.#objectBacked = true;
    }
    const base = this.#base;
    if (base !== undefined && base.size >= MIN_PART_SIZE) {
      const uploadId = await this.#createUpload();
      this.#uploadId = uploadId;
      this.#parts = await this.#bucket.copyParts(this.#key, base.size, this.#key, uploadId, 1);
    } else if (base !== undefined && base.size > 0) {
      const res = await this.#bucket.getObject(this.#key);
      const bytes = await res.Body?.transformToByteArray();
      if (bytes?.length !== base.size) {
        throw new Error(
          `the object changed while appending: expected ${base.size} bytes, read ${bytes?.length}`,
        );
      }
      this.#buffer = Buffer.allocUnsafe(this.#chunkSize);
      this.#buffer.set(bytes);
      this.#filled = bytes.length;
    }
    this.#base = undefined;
    this.#prepared = true;
  }

  /** Starts uploading the full buffer, after the previous part finished: at most one part in flight. */
  async #sendFullPart(): Promise<void> {
    const body = this.#buffer;
    if (!body) return;
    this.#buffer = undefined;
    this.#filled = 0;
    await this.#waitInflight();
    const upload = this.#uploadPart(body);
    // Observed by the next #waitInflight; this only keeps it from counting as unhandled meanwhile.
    upload.catch(() => undefined);
    this.#inflight = upload;
  }

  async #uploadPart(body: Buffer): Promise<void> {
    this.#uploadId ??= await this.#createUpload();
    const number = (this.#parts.at(-1)?.PartNumber ?? 0) + 1;
    this.#parts.push(await this.#bucket.uploadPart(this.#key, this.#uploadId, number, body));
  }

  /** The marker first: an upload in progress without one would be invisible to `stat` and `delete`. */
  async #createUpload(): Promise<string> {
    if (!this.#marked) {
      await this.#bucket.putObject(uploadMarkerKey(this.#key), Buffer.alloc(0));
      this.#marked = true;
    }
    return this.#bucket.createUpload(this.#key);
  }

  async #waitInflight(): Promise<void> {
    const inflight = this.#inflight;
    this.#inflight = undefined;
    await inflight;
  }

  /** Flushes what is buffered; with `commit`, makes the file whole and visible at the key. */
  async #finish(commit: boolean): Promise<void> {
    await this.#waitInflight();
    if (!this.#prepared) {
      // No new bytes. A new file exists from its opening on, even when empty.
      if (this.#fresh) {
        await this.#bucket.putObject(this.#key, Buffer.alloc(0));
        this.#objectBacked = true;
      } else if (commit && this.#uploadId !== undefined) {
        await this.#complete();
      }
      return;
    }
    const tail = this.#buffer?.subarray(0, this.#filled);
    this.#buffer = undefined;
    this.#filled = 0;
    if (this.#uploadId !== undefined) {
      if (tail !== undefined && tail.length > 0) await this.#uploadPart(tail);
      if (commit || this.#objectBacked) await this.#complete();
    } else {
      // Under one part in all: one PutObject holds the whole file.
      await this.#bucket.putObject(this.#key, tail ?? Buffer.alloc(0));
      this.#objectBacked = true;
    }
  }

  async #complete(): Promise<void> {
    const uploadId = this.#uploadId;
    if (uploadId === undefined) return;
    await this.#bucket.completeUpload(this.#key, uploadId, this.#parts);
    this.#uploadId = undefined;
    this.#parts = [];
  }

  #fail(err: unknown, op: string): StorageDriverError {
    return this.#bucket.fail(err, `writer ${op} ${this.#path}`);
  }
}
