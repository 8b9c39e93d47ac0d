// The verdict format shared by the agent (which signs and pushes verdicts) and promotion and quarantine
// (which check them): an in-toto Statement v1 with the test-result predicate, in a DSSE envelope signed
// with ES256 (P-256, SHA-256, IEEE-P1363 r||s), pushed as an OCI referrer of the image it judges.
import { createHash, KeyObject, sign as signBytes, verify as verifyBytes } from 'node:crypto';
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JSONWebKeySet,
  type JWK,
} from 'jose';
import type { Descriptor, RegistryClient } from '../client/registry-client.js';

export type { Descriptor };
export type { JSONWebKeySet, JWK };

export const PREDICATE_TYPE = 'https://in-toto.io/attestation/test-result/v0.1';
export const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
export const DSSE_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
export const VERDICT_ARTIFACT_TYPE = 'application/vnd.in-toto+json';
export const DSSE_MEDIA_TYPE = 'application/vnd.dsse.envelope.v1+json';
export const ANNOTATION_PREDICATE = 'in-toto.io/predicate-type';
export const ANNOTATION_RESULT = 'dev.wharf.verdict.result';
export const ANNOTATION_KEYID = 'dev.wharf.verdict.keyid';
export const ANNOTATION_CREATED = 'org.opencontainers.image.created';

export const OCI_MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';
/** The empty config every artifact manifest points at (`{}`). */
export const EMPTY_DESCRIPTOR = {
  mediaType: 'application/vnd.oci.empty.v1+json',
  digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
  size: 2,
} as const satisfies Descriptor;
export const EMPTY_CONTENT = Buffer.from('{}');
/** Envelopes are small; anything larger is not one of ours and is not read. */
export const ENVELOPE_MAX_SIZE = 1024 * 1024;

export type VerdictResult = 'PASSED' | 'FAILED';

/** The test-result predicate (v0.1), with Wharf's run details under `wharf`. */
export interface TestResultPredicate {
  result: VerdictResult;
  passedTests: string[];
  failedTests: string[];
  warnedTests: string[];
  configuration: { name: string; uri?: string; digest?: Record<string, string> }[];
  wharf?: Record<string, unknown>;
}

export interface InTotoStatement {
  _type: typeof STATEMENT_TYPE;
  subject: { name: string; digest: Record<string, string> }[];
  predicateType: typeof PREDICATE_TYPE;
  predicate: TestResultPredicate;
}

export interface DsseEnvelope {
  payloadType: string;
  /** base64 of the serialized statement. */
  payload: string;
  signatures: { keyid?: string; sig: string }[];
}

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  /** The public half, with `kid`, `alg: ES256` and `use: sig`. */
  readonly publicJwk: JWK;
}

/** Why a verdict was not accepted; `reason` lets callers pick their wording and exit code. */
export type VerdictErrorReason =
  'malformed' | 'payload-type' | 'untrusted-key' | 'bad-signature' | 'statement-type' | 'predicate-type';

export class VerdictError extends Error {
  constructor(
    readonly reason: VerdictErrorReason,
    message: string,
  ) {
    super(message);
    this.name = 'VerdictError';
  }
}

export interface BuildStatementInput {
  /** The image's name, e.g. `127.0.0.1:5000/team/app`. */
  subjectName: string;
  /** `sha256:<hex>` of the image manifest. */
  digest: string;
  result: VerdictResult;
  passedTests: string[];
  failedTests: string[];
  /** The policy's name. */
  policy: string;
  /** Exit code, reason, duration...: stored under `predicate.wharf`. */
  details?: Record<string, unknown>;
  /**
   * When the verdict was made, signed as `predicate.wharf.created`: the manifest's created annotation
   * must equal it, so re-pushing an old verdict with a later date cannot make it the newest.
   */
  created?: Date;
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

const SHA256 = /^sha256:([0-9a-f]{64})$/;

export function buildStatement(input: BuildStatementInput): InTotoStatement {
  const hex = SHA256.exec(input.digest)?.[1];
  if (hex === undefined) throw new Error(`not a sha256 digest: ${input.digest}`);
  return {
    _type: STATEMENT_TYPE,
    subject: [{ name: input.subjectName, digest: { sha256: hex } }],
    predicateType: PREDICATE_TYPE,
    predicate: {
      result: input.result,
      passedTests: [...input.passedTests],
      failedTests: [...input.failedTests],
      warnedTests: [],
      configuration: [{ name: input.policy }],
      ...((input.details !== undefined || input.created !== undefined) && {
        wharf: { ...input.details, ...(input.created && { created: input.created.toISOString() }) },
      }),
    },
  };
}

function isP256(jwk: JWK): boolean {
  return jwk.kty === 'EC' && jwk.crv === 'P-256' && typeof jwk.x === 'string' && typeof jwk.y === 'string';
}

function publicPart(jwk: JWK): JWK {
  return { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y };
}

/** An ES256 private JWK as a signing key; its kid is the JWK's, else its RFC 7638 thumbprint. */
export async function loadSigningKey(jwk: JWK): Promise<SigningKey> {
  if (!isP256(jwk) || typeof jwk.d !== 'string') {
    throw new Error('the signing key must be a private EC P-256 JWK (ES256)');
  }
  if (jwk.alg !== undefined && jwk.alg !== 'ES256')
    throw new Error(`the signing key is for ${jwk.alg}, not ES256`);
  const imported = await importJWK({ ...jwk, ext: true }, 'ES256');
  const privateKey = imported instanceof Uint8Array ? undefined : KeyObject.from(imported);
  if (privateKey?.type !== 'private')
    throw new Error('the signing key must be a private EC P-256 JWK (ES256)');
  const kid = jwk.kid ?? (await calculateJwkThumbprint(publicPart(jwk)));
  return { kid, privateKey, publicJwk: { ...publicPart(jwk), kid, alg: 'ES256', use: 'sig' } };
}

/** A fresh ES256 key; `privateJwk` (with its kid) is what to store. */
export async function generateSigningKey(): Promise<{ privateJwk: JWK; key: SigningKey }> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  const privateJwk: JWK = { ...jwk, kid: await calculateJwkThumbprint(publicPart(jwk)), alg: 'ES256' };
  return { privateJwk, key: await loadSigningKey(privateJwk) };
}

export function publicJwks(keys: readonly SigningKey[]): JSONWebKeySet {
  return { keys: keys.map((k) => ({ ...k.publicJwk })) };
}

/** DSSE's pre-authentication encoding: `DSSEv1 <len(type)> <type> <len(body)> <body>`. */
export function pae(payloadType: string, payload: Buffer): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([
    Buffer.from(`DSSEv1 ${type.length} `, 'utf8'),
    type,
    Buffer.from(` ${payload.length} `, 'utf8'),
    payload,
  ]);
}

export async function signStatement(statement: InTotoStatement, key: SigningKey): Promise<DsseEnvelope> {
  const payload = Buffer.from(JSON.stringify(statement), 'utf8');
  const sig = signBytes('sha256', pae(DSSE_PAYLOAD_TYPE, payload), {
    key: key.privateKey,
    dsaEncoding: 'ieee-p1363',
  });
  return Promise.resolve({
    payloadType: DSSE_PAYLOAD_TYPE,
    payload: payload.toString('base64'),
    signatures: [{ keyid: key.kid, sig: sig.toString('base64') }],
  });
}

// DSSE verifiers must take standard and URL-safe base64, padded or not.
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

function decodeBase64(value: unknown, what: string): Buffer {
  if (typeof value !== 'string' || !BASE64.test(value) || value.replace(/=+$/, '').length % 4 === 1) {
    throw new VerdictError('malformed', `malformed envelope: ${what} is not base64`);
  }
  return Buffer.from(value, 'base64');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

interface TrustedVerifier {
  readonly kid: string | undefined;
  readonly thumbprint: string;
  readonly key: KeyObject;
}

// Importing keys costs more than a verification, and a key set is reused for many (quarantine); key
// sets are treated as immutable: a changed set is a new object (TrustedKeys loads a new one).
const verifierCache = new WeakMap<JSONWebKeySet, Promise<TrustedVerifier[]>>();

function verifiersOf(trusted: JSONWebKeySet): Promise<TrustedVerifier[]> {
  let verifiers = verifierCache.get(trusted);
  if (verifiers === undefined) {
    verifiers = importVerifiers(trusted);
    verifierCache.set(trusted, verifiers);
  }
  return verifiers;
}

async function importVerifiers(trusted: JSONWebKeySet): Promise<TrustedVerifier[]> {
  const out: TrustedVerifier[] = [];
  for (const jwk of Array.isArray(trusted.keys) ? trusted.keys : []) {
    if (!isP256(jwk) || (jwk.alg !== undefined && jwk.alg !== 'ES256')) continue;
    try {
      const imported = await importJWK(publicPart(jwk), 'ES256');
      if (imported instanceof Uint8Array) continue;
      const key = KeyObject.from(imported);
      out.push({ kid: jwk.kid, thumbprint: await calculateJwkThumbprint(publicPart(jwk)), key });
    } catch {
      // A key that does not load cannot vouch for anything; the others still may.
    }
  }
  return out;
}

function parseEnvelope(envelope: unknown): {
  payloadType: string;
  payload: Buffer;
  signatures: { keyid: string | undefined; sig: Buffer }[];
} {
  let doc = envelope;
  if (Buffer.isBuffer(doc) || typeof doc === 'string') {
    try {
      doc = JSON.parse(doc.toString());
    } catch {
      throw new VerdictError('malformed', 'malformed envelope: not JSON');
    }
  }
  if (!isRecord(doc)) throw new VerdictError('malformed', 'malformed envelope: not a JSON object');
  if (typeof doc.payloadType !== 'string')
    throw new VerdictError('malformed', 'malformed envelope: no payloadType');
  if (!Array.isArray(doc.signatures) || doc.signatures.length === 0) {
    throw new VerdictError('malformed', 'malformed envelope: no signatures');
  }
  const payload = decodeBase64(doc.payload, 'payload');
  const signatures = doc.signatures.map((s: unknown, i) => {
    if (!isRecord(s))
      throw new VerdictError('malformed', `malformed envelope: signature ${i} is not an object`);
    if (s.keyid !== undefined && typeof s.keyid !== 'string') {
      throw new VerdictError('malformed', `malformed envelope: signature ${i} has a non-string keyid`);
    }
    return { keyid: s.keyid, sig: decodeBase64(s.sig, `signature ${i}`) };
  });
  return { payloadType: doc.payloadType, payload, signatures };
}

function stringList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

function parseStatement(payload: Buffer): InTotoStatement {
  let doc: unknown;
  try {
    doc = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new VerdictError('malformed', 'malformed statement: the payload is not JSON');
  }
  if (!isRecord(doc)) throw new VerdictError('malformed', 'malformed statement: not a JSON object');
  if (doc._type !== STATEMENT_TYPE) {
    throw new VerdictError(
      'statement-type',
      `wrong statement type ${JSON.stringify(doc._type)}, expected ${STATEMENT_TYPE}`,
    );
  }
  if (doc.predicateType !== PREDICATE_TYPE) {
    throw new VerdictError(
      'predicate-type',
      `wrong predicate type ${JSON.stringify(doc.predicateType)}, expected ${PREDICATE_TYPE}`,
    );
  }
  const subjects = doc.subject;
  if (
    !Array.isArray(subjects) ||
    subjects.length === 0 ||
    !subjects.every((s) => isRecord(s) && typeof s.name === 'string' && isRecord(s.digest))
  ) {
    throw new VerdictError('malformed', 'malformed statement: subject must list names with digests');
  }
  const p = doc.predicate;
  if (!isRecord(p)) throw new VerdictError('malformed', 'malformed statement: no predicate');
  if (p.result !== 'PASSED' && p.result !== 'FAILED') {
    throw new VerdictError(
      'malformed',
      `malformed statement: unsupported result ${JSON.stringify(p.result)}`,
    );
  }
  for (const key of ['passedTests', 'failedTests'] as const) {
    if (p[key] !== undefined && !stringList(p[key])) {
      throw new VerdictError('malformed', `malformed statement: predicate.${key} must be a list of strings`);
    }
  }
  const predicate: TestResultPredicate = {
    ...(p as unknown as TestResultPredicate),
    passedTests: (p.passedTests as string[] | undefined) ?? [],
    failedTests: (p.failedTests as string[] | undefined) ?? [],
    warnedTests: stringList(p.warnedTests) ? p.warnedTests : [],
    configuration: Array.isArray(p.configuration)
      ? (p.configuration as TestResultPredicate['configuration'])
      : [],
  };
  return { ...(doc as unknown as InTotoStatement), predicate };
}

/**
 * Checks a DSSE envelope (object, JSON text or bytes) against trusted ES256 keys and returns its
 * statement. A signature counts when some trusted key verifies it; the keyid only picks which keys to
 * try first (DSSE: it is unauthenticated). Throws VerdictError saying why otherwise.
 */
export async function verifyEnvelope(
  envelope: unknown,
  trusted: JSONWebKeySet,
): Promise<{ statement: InTotoStatement; keyid: string }> {
  const { payloadType, payload, signatures } = parseEnvelope(envelope);
  if (payloadType !== DSSE_PAYLOAD_TYPE) {
    throw new VerdictError(
      'payload-type',
      `wrong payload type ${JSON.stringify(payloadType)}, expected ${DSSE_PAYLOAD_TYPE}`,
    );
  }
  const verifiers = await verifiersOf(trusted);
  const signed = pae(payloadType, payload);
  let knownKey = false;
  let accepted: TrustedVerifier | undefined;
  for (const { keyid, sig } of signatures) {
    const named = verifiers.filter((v) => keyid !== undefined && (v.kid === keyid || v.thumbprint === keyid));
    if (named.length > 0) knownKey = true;
    const order = [...named, ...verifiers.filter((v) => !named.includes(v))];
    accepted = order.find((v) =>
      verifyBytes('sha256', signed, { key: v.key, dsaEncoding: 'ieee-p1363' }, sig),
    );
    if (accepted) break;
  }
  if (!accepted) {
    const ids = signatures.map((s) => s.keyid ?? '(none)').join(', ');
    if (knownKey) throw new VerdictError('bad-signature', `signature does not verify (keyid ${ids})`);
    throw new VerdictError('untrusted-key', `signed by a key that is not trusted (keyid ${ids})`);
  }
  return { statement: parseStatement(payload), keyid: accepted.kid ?? accepted.thumbprint };
}

export interface VerdictManifestInput {
  /** The image manifest the verdict judges. */
  subject: Descriptor;
  /** The envelope blob. */
  envelopeDescriptor: Descriptor;
  result: VerdictResult;
  keyid: string;
  created: Date;
}

/** The verdict's OCI artifact manifest bytes: empty config, the envelope as its one layer, the subject. */
export function verdictManifest(input: VerdictManifestInput): Buffer {
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST_MEDIA_TYPE,
    artifactType: VERDICT_ARTIFACT_TYPE,
    config: EMPTY_DESCRIPTOR,
    layers: [
      {
        mediaType: DSSE_MEDIA_TYPE,
        digest: input.envelopeDescriptor.digest,
        size: input.envelopeDescriptor.size,
      },
    ],
    subject: { mediaType: input.subject.mediaType, digest: input.subject.digest, size: input.subject.size },
    annotations: {
      [ANNOTATION_PREDICATE]: PREDICATE_TYPE,
      [ANNOTATION_RESULT]: input.result,
      [ANNOTATION_KEYID]: input.keyid,
      [ANNOTATION_CREATED]: input.created.toISOString(),
    },
  };
  return Buffer.from(JSON.stringify(manifest), 'utf8');
}

/** The envelope as stored in the registry. */
export function envelopeBytes(envelope: DsseEnvelope): Buffer {
  return Buffer.from(JSON.stringify(envelope), 'utf8');
}

/**
 * Pushes a verdict as a referrer of `subject` in `repo`: the empty config and the envelope blob, then
 * the manifest by digest (untagged). Returns the verdict manifest's digest.
 */
export async function pushVerdict(
  client: RegistryClient,
  repo: string,
  subject: Descriptor,
  envelope: DsseEnvelope,
  result: VerdictResult,
  keyid: string,
  opts: { created?: Date } = {},
): Promise<string> {
  const body = envelopeBytes(envelope);
  const envelopeDescriptor: Descriptor = {
    mediaType: DSSE_MEDIA_TYPE,
    digest: sha256(body),
    size: body.length,
  };
  if (!(await client.blobExists(repo, EMPTY_DESCRIPTOR.digest))) {
    await client.pushBlob(repo, EMPTY_CONTENT, EMPTY_DESCRIPTOR.digest);
  }
  await client.pushBlob(repo, body, envelopeDescriptor.digest);
  const manifest = verdictManifest({
    subject,
    envelopeDescriptor,
    result,
    keyid,
    created: opts.created ?? new Date(),
  });
  return client.putManifest(repo, sha256(manifest), manifest, OCI_MANIFEST_MEDIA_TYPE);
}

/** A verdict listed by the referrers API, as its annotations describe it. */
export interface FoundVerdict {
  /** The verdict manifest's digest. */
  readonly digest: string;
  readonly descriptor: Descriptor;
  readonly annotations: Record<string, string>;
  /** ANNOTATION_RESULT, unverified. */
  readonly result: string | undefined;
  readonly keyid: string | undefined;
  readonly created: Date | undefined;
  /** With `trusted`: the signed statement, or why it was not accepted. */
  readonly verification?:
    | { readonly ok: true; readonly statement: InTotoStatement; readonly keyid: string }
    | { readonly ok: false; readonly error: VerdictError };
}

/** The verdicts listed for `digest`, newest first (by their created annotation). */
export async function findVerdicts(
  client: RegistryClient,
  repo: string,
  digest: string,
  trusted?: JSONWebKeySet,
): Promise<FoundVerdict[]> {
  const index = await client.referrers(repo, digest, VERDICT_ARTIFACT_TYPE);
  const found = sortNewestFirst(
    index.manifests.filter((d) => d.artifactType === VERDICT_ARTIFACT_TYPE).map(describeVerdict),
  );
  if (trusted === undefined) return found;
  return Promise.all(
    found.map(async (v): Promise<FoundVerdict> => {
      try {
        const envelope = await readEnvelope(
          (d) => client.getManifest(repo, d, [OCI_MANIFEST_MEDIA_TYPE]).then((m) => m.bytes),
          (d) => client.getBlob(repo, d, ENVELOPE_MAX_SIZE),
          v.digest,
        );
        return { ...v, verification: { ok: true, ...(await verifyEnvelope(envelope, trusted)) } };
      } catch (err) {
        if (!(err instanceof VerdictError)) throw err;
        return { ...v, verification: { ok: false, error: err } };
      }
    }),
  );
}

export function describeVerdict(descriptor: Descriptor): FoundVerdict {
  const annotations = descriptor.annotations ?? {};
  const createdText = annotations[ANNOTATION_CREATED];
  const created = createdText !== undefined ? new Date(createdText) : undefined;
  return {
    digest: descriptor.digest,
    descriptor,
    annotations,
    result: annotations[ANNOTATION_RESULT],
    keyid: annotations[ANNOTATION_KEYID],
    created: created !== undefined && !Number.isNaN(created.getTime()) ? created : undefined,
  };
}

/** Newest first; undated ones last; on a tie FAILED first, so a tie never lets an image through. */
export function sortNewestFirst(verdicts: FoundVerdict[]): FoundVerdict[] {
  const time = (v: FoundVerdict) => v.created?.getTime() ?? Number.NEGATIVE_INFINITY;
  return [...verdicts].sort(
    (a, b) =>
      time(b) - time(a) ||
      Number(b.result === 'FAILED') - Number(a.result === 'FAILED') ||
      (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0),
  );
}

/**
 * Reads a verdict manifest and its envelope blob through the given readers (HTTP client or registry
 * core). Throws VerdictError('malformed') when the manifest is not a verdict.
 */
export async function readEnvelope(
  readManifest: (digest: string) => Promise<Buffer>,
  readBlob: (digest: string) => Promise<Buffer>,
  verdictDigest: string,
): Promise<Buffer> {
  let manifest: unknown;
  try {
    manifest = JSON.parse((await readManifest(verdictDigest)).toString('utf8'));
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    throw new VerdictError('malformed', `verdict manifest ${verdictDigest} is not JSON`);
  }
  const layers = isRecord(manifest) ? manifest.layers : undefined;
  const layer = Array.isArray(layers)
    ? (layers as unknown[]).find((l): l is Descriptor => isRecord(l) && l.mediaType === DSSE_MEDIA_TYPE)
    : undefined;
  if (layer === undefined || typeof layer.digest !== 'string') {
    throw new VerdictError('malformed', `verdict manifest ${verdictDigest} has no DSSE envelope layer`);
  }
  if (typeof layer.size !== 'number' || layer.size > ENVELOPE_MAX_SIZE) {
    throw new VerdictError(
      'malformed',
      `verdict envelope ${layer.digest} is larger than ${ENVELOPE_MAX_SIZE} bytes`,
    );
  }
  return readBlob(layer.digest);
}
