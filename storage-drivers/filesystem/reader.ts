import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { ReadBuffers } from '../driver.js';

/**
 * A file's bytes from `start` for `length` bytes (or to its end), read through one fd into buffers
 * from `buffers`. fs.createReadStream allocates a fresh buffer for every read; here, that fresh
 * memory (page faults, and V8 collecting for the external memory) cost more CPU than the copies.
 */
export class FileReader extends Readable {
  #position: number;
  #remaining: number;

  constructor(
    private readonly handle: FileHandle,
    start: number,
    length: number,
    private readonly buffers: ReadBuffers,
  ) {
    // One read ahead: a buffer waits in here while the one before it is written out.
    super({ highWaterMark: 1 });
    this.#position = start;
    this.#remaining = length;
  }

  override _read(): void {
    if (this.#remaining <= 0) {
      this.push(null);
      return;
    }
    const buffer = this.buffers.take(this);
    const want = Math.min(buffer.length, this.#remaining);
    this.handle.read(buffer, 0, want, this.#position).then(
      ({ bytesRead }) => {
        if (bytesRead === 0) {
          // The file is shorter than it was when opened: end here, as a read stream would.
          this.#remaining = 0;
          this.push(null);
          return;
        }
        this.#position += bytesRead;
        this.#remaining -= bytesRead;
        this.push(buffer.subarray(0, bytesRead));
      },
      (err: unknown) => {
        this.destroy(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // FileHandle.close waits for a read still in flight on it.
    this.handle.close().then(
      () => {
        callback(error);
      },
      (err: unknown) => {
        callback(error ?? (err instanceof Error ? err : new Error(String(err))));
      },
    );
  }
}

/** Without a lender: a new buffer for each read, as fs.createReadStream does. */
export function freshBuffers(size: number): ReadBuffers {
  return { take: () => Buffer.allocUnsafeSlow(size) };
}
