import type { Context } from 'koa';
import { ManifestTooLargeError } from '../registry/errors.js';

/** Reads a small request body whole, refusing (413) past `limit` before buffering more than that. */
export async function readLimitedBody(ctx: Context, limit: number): Promise<Buffer> {
  const declared = Number(ctx.get('Content-Length') || NaN);
  if (declared > limit) {
    throw new ManifestTooLargeError(`manifest is ${declared} bytes; the limit is ${limit}`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      ctx.req.resume();
      throw new ManifestTooLargeError(`manifest is larger than the limit of ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** Whether the request carries a body at all (a final PUT chunk, a monolithic POST). */
export function hasBody(ctx: Context): boolean {
  const length = ctx.get('Content-Length');
  if (length !== '') return Number(length) > 0;
  return ctx.get('Transfer-Encoding') !== '';
}
