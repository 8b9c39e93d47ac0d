// Whether an image has a passing verdict: the one rule that `wharf promote --require-verified` (over
// HTTP) and the server's quarantine (on the registry core) both apply.
import type { JSONWebKeySet } from 'jose';
import type { Descriptor } from '../client/registry-client.js';
import {
  describeVerdict,
  readEnvelope,
  sortNewestFirst,
  VERDICT_ARTIFACT_TYPE,
  VerdictError,
  verifyEnvelope,
  type FoundVerdict,
} from './verdict.js';

/** Where verdicts are read from: one repository, over HTTP or in-process. */
export interface VerdictSource {
  /** The verdict referrers of `digest` (artifactType VERDICT_ARTIFACT_TYPE). */
  referrers(digest: string): Promise<Descriptor[]>;
  /** Manifest bytes by digest; a missing one throws VerdictError('malformed'). */
  manifest(digest: string): Promise<Buffer>;
  /** A small blob by digest; a missing one throws VerdictError('malformed'). */
  blob(digest: string): Promise<Buffer>;
}

/** The trusted keys; `refresh` (when they come from a URL) refetches them after an unknown key. */
export interface KeyProvider {
  get(): Promise<JSONWebKeySet>;
  refresh?(): Promise<JSONWebKeySet | undefined>;
}

export const staticKeys = (jwks: JSONWebKeySet): KeyProvider => ({ get: () => Promise.resolve(jwks) });

/** Why an image is not verified; each maps to one exit code of `wharf promote`. */
export type RefusalReason = 'no-verdict' | 'failed' | 'untrusted' | 'subject-mismatch' | 'invalid';

export type Decision =
  | {
      readonly passed: true;
      /** The image (or index) digest. */
      readonly digest: string;
      /** The deciding verdict manifests (one per index child when the index has none itself). */
      readonly verdicts: readonly string[];
      readonly keyid: string;
    }
  | {
      readonly passed: false;
      readonly digest: string;
      readonly reason: RefusalReason;
      /** One line saying why, e.g. `verdict FAILED (failed tests: exit-code)`. */
      readonly message: string;
      /** The verdict manifest that decided, if one did. */
      readonly verdict?: string;
      readonly failedTests?: readonly string[];
    };

type Outcome =
  | { readonly valid: true; readonly passed: boolean; readonly failedTests: string[]; readonly keyid: string }
  | {
      readonly valid: false;
      readonly reason: Exclude<RefusalReason, 'no-verdict' | 'failed'>;
      readonly message: string;
    };

/** The message of a plain `no-verdict` refusal. */
export const NO_VERDICT = 'no verification verdict';

const SHA256 = /^sha256:([0-9a-f]{64})$/;

/** Checks one verdict against the subject and the trusted keys. */
async function check(
  source: VerdictSource,
  subject: string,
  found: FoundVerdict,
  keys: KeyProvider,
): Promise<Outcome> {
  let verified;
  try {
    const envelope = await readEnvelope(
      (d) => source.manifest(d),
      (d) => source.blob(d),
      found.digest,
    );
    try {
      verified = await verifyEnvelope(envelope, await keys.get());
    } catch (err) {
      // A key the agent rotated in after the keys were fetched: look again, once.
      const fresh = err instanceof VerdictError && err.reason === 'untrusted-key' && (await keys.refresh?.());
      if (!fresh) throw err;
      verified = await verifyEnvelope(envelope, fresh);
    }
  } catch (err) {
    if (!(err instanceof VerdictError)) throw err;
    if (err.reason === 'untrusted-key' || err.reason === 'bad-signature') {
      return {
        valid: false,
        reason: 'untrusted',
        message: `verdict signature does not verify with the trusted keys: ${err.message}`,
      };
    }
    return { valid: false, reason: 'invalid', message: `verdict is invalid: ${err.message}` };
  }
  const { statement, keyid } = verified;
  const hex = SHA256.exec(subject)?.[1];
  const subjects = statement.subject.map((s) => s.digest.sha256);
  if (hex === undefined || !subjects.includes(hex)) {
    const named = subjects.map((h) => `sha256:${String(h)}`).join(', ');
    return {
      valid: false,
      reason: 'subject-mismatch',
      message: `verdict subject digest ${named} does not match ${subject}`,
    };
  }
  // The created annotation orders verdicts; where the statement signs the time, the two must agree.
  const signedCreated = statement.predicate.wharf?.created;
  if (typeof signedCreated === 'string' && Date.parse(signedCreated) !== found.created?.getTime()) {
    return {
      valid: false,
      reason: 'invalid',
      message: `verdict is invalid: its created annotation does not match the signed time ${signedCreated}`,
    };
  }
  const { result, failedTests } = statement.predicate;
  // The annotation is unsigned: a signed FAILED counts whatever it says, a signed PASSED only if it agrees.
  if (result === 'PASSED' && found.result !== 'PASSED') {
    return {
      valid: false,
      reason: 'invalid',
      message: `verdict is invalid: its annotation says ${String(found.result)} but the signed result is PASSED`,
    };
  }
  return { valid: true, passed: result === 'PASSED', failedTests, keyid };
}

/**
 * The newest valid verdict of `digest` decides: PASSED lets the image through, FAILED refuses it, so
 * a FAILED verdict newer than a PASSED one wins. Invalid verdicts (untrusted key, wrong subject,
 * malformed) are skipped; when no valid one exists, the newest invalid one says why.
 */
export async function decide(source: VerdictSource, digest: string, keys: KeyProvider): Promise<Decision> {
  const found = sortNewestFirst(
    (await source.referrers(digest))
      .filter((d) => d.artifactType === VERDICT_ARTIFACT_TYPE)
      .map(describeVerdict),
  );
  let firstProblem: { verdict: string; reason: RefusalReason; message: string } | undefined;
  for (const verdict of found) {
    const outcome = await check(source, digest, verdict, keys);
    if (!outcome.valid) {
      firstProblem ??= { verdict: verdict.digest, reason: outcome.reason, message: outcome.message };
      continue;
    }
    if (outcome.passed) return { passed: true, digest, verdicts: [verdict.digest], keyid: outcome.keyid };
    const tests = outcome.failedTests.length > 0 ? outcome.failedTests.join(', ') : 'none listed';
    return {
      passed: false,
      digest,
      reason: 'failed',
      message: `verdict FAILED (failed tests: ${tests})`,
      verdict: verdict.digest,
      failedTests: outcome.failedTests,
    };
  }
  if (firstProblem) return { passed: false, digest, ...firstProblem };
  return { passed: false, digest, reason: 'no-verdict', message: NO_VERDICT };
}

const INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);

/** The children of an index the agent runs (linux/amd64, or without a platform); undefined for an image. */
export function runnableChildren(manifest: Buffer): Descriptor[] | undefined {
  let doc: { mediaType?: unknown; manifests?: unknown };
  try {
    doc = JSON.parse(manifest.toString('utf8')) as typeof doc;
  } catch {
    return undefined;
  }
  const isIndex =
    typeof doc.mediaType === 'string' ? INDEX_TYPES.has(doc.mediaType) : Array.isArray(doc.manifests);
  if (!isIndex || !Array.isArray(doc.manifests)) return undefined;
  return (doc.manifests as Descriptor[]).filter(
    (d) =>
      typeof d.digest === 'string' &&
      (d.platform === undefined || (d.platform.os === 'linux' && d.platform.architecture === 'amd64')),
  );
}

/**
 * `decide` for an image or an index. An index with no verdict of its own passes when every runnable
 * child (linux/amd64: what the agent verifies) has a passing verdict, and at least one exists.
 */
export async function decideImage(
  source: VerdictSource,
  digest: string,
  manifest: Buffer,
  keys: KeyProvider,
): Promise<Decision> {
  const own = await decide(source, digest, keys);
  if (own.passed || own.reason !== 'no-verdict') return own;
  const children = runnableChildren(manifest);
  if (children === undefined) return own;
  if (children.length === 0) {
    return { ...own, message: `${NO_VERDICT} (and no linux/amd64 image in the index)` };
  }
  const verdicts: string[] = [];
  let keyid = '';
  for (const child of children) {
    const d = await decide(source, child.digest, keys);
    if (!d.passed) return { ...d, digest, message: `index child ${child.digest}: ${d.message}` };
    verdicts.push(...d.verdicts);
    keyid = d.keyid;
  }
  return { passed: true, digest, verdicts, keyid };
}
