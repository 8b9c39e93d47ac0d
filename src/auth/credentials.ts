import { createHash, timingSafeEqual } from 'node:crypto';

/** What the `Authorization` header carries. */
export type Credentials =
  | { readonly scheme: 'none' }
  | { readonly scheme: 'basic'; readonly username: string; readonly password: string }
  | { readonly scheme: 'bearer'; readonly token: string }
  /** A header that is present but unreadable: answered 401, never treated as anonymous. */
  | { readonly scheme: 'malformed' };

const NONE: Credentials = { scheme: 'none' };
const MALFORMED: Credentials = { scheme: 'malformed' };

export function parseAuthorization(header: string | undefined): Credentials {
  if (header === undefined || header === '') return NONE;
  const space = header.indexOf(' ');
  if (space <= 0) return MALFORMED;
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (scheme === 'bearer') return value === '' ? MALFORMED : { scheme: 'bearer', token: value };
  if (scheme !== 'basic') return MALFORMED;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  // Clients without credentials may still answer a Basic challenge with an empty pair (containers/image).
  if (decoded === ':') return NONE;
  const colon = decoded.indexOf(':');
  if (colon <= 0) return MALFORMED;
  return { scheme: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Compares two secrets in time independent of where they differ (and of their lengths). */
export function safeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
