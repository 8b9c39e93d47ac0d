// Test blobs live in temp files and are always streamed, so the client never holds a whole blob.
// One random file yields many distinct blobs: a variant overwrites the first bytes with a label,
// which gives every repetition its own digest without writing another file.
import { createHash, randomFill } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';

const randomFillAsync = promisify(randomFill);
const HEADER_BYTES = 64;
const READ_CHUNK = 1024 * 1024;

export const MiB = 1024 * 1024;

/** Bytes of a blob: `header` (if any) over the start of `path`, `size` bytes in all. */
export interface Content {
  path: string;
  size: number;
  header: Buffer | undefined;
  digest: string;
}

/** Client-side sha256 throughput, measured while computing digests (file reads from page cache). */
export const hashStats = { bytes: 0, seconds: 0 };

/** Writes `size` random bytes to `path` and returns it as content, hashing on the way. */
export async function writeRandomFile(path: string, size: number): Promise<Content> {
  const file = await open(path, 'w');
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(8 * MiB);
  try {
    for (let written = 0; written < size;) {
      const n = Math.min(buf.length, size - written);
      const part = buf.subarray(0, n);
      await randomFillAsync(part);
      hash.update(part);
      await file.write(part);
      written += n;
    }
  } finally {
    await file.close();
  }
  return { path, size, header: undefined, digest: `sha256:${hash.digest('hex')}` };
}

/** Bytes [start, end) of the content as a stream. */
export function contentStream(c: Content, start = 0, end = c.size): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    let from = start;
    if (c.header !== undefined && from < c.header.length) {
      const upto = Math.min(end, c.header.length);
      yield c.header.subarray(from, upto);
      from = upto;
    }
    if (from < end) {
      for await (const chunk of createReadStream(c.path, {
        start: from,
        end: end - 1,
        highWaterMark: READ_CHUNK,
      })) {
        yield chunk as Buffer;
      }
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** A distinct blob made from `base` by writing `label` over its first bytes. */
export async function variant(base: Content, label: string): Promise<Content> {
  const header = Buffer.alloc(Math.min(HEADER_BYTES, base.size), ' ');
  header.write(`wharf-bench ${label}`);
  const c: Content = { ...base, header, digest: '' };
  const hash = createHash('sha256');
  const t0 = performance.now();
  for await (const chunk of contentStream(c)) hash.update(chunk as Buffer);
  hashStats.seconds += (performance.now() - t0) / 1000;
  hashStats.bytes += c.size;
  c.digest = `sha256:${hash.digest('hex')}`;
  return c;
}

/** sha256 digest of a small in-memory blob. */
export function digestOf(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}
