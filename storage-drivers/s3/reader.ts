import { Readable } from 'node:stream';

/** What the reader hands on at a time: large enough that per-chunk costs downstream stop mattering. */
export const COALESCED_CHUNK = 1024 * 1024;

/**
 * An S3 response body re-cut into chunks of about `COALESCED_CHUNK` bytes. Node's HTTP client yields
 * 64 KiB at a time; piping those to a client costs a write and a round through the stream machinery
 * each, which measured at about 40% of a pull's server CPU (bench/README.md, S3). One copy per byte
 * is much cheaper. Backpressure passes through: the body is paused while this stream is full.
 */
export class CoalescingReader extends Readable {
  readonly #source: Readable;
  #parts: Buffer[] = [];
  #buffered = 0;

  constructor(source: Readable, chunk = COALESCED_CHUNK) {
    super({ highWaterMark: chunk });
    this.#source = source;
    source.on('data', (data: Buffer) => {
      this.#parts.push(data);
      this.#buffered += data.length;
      if (this.#buffered >= chunk && !this.#flush()) source.pause();
    });
    source.once('end', () => {
      this.#flush();
      this.push(null);
    });
    source.once('error', (err) => {
      this.destroy(err);
    });
    // Pulled on demand, like the body itself.
    source.pause();
  }

  override _read(): void {
    this.#source.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#parts = [];
    if (!this.#source.destroyed) this.#source.destroy();
    callback(error);
  }

  /** Pushes what is buffered; `false` when this stream is full. */
  #flush(): boolean {
    if (this.#buffered === 0) return true;
    const parts = this.#parts;
    const [only] = parts;
    const data = parts.length === 1 && only ? only : Buffer.concat(parts, this.#buffered);
    this.#parts = [];
    this.#buffered = 0;
    return this.push(data);
  }
}
