import { createHash, createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';

/** A key the token verifier trusts, with every id a token header may name it by. */
export interface TrustedKey {
  readonly key: KeyObject;
  /** libtrust fingerprint (Distribution's `kid`), RFC 7638 thumbprint, and the JWK's own `kid`. */
  readonly ids: readonly string[];
  readonly thumbprint: string;
}

export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly alg: string;
  /** The libtrust fingerprint, so Distribution 2.8 given this key's certificate accepts the tokens. */
  readonly kid: string;
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(bytes: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32.charAt((value >>> (bits - 5)) & 31);
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32.charAt((value << (5 - bits)) & 31);
  return out;
}

/**
 * libtrust's key id, which Distribution uses as `kid`: SHA-256 of the DER public key, truncated to
 * 240 bits, base32, in twelve colon-separated groups of four.
 */
export function libtrustKeyId(key: KeyObject): string {
  const der = publicKeyOf(key).export({ type: 'spki', format: 'der' });
  const encoded = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return encoded.match(/.{1,4}/g)?.join(':') ?? encoded;
}

/** The JWS algorithms a public key can verify; the first is the one its tokens are signed with. */
export function algorithmsFor(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1') return ['ES256'];
      if (curve === 'secp384r1') return ['ES384'];
      if (curve === 'secp521r1') return ['ES512'];
      throw new Error(`unsupported EC curve ${String(curve)} (use P-256, P-384 or P-521)`);
    }
    case 'rsa':
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
    case 'rsa-pss':
      return ['PS256', 'PS384', 'PS512'];
    case 'ed25519':
      return ['EdDSA'];
    default:
      throw new Error(`unsupported key type ${String(key.asymmetricKeyType)} (use EC, RSA or Ed25519)`);
  }
}

function publicKeyOf(key: KeyObject): KeyObject {
  return key.type === 'private' ? createPublicKey(key) : key;
}

export async function trustedKey(key: KeyObject, ownKid?: string): Promise<TrustedKey> {
  const publicKey = publicKeyOf(key);
  algorithmsFor(publicKey); // refuses unusable key types up front
  const thumbprint = await calculateJwkThumbprint(await exportJWK(publicKey));
  const ids = [libtrustKeyId(publicKey), thumbprint, ...(ownKid === undefined ? [] : [ownKid])];
  return { key: publicKey, ids, thumbprint };
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g;

function pemBlocks(text: string): { label: string; pem: string }[] {
  return [...text.matchAll(PEM_BLOCK)].map((m) => ({ label: m[1] ?? '', pem: m[0] }));
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`${what}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * `auth.token.rootcertbundle`: PEM certificates (as Distribution takes) and, for convenience, bare
 * public keys. Certificates also anchor tokens that carry an `x5c` chain.
 */
export async function loadPemBundle(path: string): Promise<{ keys: TrustedKey[]; roots: X509Certificate[] }> {
  const what = 'auth.token.rootcertbundle';
  const text = await readText(path, what);
  const keys: TrustedKey[] = [];
  const roots: X509Certificate[] = [];
  for (const block of pemBlocks(text)) {
    try {
      if (block.label === 'CERTIFICATE') {
        const cert = new X509Certificate(block.pem);
        roots.push(cert);
        keys.push(await trustedKey(cert.publicKey));
      } else if (block.label === 'PUBLIC KEY') {
        keys.push(await trustedKey(createPublicKey(block.pem)));
      }
    } catch (err) {
      throw new Error(`${what}: ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  if (keys.length === 0) throw new Error(`${what}: ${path} holds no PEM certificate or public key`);
  return { keys, roots };
}

/** `auth.token.jwks`: a JSON Web Key Set file; only the public part of each key is kept. */
export async function loadJwks(path: string): Promise<TrustedKey[]> {
  const what = 'auth.token.jwks';
  const text = await readText(path, what);
  let keys: unknown;
  try {
    keys = (JSON.parse(text) as { keys?: unknown }).keys;
  } catch (err) {
    throw new Error(`${what}: ${path} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!Array.isArray(keys) || keys.length === 0) throw new Error(`${what}: ${path} has no "keys"`);
  const out: TrustedKey[] = [];
  for (const [i, jwk] of (keys as JWK[]).entries()) {
    try {
      const publicJwk = {
        ...jwk,
        d: undefined,
        p: undefined,
        q: undefined,
        dp: undefined,
        dq: undefined,
        qi: undefined,
      };
      out.push(await trustedKey(createPublicKey({ key: publicJwk, format: 'jwk' }), jwk.kid));
    } catch (err) {
      throw new Error(`${what}: ${path}: key ${i}: ${(err as Error).message}`, { cause: err });
    }
  }
  return out;
}

/** `auth.tokenserver.signingkey`: a PEM private key (PKCS#8, SEC1 or PKCS#1) or a private JWK file. */
export async function loadSigningKey(path: string): Promise<SigningKey> {
  const what = 'auth.tokenserver.signingkey';
  const text = await readText(path, what);
  let privateKey: KeyObject;
  try {
    const trimmed = text.trim();
    if (trimmed.startsWith('{')) {
      privateKey = createPrivateKey({ key: JSON.parse(trimmed) as JWK, format: 'jwk' });
    } else {
      const block = pemBlocks(text).find((b) => b.label.endsWith('PRIVATE KEY'));
      if (!block) throw new Error('no PEM private key or JWK in the file');
      if (block.label.includes('ENCRYPTED')) throw new Error('the private key is encrypted');
      privateKey = createPrivateKey(block.pem);
    }
  } catch (err) {
    throw new Error(`${what}: ${path}: ${(err as Error).message}`, { cause: err });
  }
  const publicKey = createPublicKey(privateKey);
  let alg: string;
  try {
    [alg = ''] = algorithmsFor(publicKey);
  } catch (err) {
    throw new Error(`${what}: ${path}: ${(err as Error).message}`, { cause: err });
  }
  return { privateKey, publicKey, alg, kid: libtrustKeyId(publicKey) };
}
