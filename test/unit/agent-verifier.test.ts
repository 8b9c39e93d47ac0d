// The verifier and the assembled agent against an in-process Wharf (in-memory storage), with the
// Docker engine faked: verdicts, dedup, indexes, artifacts, failures, and the journal across restarts.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { parseAgentConfig } from '../../config/agent-schema.js';
import { startAgent } from '../../src/agent/agent.js';
import { PolicySet } from '../../src/agent/policy.js';
import { Semaphore } from '../../src/agent/queue.js';
import {
  EngineUnavailableError,
  PullError,
  type RunOutcome,
  type RunRequest,
  type RunResult,
} from '../../src/agent/runner.js';
import { classifyFailure, Verifier, type Runner } from '../../src/agent/verifier.js';
import { RegistryClient } from '../../src/client/registry-client.js';
import {
  findVerdicts,
  generateSigningKey,
  publicJwks,
  pushVerdict,
  buildStatement,
  signStatement,
  type SigningKey,
} from '../../src/verify/verdict.js';
import { createTestApp } from '../helpers/app.js';
import {
  artifactManifest,
  configBlob,
  descriptorOf,
  EMPTY_JSON,
  MT,
  ociIndex,
  ociManifest,
  randomBlob,
  type Manifest,
} from '../helpers/oci.js';

const silent = pino({ level: 'silent' });
const REGISTRY_NAME = 'registry.test:5000';

/** Answers from a table keyed by image digest; records every run. */
class FakeRunner implements Runner {
  readonly runs: RunRequest[] = [];
  readonly behaviour = new Map<string, RunOutcome | Error>();
  delayMs = 0;
  ping() {
    return Promise.resolve();
  }
  async run(req: RunRequest): Promise<RunResult> {
    this.runs.push(req);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const digest = req.ref.slice(req.ref.indexOf('@') + 1);
    const b = this.behaviour.get(digest) ?? {
      kind: 'exited',
      exitCode: 0,
      output: 'ok\n',
      durationMs: 5,
      oomKilled: false,
    };
    if (b instanceof Error) throw b;
    return { outcome: b, healthcheck: false };
  }
}

void describe('agent verifier against an in-process registry', () => {
  let url = '';
  let close: () => Promise<void> = () => Promise.resolve();
  let client: RegistryClient;
  let key: SigningKey;

  before(async () => {
    const { server } = await createTestApp();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    close = () =>
      new Promise((resolve) => {
        server.close(() => {
          resolve();
        });
      });
    client = new RegistryClient({ url });
    key = (await generateSigningKey()).key;
  });
  after(() => close());

  async function pushImage(repo: string, tag = 'v1'): Promise<Manifest> {
    const config = configBlob();
    const layer = randomBlob(256);
    await client.pushBlob(repo, config, descriptorOf(MT.ociConfig, config).digest);
    await client.pushBlob(repo, layer, descriptorOf(MT.ociLayer, layer).digest);
    const manifest = ociManifest({
      config: descriptorOf(MT.ociConfig, config),
      layers: [descriptorOf(MT.ociLayer, layer)],
    });
    await client.putManifest(repo, tag, manifest.bytes, manifest.mediaType);
    return manifest;
  }

  function verifier(runner: Runner, k: SigningKey = key) {
    return new Verifier({
      client,
      runner,
      key: k,
      policies: new PolicySet([]),
      registryName: REGISTRY_NAME,
      runs: new Semaphore(2),
      labels: { 'dev.wharf.agent': 'true' },
      logger: silent,
    });
  }

  test('an image: run once by digest, PASSED verdict signed by the key, found again instead of rerun', async () => {
    const runner = new FakeRunner();
    const v = verifier(runner);
    const image = await pushImage('team/good');
    const first = await v.verify('team/good', image.digest);
    assert.deepEqual(
      { ...first, verdict: undefined },
      { status: 'verdict', result: 'PASSED', verdict: undefined, existing: false },
    );
    assert.equal(runner.runs.length, 1);
    const [run] = runner.runs;
    assert.ok(run);
    assert.equal(run.ref, `${REGISTRY_NAME}/team/good@${image.digest}`);
    assert.equal(run.labels['dev.wharf.agent.subject'], `team/good@${image.digest}`);
    const found = await findVerdicts(client, 'team/good', image.digest, publicJwks([key]));
    assert.equal(found.length, 1);
    const ok = found[0]?.verification;
    assert.ok(ok?.ok === true);
    assert.equal(ok.statement.subject[0]?.name, `${REGISTRY_NAME}/team/good`);
    assert.equal((ok.statement.predicate.wharf as { output: string }).output, 'ok\n');

    const again = await v.verify('team/good', image.digest);
    assert.equal(again.status === 'verdict' && again.existing, true);
    assert.equal(runner.runs.length, 1, 'not run again');
    assert.equal((await findVerdicts(client, 'team/good', image.digest)).length, 1);
  });

  test('the same digest asked for twice at once: one run, one verdict', async () => {
    const runner = new FakeRunner();
    runner.delayMs = 50;
    const v = verifier(runner);
    const image = await pushImage('team/twice');
    const [a, b] = await Promise.all([
      v.verify('team/twice', image.digest),
      v.verify('team/twice', image.digest),
    ]);
    assert.deepEqual(a, b);
    assert.equal(runner.runs.length, 1);
    assert.equal((await findVerdicts(client, 'team/twice', image.digest)).length, 1);
  });

  test('a verdict by another key does not stop this agent from verifying', async () => {
    const other = (await generateSigningKey()).key;
    const image = await pushImage('team/other-key');
    const subject = { mediaType: image.mediaType, digest: image.digest, size: image.bytes.length };
    const statement = buildStatement({
      subjectName: 'x',
      digest: image.digest,
      result: 'PASSED',
      passedTests: [],
      failedTests: [],
      policy: 'p',
    });
    await pushVerdict(
      client,
      'team/other-key',
      subject,
      await signStatement(statement, other),
      'PASSED',
      other.kid,
    );
    const runner = new FakeRunner();
    await verifier(runner).verify('team/other-key', image.digest);
    assert.equal(runner.runs.length, 1);
    assert.equal((await findVerdicts(client, 'team/other-key', image.digest)).length, 2);
  });

  test('exit 1: FAILED with the exit code in the details', async () => {
    const runner = new FakeRunner();
    const image = await pushImage('team/bad');
    runner.behaviour.set(image.digest, {
      kind: 'exited',
      exitCode: 1,
      output: 'oops',
      durationMs: 3,
      oomKilled: false,
    });
    const out = await verifier(runner).verify('team/bad', image.digest);
    assert.equal(out.status === 'verdict' && out.result, 'FAILED');
    const [found] = await findVerdicts(client, 'team/bad', image.digest, publicJwks([key]));
    assert.ok(found?.verification?.ok === true);
    const { predicate } = found.verification.statement;
    assert.deepEqual(predicate.failedTests, ['exitcode']);
    assert.equal((predicate.wharf as { exitCode: number }).exitCode, 1);
    assert.equal(found.result, 'FAILED', 'the annotation says it too');
  });

  test('a pull the engine refuses: FAILED verdict naming the pull', async () => {
    const runner = new FakeRunner();
    const image = await pushImage('team/nopull');
    runner.behaviour.set(image.digest, new PullError('pull x: manifest unknown'));
    await verifier(runner).verify('team/nopull', image.digest);
    const [found] = await findVerdicts(client, 'team/nopull', image.digest, publicJwks([key]));
    assert.ok(found?.verification?.ok === true);
    assert.deepEqual(found.verification.statement.predicate.failedTests, ['pull']);
    assert.equal(found.result, 'FAILED');
  });

  test('the engine down: no verdict, a transient failure for the queue to retry', async () => {
    const runner = new FakeRunner();
    const image = await pushImage('team/down');
    runner.behaviour.set(
      image.digest,
      new EngineUnavailableError('docker engine unreachable: connect ENOENT'),
    );
    const err = await verifier(runner)
      .verify('team/down', image.digest)
      .catch((e: unknown) => e);
    assert.ok(err instanceof EngineUnavailableError);
    assert.equal(classifyFailure(err), 'transient');
    assert.equal((await findVerdicts(client, 'team/down', image.digest)).length, 0);
  });

  test('a manifest the registry does not have: a permanent failure', async () => {
    const err = await verifier(new FakeRunner())
      .verify('team/none', `sha256:${'0'.repeat(64)}`)
      .catch((e: unknown) => e);
    assert.equal(classifyFailure(err), 'permanent');
  });

  test('artifacts (a verdict, an SBOM) are not run', async () => {
    const runner = new FakeRunner();
    const v = verifier(runner);
    const image = await pushImage('team/art');
    const done = await v.verify('team/art', image.digest);
    assert.ok(done.status === 'verdict');
    const onVerdict = await v.verify('team/art', done.verdict);
    assert.deepEqual(onVerdict, { status: 'skipped', reason: 'artifact application/vnd.in-toto+json' });
    await client.pushBlob('team/art', EMPTY_JSON, descriptorOf(MT.ociEmpty, EMPTY_JSON).digest);
    const sbom = artifactManifest({ artifactType: 'application/spdx+json' });
    await client.putManifest('team/art', sbom.digest, sbom.bytes, sbom.mediaType);
    assert.equal((await v.verify('team/art', sbom.digest)).status, 'skipped');
    assert.equal(runner.runs.length, 1);
  });

  test('an index: linux/amd64 children run and get verdicts; the index PASSED only if all passed', async () => {
    const runner = new FakeRunner();
    const v = verifier(runner);
    const amd = await pushImage('team/multi', 'amd64');
    const amd2 = await pushImage('team/multi', 'amd64-v2');
    const arm = await pushImage('team/multi', 'arm64');
    const platform = (architecture: string, os = 'linux') => ({ architecture, os });
    const index = ociIndex({
      manifests: [
        { ...amd.descriptor, platform: platform('amd64') },
        { ...arm.descriptor, platform: platform('arm64') },
        { ...amd2.descriptor, platform: platform('unknown', 'unknown') },
      ],
    });
    await client.putManifest('team/multi', '1', index.bytes, index.mediaType);
    const out = await v.verify('team/multi', index.digest);
    assert.equal(out.status === 'verdict' && out.result, 'PASSED');
    assert.deepEqual(
      runner.runs.map((r) => r.ref),
      [`${REGISTRY_NAME}/team/multi@${amd.digest}`],
    );
    assert.equal((await findVerdicts(client, 'team/multi', amd.digest)).length, 1);
    assert.equal((await findVerdicts(client, 'team/multi', arm.digest)).length, 0);
    const [iv] = await findVerdicts(client, 'team/multi', index.digest, publicJwks([key]));
    assert.ok(iv?.verification?.ok === true);
    assert.deepEqual(iv.verification.statement.predicate.passedTests, [`linux/amd64@${amd.digest}`]);

    // One failing amd64 child fails the index; the child that already has a verdict is not rerun.
    const bad = await pushImage('team/multi', 'bad');
    runner.behaviour.set(bad.digest, {
      kind: 'exited',
      exitCode: 2,
      output: '',
      durationMs: 1,
      oomKilled: false,
    });
    const index2 = ociIndex({
      manifests: [
        { ...amd.descriptor, platform: platform('amd64') },
        { ...bad.descriptor, platform: platform('amd64') },
      ],
    });
    await client.putManifest('team/multi', '2', index2.bytes, index2.mediaType);
    const out2 = await v.verify('team/multi', index2.digest);
    assert.equal(out2.status === 'verdict' && out2.result, 'FAILED');
    assert.equal(runner.runs.length, 2);
  });

  test('an index without linux/amd64: FAILED, nothing run', async () => {
    const runner = new FakeRunner();
    const arm = await pushImage('team/armonly', 'arm64');
    const index = ociIndex({
      manifests: [{ ...arm.descriptor, platform: { architecture: 'arm64', os: 'linux' } }],
    });
    await client.putManifest('team/armonly', '1', index.bytes, index.mediaType);
    const out = await verifier(runner).verify('team/armonly', index.digest);
    assert.equal(out.status === 'verdict' && out.result, 'FAILED');
    assert.equal(runner.runs.length, 0);
  });

  test('the assembled agent: event → 202 → verdict; a job accepted before a shutdown is replayed at start', async () => {
    const statedir = await mkdtemp(join(tmpdir(), 'wharf-agent-unit-'));
    try {
      const config = parseAgentConfig({
        log: { level: 'error' },
        agent: { listen: '127.0.0.1:0', registry: { url }, statedir, token: 'tok' },
      });
      const image = await pushImage('team/replay');
      const down = new FakeRunner();
      down.behaviour.set(image.digest, new EngineUnavailableError('docker engine unreachable'));
      const first = await startAgent(config, silent, { runner: down });
      const event = {
        events: [
          {
            action: 'push',
            target: { mediaType: image.mediaType, digest: image.digest, repository: 'team/replay' },
          },
        ],
      };
      const res = await fetch(`${first.url}/events`, {
        method: 'POST',
        headers: { Authorization: 'Bearer tok' },
        body: JSON.stringify(event),
      });
      assert.equal(res.status, 202);
      for (let i = 0; i < 100 && down.runs.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(down.runs.length > 0);
      await first.close();

      const up = new FakeRunner();
      const second = await startAgent(config, silent, { runner: up });
      try {
        assert.equal(second.key.kid, first.key.kid, 'the key is kept in the state dir');
        for (
          let i = 0;
          i < 200 && (await findVerdicts(client, 'team/replay', image.digest)).length === 0;
          i++
        ) {
          await new Promise((r) => setTimeout(r, 10));
        }
        assert.equal(up.runs.length, 1);
        assert.equal((await findVerdicts(client, 'team/replay', image.digest)).length, 1);
      } finally {
        await second.close();
      }
    } finally {
      await rm(statedir, { recursive: true, force: true });
    }
  });
});
