// One manifest from event to verdict: skip what is not an image or already judged by this agent's
// key, run the image (each linux/amd64 child of an index), sign the result and push it as a referrer.
import type { Logger } from 'pino';
import { RegistryError, type RegistryClient } from '../client/registry-client.js';
import {
  buildStatement,
  findVerdicts,
  publicJwks,
  pushVerdict,
  signStatement,
  type Descriptor,
  type SigningKey,
  type VerdictResult,
} from '../verify/verdict.js';
import { IMAGE_MANIFEST_TYPES, INDEX_TYPES } from './events.js';
import { jobKey } from './journal.js';
import { judge, type Judgement, type PolicySet } from './policy.js';
import type { FailureKind, Semaphore } from './queue.js';
import {
  EngineUnavailableError,
  isEngineUnavailable,
  PullError,
  RunAbortedError,
  type RunRequest,
  type RunResult,
} from './runner.js';

/** The part of DockerRunner the verifier uses (tests give a fake). */
export interface Runner {
  run(req: RunRequest): Promise<RunResult>;
}

export interface VerifierOptions {
  client: RegistryClient;
  runner: Runner;
  key: SigningKey;
  policies: PolicySet;
  /** host[:port] the engine pulls from. */
  registryName: string;
  /** Bounds container runs (pull, run, remove) across all jobs: `agent.concurrency`. */
  runs: Semaphore;
  /** Labels every container carries, to find leftovers of this agent. */
  labels: Record<string, string>;
  logger: Logger;
}

export type VerifyOutcome =
  | { status: 'verdict'; result: VerdictResult; verdict: string; existing: boolean }
  | { status: 'skipped'; reason: string };

const IMAGE_CONFIG_TYPES = new Set([
  'application/vnd.oci.image.config.v1+json',
  'application/vnd.docker.container.image.v1+json',
]);
/** The part of the verdict that quotes the container's output: its end, where errors are. */
const OUTPUT_TAIL = 2048;

interface ManifestDoc {
  mediaType?: string;
  artifactType?: string;
  config?: { mediaType?: string };
  manifests?: Descriptor[];
}

/** Not an image: an artifact (a verdict, a signature, an SBOM), or something without an image config. */
function artifactReason(doc: ManifestDoc, mediaType: string): string | undefined {
  if (doc.artifactType !== undefined) return `artifact ${doc.artifactType}`;
  if (IMAGE_MANIFEST_TYPES.has(mediaType) && !IMAGE_CONFIG_TYPES.has(doc.config?.mediaType ?? '')) {
    return `artifact with config ${doc.config?.mediaType ?? '(none)'}`;
  }
  if (!IMAGE_MANIFEST_TYPES.has(mediaType) && !INDEX_TYPES.has(mediaType)) return `media type ${mediaType}`;
  return undefined;
}

/** How the queue treats an error from verify(). */
export function classifyFailure(err: unknown): FailureKind {
  if (err instanceof EngineUnavailableError || isEngineUnavailable(err)) return 'transient';
  if (err instanceof RunAbortedError) return 'transient';
  if (err instanceof RegistryError) {
    if (err.status === 404) return 'permanent';
    // Down, overloaded, or our credentials not (yet) accepted: an operator can fix each.
    if (err.status >= 500 || [401, 403, 408, 429].includes(err.status)) return 'transient';
    return 'permanent';
  }
  // fetch() rejects with a TypeError when the registry cannot be reached at all.
  if (err instanceof TypeError && /fetch failed/.test(err.message)) return 'transient';
  return 'unknown';
}

export class Verifier {
  private readonly opts: VerifierOptions;
  private readonly inflight = new Map<string, Promise<VerifyOutcome>>();
  private readonly trusted;

  constructor(opts: VerifierOptions) {
    this.opts = opts;
    this.trusted = publicJwks([opts.key]);
  }

  /** Verifies repo@digest once: a second call while the first runs shares its result. */
  verify(repository: string, digest: string): Promise<VerifyOutcome> {
    const key = jobKey({ repository, digest });
    const running = this.inflight.get(key);
    if (running) return running;
    const work = this.verifyOnce(repository, digest).finally(() => this.inflight.delete(key));
    this.inflight.set(key, work);
    return work;
  }

  private async verifyOnce(repository: string, digest: string): Promise<VerifyOutcome> {
    const { client, logger } = this.opts;
    const log = logger.child({ repository, digest });
    const manifest = await client.getManifest(repository, digest);
    let doc: ManifestDoc;
    try {
      doc = JSON.parse(manifest.bytes.toString('utf8')) as ManifestDoc;
    } catch {
      log.warn('manifest is not JSON, not verified');
      return { status: 'skipped', reason: 'manifest is not JSON' };
    }
    const skip = artifactReason(doc, manifest.mediaType);
    if (skip !== undefined) {
      log.debug({ reason: skip }, 'not an image, not verified');
      return { status: 'skipped', reason: skip };
    }
    const existing = await this.existingVerdict(repository, digest);
    if (existing !== undefined) {
      log.info({ verdict: existing.verdict, result: existing.result }, 'already verified by this agent');
      return existing;
    }
    const subject: Descriptor = { mediaType: manifest.mediaType, digest, size: manifest.bytes.length };
    const judged = INDEX_TYPES.has(manifest.mediaType)
      ? await this.judgeIndex(repository, doc.manifests ?? [], log)
      : await this.judgeImage(repository, digest, log);
    const created = new Date();
    const statement = buildStatement({
      created,
      subjectName: `${this.opts.registryName}/${repository}`,
      digest,
      result: judged.passed ? 'PASSED' : 'FAILED',
      passedTests: judged.passedTests,
      failedTests: judged.failedTests,
      policy: judged.policy,
      details: judged.details,
    });
    const result: VerdictResult = judged.passed ? 'PASSED' : 'FAILED';
    const envelope = await signStatement(statement, this.opts.key);
    const verdict = await pushVerdict(client, repository, subject, envelope, result, this.opts.key.kid, {
      created,
    });
    log.info({ result, reason: judged.details.reason, verdict, policy: judged.policy }, 'verdict pushed');
    return { status: 'verdict', result, verdict, existing: false };
  }

  /** A verdict this agent's key signed for the digest, so a re-delivered event is not run again. */
  private async existingVerdict(
    repository: string,
    digest: string,
  ): Promise<Extract<VerifyOutcome, { status: 'verdict' }> | undefined> {
    const found = await findVerdicts(this.opts.client, repository, digest, this.trusted);
    const ours = found.find((v) => v.verification?.ok === true);
    if (ours === undefined) return undefined;
    const result = ours.verification?.ok === true ? ours.verification.statement.predicate.result : 'FAILED';
    return { status: 'verdict', result, verdict: ours.digest, existing: true };
  }

  private async judgeImage(
    repository: string,
    digest: string,
    log: Logger,
  ): Promise<Judgement & { policy: string; details: Record<string, unknown> & { reason: string } }> {
    const policy = this.opts.policies.for(repository);
    const ref = `${this.opts.registryName}/${repository}@${digest}`;
    log.info({ policy: policy.name, ref }, 'running image');
    let run: RunResult;
    try {
      run = await this.opts.runs.use(() =>
        this.opts.runner.run({
          ref,
          policy,
          labels: { ...this.opts.labels, 'dev.wharf.agent.subject': `${repository}@${digest}` },
        }),
      );
    } catch (err) {
      if (!(err instanceof PullError)) throw err;
      // The engine works but cannot get the image: that is a finding about the image, recorded.
      log.warn({ err }, 'pull failed');
      return {
        passed: false,
        passedTests: [],
        failedTests: ['pull'],
        reason: err.message,
        policy: policy.name,
        details: { reason: err.message, image: ref },
      };
    }
    const judged = judge(policy, run.outcome, run.healthcheck);
    const { outcome } = run;
    return {
      ...judged,
      policy: policy.name,
      details: {
        reason: judged.reason,
        image: ref,
        outcome: outcome.kind,
        durationMs: outcome.durationMs,
        ...(outcome.kind === 'exited' && { exitCode: outcome.exitCode, oomKilled: outcome.oomKilled }),
        ...((outcome.kind === 'running' || outcome.kind === 'timeout') &&
          outcome.health !== undefined && { health: outcome.health }),
        healthcheck: run.healthcheck,
        limits: policy.limits,
        output: outcome.output.slice(-OUTPUT_TAIL),
      },
    };
  }

  /** PASSED only when the index has linux/amd64 images and every one of them passed. */
  private async judgeIndex(
    repository: string,
    children: Descriptor[],
    log: Logger,
  ): Promise<Judgement & { policy: string; details: Record<string, unknown> & { reason: string } }> {
    const amd64 = children.filter((c) => c.platform?.os === 'linux' && c.platform.architecture === 'amd64');
    const policy = this.opts.policies.for(repository).name;
    if (amd64.length === 0) {
      const reason = 'the index has no linux/amd64 image';
      log.warn(reason);
      return {
        passed: false,
        passedTests: [],
        failedTests: ['linux/amd64'],
        reason,
        policy,
        details: { reason },
      };
    }
    log.info({ children: amd64.length }, 'verifying index children');
    const outcomes = await Promise.all(amd64.map((c) => this.verify(repository, c.digest)));
    const passedTests: string[] = [];
    const failedTests: string[] = [];
    const results: Record<string, string> = {};
    for (const [i, child] of amd64.entries()) {
      const outcome = outcomes[i];
      const result =
        outcome?.status === 'verdict' ? outcome.result : `not verified: ${outcome?.reason ?? ''}`;
      results[child.digest] = result;
      (result === 'PASSED' ? passedTests : failedTests).push(`linux/amd64@${child.digest}`);
    }
    const passed = failedTests.length === 0;
    const reason = passed
      ? `all ${passedTests.length} linux/amd64 images passed`
      : `${failedTests.length} of ${amd64.length} linux/amd64 images did not pass`;
    return { passed, passedTests, failedTests, reason, policy, details: { reason, children: results } };
  }
}
