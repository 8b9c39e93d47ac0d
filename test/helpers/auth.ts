// Fixtures for the auth tests: htpasswd files, key pairs, hand-made tokens, and a log sink to scan.
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import bcrypt from 'bcryptjs';
import { exportJWK, SignJWT, type JWTPayload } from 'jose';
import type { Logger } from 'pino';
import { libtrustKeyId } from '../../src/auth/keys.js';
import { createLogger } from '../../src/log.js';

const execFileAsync = promisify(execFile);

export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly alg: string;
  /** Distribution's kid (libtrust fingerprint) of the public key. */
  readonly kid: string;
}

function pair(alg: string, keys: { privateKey: KeyObject; publicKey: KeyObject }): KeyPair {
  return { ...keys, alg, kid: libtrustKeyId(keys.publicKey) };
}

export const newES256 = (): KeyPair => pair('ES256', generateKeyPairSync('ec', { namedCurve: 'P-256' }));
export const newRS256 = (): KeyPair => pair('RS256', generateKeyPairSync('rsa', { modulusLength: 2048 }));
export const newEdDSA = (): KeyPair => pair('EdDSA', generateKeyPairSync('ed25519'));

export const publicPem = (key: KeyPair): string =>
  key.publicKey.export({ type: 'spki', format: 'pem' }).toString();
export const privatePem = (key: KeyPair): string =>
  key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

/** A JWKS document with the public keys, each with its own `kid`. */
export async function jwksOf(keys: readonly { key: KeyPair; kid: string }[]): Promise<string> {
  const out = [];
  for (const { key, kid } of keys) out.push({ ...(await exportJWK(key.publicKey)), kid, alg: key.alg });
  return JSON.stringify({ keys: out });
}

/** A temp directory for fixture files, removed by `cleanup`. */
export async function fixtureDir(): Promise<{
  dir: string;
  path: (name: string) => string;
  cleanup: () => Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-auth-'));
  return { dir, path: (name) => join(dir, name), cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Writes an htpasswd file of bcrypt entries (cost 4: fast, still real bcrypt). */
export async function writeHtpasswd(path: string, users: Record<string, string>): Promise<void> {
  const lines = Object.entries(users).map(([user, password]) => `${user}:${bcrypt.hashSync(password, 4)}`);
  await writeFile(path, `${lines.join('\n')}\n`);
}

export const basicAuth = (user: string, password: string): string =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

export const randomPassword = (): string => `pw-${randomBytes(12).toString('base64url')}`;

export interface TokenSpec {
  readonly key: KeyPair;
  readonly issuer?: string;
  readonly audience?: string | string[];
  readonly subject?: string;
  readonly access?: readonly { type: string; name: string; actions: string[] }[];
  /** Seconds from now; negative for the past. Default 300. */
  readonly expiresIn?: number;
  readonly notBefore?: number;
  /** Header overrides; `kid: null` leaves the kid out. */
  readonly kid?: string | null;
  readonly extraHeader?: Record<string, unknown>;
}

/** Signs a registry token the way a token server does (Distribution's claims). */
export async function signToken(spec: TokenSpec): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const header: Record<string, unknown> = { alg: spec.key.alg, typ: 'JWT', ...spec.extraHeader };
  if (spec.kid !== null) header.kid = spec.kid ?? spec.key.kid;
  const payload: JWTPayload = { access: spec.access ?? [] };
  let jwt = new SignJWT(payload)
    .setProtectedHeader(header as { alg: string })
    .setIssuer(spec.issuer ?? 'test-issuer')
    .setSubject(spec.subject ?? 'alice')
    .setAudience(spec.audience ?? 'test-service')
    .setIssuedAt(now)
    .setExpirationTime(now + (spec.expiresIn ?? 300));
  if (spec.notBefore !== undefined) jwt = jwt.setNotBefore(now + spec.notBefore);
  return jwt.sign(spec.key.privateKey);
}

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An unsecured JWT (`alg: none`) with the given claims. */
export function unsignedToken(claims: Record<string, unknown>): string {
  return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.`;
}

/** The same token with its payload replaced and the original signature kept. */
export function tamperedToken(token: string, claims: Record<string, unknown>): string {
  const [header = '', , signature = ''] = token.split('.');
  return `${header}.${b64url(claims)}.${signature}`;
}

export function decodeClaims(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<
    string,
    unknown
  >;
}

/** Wharf's own logger (its redaction included) at trace level, every line kept for scanning. */
export function capturingLogger(): { logger: Logger; text: () => string } {
  const lines: string[] = [];
  const logger = createLogger(
    { level: 'trace', formatter: 'json', fields: {} },
    { destination: { write: (line: string) => void lines.push(line) } },
  );
  return { logger, text: () => lines.join('') };
}

/** Every form in which a secret could leak into a log line. */
export function secretForms(secret: string): string[] {
  return [secret, Buffer.from(secret).toString('base64'), encodeURIComponent(secret)];
}

// ---- certificates (openssl, as an operator would make them) ----------------------------------------

/** Whether openssl can be used: outside CI a skip reason when not; in CI (CI=true) its absence fails. */
export async function requireOpenssl(): Promise<string | undefined> {
  try {
    await execFileAsync('openssl', ['version']);
    return undefined;
  } catch (err) {
    const reason = `openssl not available: ${(err as Error).message}`;
    if (process.env.CI === 'true') throw new Error(`required tool missing in CI: ${reason}`, { cause: err });
    return reason;
  }
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await execFileAsync('openssl', args, { cwd });
}

export interface CertFiles {
  /** PEM certificate path. */
  readonly cert: string;
  /** PEM private key path (PKCS#8, unencrypted). */
  readonly key: string;
}

/** A self-signed CA (P-256), valid for two days. */
export async function makeCA(dir: string, name: string, cn = 'Wharf Test CA'): Promise<CertFiles> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await openssl(
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
      ...['-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`],
      ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    ],
    dir,
  );
  return { cert, key };
}

/** A leaf certificate signed by `ca`, for a server name (SAN DNS, plus 127.0.0.1) or a token signer. */
export async function makeLeaf(
  dir: string,
  name: string,
  ca: CertFiles,
  opts: { dns?: string[]; keyType?: 'ec' | 'rsa' } = {},
): Promise<CertFiles> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  const newkey =
    opts.keyType === 'rsa'
      ? ['-newkey', 'rsa:2048']
      : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  await openssl(
    ['req', ...newkey, '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${opts.dns?.[0] ?? name}`],
    dir,
  );
  const san = [...(opts.dns ?? []).map((d) => `DNS:${d}`), 'IP:127.0.0.1'].join(',');
  await writeFile(
    ext,
    [
      `subjectAltName=${san}`,
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth,clientAuth',
      '',
    ].join('\n'),
  );
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-CAcreateserial',
      '-out',
      cert,
      '-days',
      '2',
      '-extfile',
      ext,
    ],
    dir,
  );
  return { cert, key };
}
