import { X509Certificate, createPublicKey, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, errors as joseErrors, jwtVerify, type JWK, type JWTPayload } from 'jose';
import { LRUCache } from 'lru-cache';
import type { TrustedKey } from './keys.js';
import { accessKey, type ResourceActions } from './scopes.js';

/** Distribution's allowance for clock skew on `exp` and `nbf`. */
export const CLOCK_SKEW_SECONDS = 60;

export interface VerifiedToken {
  readonly subject: string;
  /** `type:name` → granted actions, from the `access` claim. */
  readonly access: ReadonlyMap<string, ReadonlySet<string>>;
  /** When the token stops being accepted (exp plus the skew allowance), ms since the epoch. */
  readonly acceptedUntil: number;
}

/** A token the registry does not accept; `reason` is safe to log (it never holds the token). */
export class TokenRejectedError extends Error {
  override name = 'TokenRejectedError';
  constructor(readonly reason: string) {
    super(`token rejected: ${reason}`);
  }
}

export interface TokenVerifierOptions {
  readonly issuer: string;
  /** The registry's service name: tokens must carry it in `aud`. */
  readonly service: string;
  readonly keys: readonly TrustedKey[];
  /** Certificates that anchor `x5c` chains. */
  readonly roots?: readonly X509Certificate[];
  /** Accepted `alg` values; never `none` or HMAC. */
  readonly algorithms: readonly string[];
  readonly cacheSize?: number;
}

/**
 * Verifies registry bearer tokens as the Docker token-authentication spec defines them: a JWS signed by
 * a trusted key (named by `kid`, an `x5c` chain to a trusted root, or an embedded trusted `jwk`), `iss`,
 * `aud`, `exp`, `nbf`, and the `access` claim. A verified token is cached until it expires, so a client's
 * many requests with one token cost one signature check.
 */
export class TokenVerifier {
  private readonly byId = new Map<string, KeyObject>();
  private readonly byThumbprint = new Map<string, KeyObject>();
  private readonly cache: LRUCache<string, VerifiedToken>;

  constructor(private readonly options: TokenVerifierOptions) {
    for (const trusted of options.keys) {
      for (const id of trusted.ids) this.byId.set(id, trusted.key);
      this.byThumbprint.set(trusted.thumbprint, trusted.key);
    }
    this.cache = new LRUCache({ max: options.cacheSize ?? 10_000 });
  }

  async verify(token: string): Promise<VerifiedToken> {
    const cached = this.cache.get(token);
    if (cached !== undefined) {
      if (cached.acceptedUntil > Date.now()) return cached;
      this.cache.delete(token);
    }
    const verified = await this.verifyUncached(token);
    const ttl = verified.acceptedUntil - Date.now();
    if (ttl > 0) this.cache.set(token, verified, { ttl });
    return verified;
  }

  private async verifyUncached(token: string): Promise<VerifiedToken> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, (header) => this.signingKey(header), {
        issuer: this.options.issuer,
        audience: this.options.service,
        algorithms: [...this.options.algorithms],
        clockTolerance: CLOCK_SKEW_SECONDS,
        requiredClaims: ['exp', 'iss', 'aud'],
      }));
    } catch (err) {
      throw new TokenRejectedError(rejectionReason(err));
    }
    return {
      subject: typeof payload.sub === 'string' ? payload.sub : '',
      access: parseAccessClaim(payload.access),
      acceptedUntil: ((payload.exp ?? 0) + CLOCK_SKEW_SECONDS) * 1000,
    };
  }

  private async signingKey(header: { kid?: string; x5c?: string[]; jwk?: JWK }): Promise<KeyObject> {
    if (header.x5c !== undefined) return this.chainKey(header.x5c);
    if (header.jwk !== undefined) {
      const thumbprint = await calculateJwkThumbprint(header.jwk).catch(() => '');
      const key = this.byThumbprint.get(thumbprint);
      if (key === undefined) throw new TokenRejectedError('embedded jwk is not a trusted key');
      return key;
    }
    if (header.kid !== undefined) {
      const key = this.byId.get(header.kid);
      if (key === undefined) throw new TokenRejectedError('signed by an untrusted key id');
      return key;
    }
    const [only, ...others] = this.options.keys;
    if (only !== undefined && others.length === 0) return only.key;
    throw new TokenRejectedError('no kid, x5c or jwk to choose among the trusted keys');
  }

  /** Checks an `x5c` chain up to a trusted root certificate and returns the leaf's key. */
  private chainKey(x5c: readonly string[]): KeyObject {
    const roots = this.options.roots ?? [];
    let chain: X509Certificate[];
    try {
      chain = x5c.map((der) => new X509Certificate(Buffer.from(der, 'base64')));
    } catch {
      throw new TokenRejectedError('x5c holds an unreadable certificate');
    }
    const now = Date.now();
    for (const [i, cert] of chain.entries()) {
      if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) {
        throw new TokenRejectedError('x5c certificate is not valid now');
      }
      const issuer = chain[i + 1];
      if (issuer !== undefined && !(cert.checkIssued(issuer) && cert.verify(issuer.publicKey))) {
        throw new TokenRejectedError('x5c chain is broken');
      }
    }
    const top = chain.at(-1);
    const anchored =
      top !== undefined &&
      roots.some(
        (root) =>
          root.fingerprint256 === top.fingerprint256 || (top.checkIssued(root) && top.verify(root.publicKey)),
      );
    if (!anchored || chain[0] === undefined) throw new TokenRejectedError('x5c chain has no trusted root');
    return createPublicKey(chain[0].publicKey.export({ type: 'spki', format: 'pem' }));
  }
}

function rejectionReason(err: unknown): string {
  if (err instanceof TokenRejectedError) return err.reason;
  if (err instanceof joseErrors.JWTExpired) return 'expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `claim ${err.claim} ${err.reason}`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'algorithm not allowed';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad signature';
  if (err instanceof joseErrors.JOSEError) return err.code;
  return 'malformed';
}

/** The `access` claim as a lookup table; a malformed claim rejects the token. */
export function parseAccessClaim(claim: unknown): Map<string, Set<string>> {
  const table = new Map<string, Set<string>>();
  if (claim === undefined || claim === null) return table;
  if (!Array.isArray(claim)) throw new TokenRejectedError('access claim is not a list');
  for (const entry of claim as unknown[]) {
    const { type, name, actions } = (entry ?? {}) as Partial<ResourceActions>;
    if (typeof type !== 'string' || typeof name !== 'string' || !Array.isArray(actions)) {
      throw new TokenRejectedError('access claim entry is malformed');
    }
    const key = accessKey(type, name);
    const set = table.get(key) ?? new Set<string>();
    for (const action of actions as unknown[]) if (typeof action === 'string') set.add(action);
    table.set(key, set);
  }
  return table;
}
