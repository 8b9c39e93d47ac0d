/** A satisfiable single byte range of a resource of `size` bytes. */
export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

/**
 * Parses a `Range: bytes=a-b` request header (also `a-` and `-suffix`). Returns `undefined` for no or
 * unsupported ranges (the whole resource is served), `'unsatisfiable'` for a range outside the resource.
 */
export function parseRangeHeader(header: string, size: number): ByteRange | 'unsatisfiable' | undefined {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match) return undefined;
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return undefined;
  if (first === '') {
    const suffix = Math.min(Number(last), size);
    if (suffix === 0) return 'unsatisfiable';
    return { offset: size - suffix, length: suffix };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { offset: start, length: end - start + 1 };
}

/** Parses an upload chunk's `Content-Range: <start>-<end>` (the spec's form; `bytes ` prefixes tolerated). */
export function parseContentRange(header: string): { start: number; end: number } | undefined {
  const match = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!match) return undefined;
  return { start: Number(match[1]), end: Number(match[2]) };
}
