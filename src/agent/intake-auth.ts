// Who may post events: the registry, proven by a shared bearer token or an HMAC of the body.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-wharf-signature-256';

export interface IntakeSecrets {
  token?: string | undefined;
  secret?: string | undefined;
  insecure: boolean;
}

/** Compares in time independent of where the strings differ and of their lengths (hashes are compared). */
function safeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

/** `sha256=<hex HMAC-SHA256 of body>`, as the registry's notifications send it. */
export function signatureOf(secret: string, body: Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/**
 * True when the request carries the configured token or a valid signature of `body`. Either one is
 * enough when both are configured; with neither configured only `insecure` lets events in.
 */
export function isAuthorized(
  secrets: IntakeSecrets,
  headers: { authorization?: string | undefined; signature?: string | undefined },
  body: Buffer,
): boolean {
  if (secrets.token === undefined && secrets.secret === undefined) return secrets.insecure;
  let ok = false;
  if (secrets.token !== undefined && headers.authorization !== undefined) {
    const m = /^Bearer\s+(.+)$/i.exec(headers.authorization.trim());
    if (m?.[1] !== undefined && safeEqual(m[1], secrets.token)) ok = true;
  }
  if (secrets.secret !== undefined && headers.signature !== undefined) {
    if (safeEqual(headers.signature.trim().toLowerCase(), signatureOf(secrets.secret, body))) ok = true;
  }
  return ok;
}
