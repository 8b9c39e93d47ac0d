export interface Page<T> {
  readonly items: T[];
  /** The last item of this page when more follow; the `last` of the next request. */
  readonly next?: string;
}

/** Lexical paging as the spec describes it: items after `last`, at most `n` of them. */
export function paginate<T>(
  sorted: readonly T[],
  key: (item: T) => string,
  n?: number,
  last?: string,
): Page<T> {
  const after = last === undefined ? sorted : sorted.filter((item) => key(item) > last);
  if (n === undefined || after.length <= n) return { items: [...after] };
  const items = after.slice(0, n);
  const lastItem = items.at(-1);
  return lastItem === undefined ? { items } : { items, next: key(lastItem) };
}
