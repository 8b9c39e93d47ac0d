import { createHash, type Hash } from 'node:crypto';

/** A parsed content digest; `toString()` gives the canonical `algorithm:hex` form. */
export interface Digest {
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
  toString(): string;
}

const HEX_LENGTH = { sha256: 64, sha384: 96, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof HEX_LENGTH;

const DIGEST_PATTERN = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

function isAlgorithm(value: string): value is DigestAlgorithm {
  return Object.hasOwn(HEX_LENGTH, value);
}

function makeDigest(algorithm: DigestAlgorithm, hex: string): Digest {
  const text = `${algorithm}:${hex}`;
  return { algorithm, hex, toString: () => text };
}

/** Parses `sha256:<64 hex>` (and sha384/sha512); `undefined` for anything else, so callers pick the error. */
export function parseDigest(value: string): Digest | undefined {
  const match = DIGEST_PATTERN.exec(value);
  if (!match) return undefined;
  const [, algorithm = '', hex = ''] = match;
  if (!isAlgorithm(algorithm)) return undefined;
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[0-9a-f]+$/.test(hex)) return undefined;
  return makeDigest(algorithm, hex);
}

export function newHasher(algorithm: DigestAlgorithm = 'sha256'): Hash {
  return createHash(algorithm);
}

export function digestOfHash(algorithm: DigestAlgorithm, hash: Hash): Digest {
  return makeDigest(algorithm, hash.digest('hex'));
}

export function digestOf(data: Buffer | string, algorithm: DigestAlgorithm = 'sha256'): Digest {
  return makeDigest(algorithm, createHash(algorithm).update(data).digest('hex'));
}

export function sameDigest(a: Digest, b: Digest): boolean {
  return a.algorithm === b.algorithm && a.hex === b.hex;
}
