import type { Context } from 'koa';
import { parseDigest, type Digest } from '../registry/digest.js';
import {
  BlobUploadUnknownError,
  DigestInvalidError,
  NameInvalidError,
  PaginationNumberInvalidError,
  TagInvalidError,
} from '../registry/errors.js';
import type { Reference } from '../registry/manifests.js';
import { isValidName, isValidTag } from '../registry/names.js';
import { UploadStore } from '../registry/uploads.js';

/** Validation of every path and query parameter, so handlers only ever see well-formed values. */

function pathParam(ctx: Context, key: string): string | undefined {
  return (ctx.params as Record<string, string | undefined> | undefined)?.[key];
}

export function nameParam(ctx: Context): string {
  const name = pathParam(ctx, 'name');
  if (typeof name !== 'string' || !isValidName(name)) {
    throw new NameInvalidError(undefined, { name });
  }
  return name;
}

export function digestValue(value: unknown): Digest {
  const digest = typeof value === 'string' ? parseDigest(value) : undefined;
  if (!digest) throw new DigestInvalidError(`invalid digest: ${String(value)}`, { digest: value });
  return digest;
}

export function digestParam(ctx: Context): Digest {
  return digestValue(pathParam(ctx, 'digest'));
}

/** A manifest reference: anything with a colon must be a digest, anything else a tag. */
export function referenceParam(ctx: Context): Reference {
  const value = pathParam(ctx, 'reference') ?? '';
  if (value.includes(':')) return { digest: digestValue(value) };
  if (!isValidTag(value)) throw new TagInvalidError(`invalid tag: ${value}`, { tag: value });
  return { tag: value };
}

export function uploadIdParam(ctx: Context): string {
  const id = pathParam(ctx, 'id') ?? '';
  if (!UploadStore.isValidId(id)) throw new BlobUploadUnknownError();
  return id;
}

function queryString(ctx: Context, key: string): string | undefined {
  const value = ctx.query[key];
  return Array.isArray(value) ? value[0] : value;
}

/** `n` and `last` of the list endpoints. */
export function pagingQuery(ctx: Context): { n?: number; last?: string } {
  const rawN = queryString(ctx, 'n');
  const last = queryString(ctx, 'last');
  let n: number | undefined;
  if (rawN !== undefined) {
    if (!/^\d{1,9}$/.test(rawN)) throw new PaginationNumberInvalidError(undefined, { n: rawN });
    n = Number(rawN);
  }
  return { ...(n !== undefined && { n }), ...(last !== undefined && last !== '' && { last }) };
}

export function optionalQuery(ctx: Context, key: string): string | undefined {
  const value = queryString(ctx, key);
  return value === '' ? undefined : value;
}

/** The `Link` header for the next page of a list endpoint; `query` carries the request's own filters. */
export function setNextLink(
  ctx: Context,
  path: string,
  next: string | undefined,
  query: Record<string, string | number | undefined>,
): void {
  if (next === undefined) return;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
  params.set('last', next);
  ctx.set('Link', `<${path}?${params.toString()}>; rel="next"`);
}
