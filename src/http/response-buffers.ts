import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { ReadBuffers } from '../../storage-drivers/driver.js';

/** Bytes per read from storage; 2 MiB read at ~1.6 GB/s here, 1 MiB at ~1.1 GB/s. */
export const READ_BUFFER_BYTES = 2 << 20;
/** Idle buffers kept for the next download (32 MiB). */
const MAX_IDLE = 16;
const idle: Buffer[] = [];

interface Lent {
  readonly buffer: Buffer;
  /** Bytes of the body handed to the response up to the end of this buffer's chunk; set when it is. */
  end?: number;
}

/**
 * Read buffers for one response body, reused once the response has written them out. A fresh buffer
 * per read cost a download more CPU than its copies: page faults on new memory, and V8 collecting
 * for all that external memory (bench/README.md, blob pull).
 *
 * A buffer is written out when every byte handed to the response up to its end has left the
 * response: handed = bytes the body emitted, still held = `res.writableLength` (the response's and
 * its socket's queues, counted until the kernel has taken them). Chunks leave in order, so a buffer
 * whose end is at most handed - held is free. Headers count as held too, which only delays reuse.
 */
export class ResponseBuffers implements ReadBuffers {
  private readonly lent: Lent[] = [];
  private handed = 0;
  private watching: Readable | undefined;

  constructor(private readonly res: ServerResponse) {
    res.once('close', () => {
      // Only a response that finished has written everything; after an abort, the buffers go to GC.
      if (res.writableFinished) for (const l of this.lent.splice(0)) release(l.buffer);
    });
  }

  take(stream: Readable): Buffer {
    this.watch(stream);
    const written = this.handed - this.res.writableLength;
    const free = this.lent.findIndex((l) => l.end !== undefined && l.end <= written);
    if (free >= 0) {
      const [reused] = this.lent.splice(free, 1);
      if (reused) {
        this.lent.push({ buffer: reused.buffer });
        return reused.buffer;
      }
    }
    const buffer = idle.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
    this.lent.push({ buffer });
    return buffer;
  }

  /** Notes, for each chunk the body emits, where it ends and which buffer holds it. */
  private watch(stream: Readable): void {
    if (this.watching === stream) return;
    this.watching = stream;
    stream.on('data', (chunk: Buffer) => {
      this.handed += chunk.length;
      const owner = this.lent.find((l) => l.end === undefined && l.buffer.buffer === chunk.buffer);
      if (owner) owner.end = this.handed;
    });
  }
}

function release(buffer: Buffer): void {
  if (idle.length < MAX_IDLE) idle.push(buffer);
}
