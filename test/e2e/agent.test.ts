// `wharf agent` end to end: a real Wharf, the agent as a process, the real Docker engine. Images are
// pushed with the docker CLI and their events posted by hand (verify-flow.test.ts lets the registry
// send them); each verdict is read back through the referrers API and checked against the agent's keys.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { signatureOf } from '../../src/agent/intake-auth.js';
import { MANIFEST_MEDIA_TYPES } from '../../src/client/registry-client.js';
import type { JSONWebKeySet } from '../../src/verify/verdict.js';
import {
  agentContainers,
  agentJwks,
  buildAgentImage,
  postEvents,
  pushEnvelope,
  pushImage,
  startAgentProcess,
  verdictCount,
  waitForVerdict,
  type AgentImageSpec,
  type RunningAgentProcess,
} from '../helpers/agent.js';
import { pushManifestList, removeImages, requireTools } from '../helpers/images.js';
import { printOutput, startWharf, type RunningServer } from '../helpers/processes.js';
import { docker } from '../helpers/tools.js';

const skip = await requireTools('docker', 'busybox');

const TOKEN = randomBytes(16).toString('hex');
const SECRET = randomBytes(16).toString('hex');
const auth = { Authorization: `Bearer ${TOKEN}` };
const R = 'wharf-agent-test';

const policies = [
  { name: 'sleepy', repositories: [`${R}/sleep`], limits: { timeout: '3s' } },
  { name: 'bomb', repositories: [`${R}/forkbomb`], limits: { timeout: '10s', pids: 32 } },
  {
    name: 'service',
    repositories: [`${R}/health/*`],
    expect: { running: '2s' },
    limits: { timeout: '20s' },
  },
  { name: 'greeting', repositories: [`${R}/output/**`], expect: { output: 'says hello$' } },
];

interface Details {
  reason?: string;
  exitCode?: number;
  outcome?: string;
  output?: string;
}

void describe(
  'wharf agent: run pushed images in isolation, push signed verdicts',
  { skip, timeout: 400_000 },
  () => {
    let wharf: RunningServer | undefined;
    let agent: RunningAgentProcess | undefined;
    let jwks: JSONWebKeySet;
    const localRefs: string[] = [];

    before(async () => {
      wharf = await startWharf();
      agent = await startAgentProcess({
        agent: { registry: { url: wharf.url }, token: TOKEN, secret: SECRET, concurrency: 2, policies },
      });
      jwks = await agentJwks(agent.url);
    });

    after(async () => {
      await removeImages(...localRefs);
      await agent?.stop();
      await wharf?.stop();
      printOutput(wharf, 'registry');
      if (process.exitCode !== undefined && process.exitCode !== 0) {
        console.error(`--- agent output ---\n${agent?.output() ?? ''}`);
      }
    });

    /** Builds, pushes and announces an image; returns its repository, digest and verdict. */
    async function verify(name: string, spec: AgentImageSpec) {
      assert.ok(wharf && agent);
      const image = await buildAgentImage(name, spec);
      const repo = `${R}/${name}`;
      localRefs.push(image.localRef, `${wharf.host}/${repo}:v1`);
      const digest = await pushImage(image, wharf.host, repo);
      const posted = await postEvents(agent.url, pushEnvelope(repo, digest), auth);
      assert.equal(posted.status, 202, JSON.stringify(posted.body));
      const verdict = await waitForVerdict(wharf.url, repo, digest, jwks);
      const details = (verdict.statement.predicate.wharf ?? {}) as Details;
      return { repo, digest, verdict, details, predicate: verdict.statement.predicate };
    }

    void test('a good image: PASSED, signed, subject is the image, container and pulled ref gone', async () => {
      assert.ok(wharf);
      const { repo, digest, verdict, predicate } = await verify('good', { cmd: ['busybox', 'echo', 'fine'] });
      assert.equal(verdict.result, 'PASSED');
      assert.equal(predicate.result, 'PASSED');
      assert.deepEqual(predicate.passedTests, ['exitcode']);
      assert.deepEqual(predicate.failedTests, []);
      assert.equal(predicate.configuration[0]?.name, 'default');
      const subject = verdict.statement.subject[0];
      assert.equal(subject?.name, `${wharf.host}/${repo}`);
      assert.equal(`sha256:${subject.digest.sha256 ?? ''}`, digest);
      assert.deepEqual(await agentContainers(repo, digest), []);
      // The agent removed the reference it pulled; the test's own tag stays.
      const { stdout } = await docker([
        'image',
        'inspect',
        '--format',
        '{{json .RepoDigests}}',
        `${wharf.host}/${repo}:v1`,
      ]);
      assert.doesNotMatch(stdout, new RegExp(digest), 'the pulled repo@digest reference is removed');
    });

    void test('an image that exits 1: FAILED with its exit code', async () => {
      const { verdict, predicate, details } = await verify('exit1', {
        cmd: ['busybox', 'sh', '-c', 'echo bye; exit 1'],
      });
      assert.equal(verdict.result, 'FAILED');
      assert.deepEqual(predicate.failedTests, ['exitcode']);
      assert.equal(details.exitCode, 1);
      assert.match(details.output ?? '', /bye/);
    });

    void test('the output policy: PASSED when the pattern matches', async () => {
      const { verdict, predicate } = await verify('output/hello', {
        cmd: ['busybox', 'echo', 'the image says hello'],
      });
      assert.equal(verdict.result, 'PASSED');
      assert.deepEqual(predicate.passedTests, ['exitcode', 'output']);
      assert.equal(predicate.configuration[0]?.name, 'greeting');
      const other = await verify('output/silent', { cmd: ['busybox', 'echo', 'nothing to say'] });
      assert.equal(other.verdict.result, 'FAILED');
      assert.deepEqual(other.predicate.failedTests, ['output']);
    });

    void test('isolation: no capabilities, no-new-privileges, read-only root, noexec /tmp, only lo, limits', async () => {
      const script = [
        'grep -E "^(CapEff|NoNewPrivs)" /proc/self/status',
        'touch /x 2>/dev/null && echo root-writable || echo root-readonly',
        'echo x > /tmp/t && echo tmp-writable',
        'cp /bin/busybox /tmp/bb; /tmp/bb true 2>/dev/null && echo tmp-exec || echo tmp-noexec',
        'echo net: $(ls /sys/class/net)',
        'echo pids: $(cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null)',
        'echo mem: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null)',
      ].join('; ');
      const { verdict, details } = await verify('probe', { cmd: ['busybox', 'sh', '-c', script] });
      assert.equal(verdict.result, 'PASSED');
      const out = details.output ?? '';
      assert.match(out, /CapEff:\s+0000000000000000/);
      assert.match(out, /NoNewPrivs:\s+1/);
      assert.match(out, /root-readonly/);
      assert.match(out, /tmp-writable/);
      assert.match(out, /tmp-noexec/);
      assert.match(out, /net: lo\n/);
      assert.match(out, /pids: 64\n/);
      assert.match(out, /mem: 67108864\n/);
    });

    void test('an image that tries the network: FAILED, and the listener on loopback saw nothing', async () => {
      assert.ok(wharf);
      let connections = 0;
      const server: Server = createServer((socket) => {
        connections++;
        socket.end('HTTP/1.0 200 OK\r\n\r\nok');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const port = (server.address() as { port: number }).port;
        const { repo, verdict, details } = await verify('net', {
          cmd: ['busybox', 'sh', '-c', `printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 3 127.0.0.1 ${port}`],
        });
        assert.equal(verdict.result, 'FAILED');
        assert.equal(details.exitCode, 1);
        assert.match(details.output ?? '', /can't connect/);
        assert.equal(connections, 0, 'the container reached the host');
        // Control: the same image with the host's network does connect, so the verdict is the isolation's.
        await docker(['run', '--rm', '--network', 'host', `${wharf.host}/${repo}:v1`]);
        assert.equal(connections, 1);
      } finally {
        server.close();
      }
    });

    void test('an image that sleeps forever: FAILED by timeout, the container is gone', async () => {
      const { repo, digest, verdict, predicate, details } = await verify('sleep', {
        cmd: ['busybox', 'sleep', '100000'],
      });
      assert.equal(verdict.result, 'FAILED');
      assert.ok(predicate.failedTests.includes('timeout'), predicate.failedTests.join());
      assert.equal(details.outcome, 'timeout');
      assert.deepEqual(await agentContainers(repo, digest), []);
    });

    void test('a fork bomb: held by the pids limit, FAILED, the host unaffected', async () => {
      // The test process keeps its timers while the bomb goes off: the host is not starved.
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 100);
      try {
        const { repo, digest, verdict, details } = await verify('forkbomb', {
          cmd: ['busybox', 'sh', '-c', 'while :; do busybox sleep 1000 & done'],
        });
        assert.equal(verdict.result, 'FAILED');
        assert.match(details.output ?? '', /can't fork/, 'fork failed at the pids limit');
        assert.deepEqual(await agentContainers(repo, digest), []);
        assert.ok(ticks > 0);
        const { stdout } = await docker(['info', '--format', '{{.ContainersRunning}}']);
        assert.match(stdout.trim(), /^\d+$/, 'the engine still answers');
      } finally {
        clearInterval(ticker);
      }
    });

    void test('a HEALTHCHECK image that turns healthy: PASSED; one that turns unhealthy: FAILED', async () => {
      const healthy = await verify('health/good', {
        cmd: ['busybox', 'sh', '-c', 'busybox sleep 1; touch /tmp/ready; exec busybox sleep 100000'],
        healthcheck: '--interval=1s --timeout=1s --retries=1 CMD ["busybox", "test", "-f", "/tmp/ready"]',
      });
      assert.equal(healthy.verdict.result, 'PASSED', healthy.details.reason);
      assert.deepEqual(healthy.predicate.passedTests, ['running', 'healthy']);
      const sick = await verify('health/bad', {
        cmd: ['busybox', 'sleep', '100000'],
        healthcheck: '--interval=1s --timeout=1s --retries=1 CMD ["busybox", "false"]',
      });
      assert.equal(sick.verdict.result, 'FAILED');
      assert.deepEqual(sick.predicate.failedTests, ['healthy']);
      assert.deepEqual(await agentContainers(sick.repo, sick.digest), []);
    });

    void test('the same event twice (and again later): one verdict', async () => {
      assert.ok(wharf && agent);
      const image = await buildAgentImage('twice', { cmd: ['busybox', 'true'] });
      const repo = `${R}/twice`;
      localRefs.push(image.localRef, `${wharf.host}/${repo}:v1`);
      const digest = await pushImage(image, wharf.host, repo);
      const event = pushEnvelope(repo, digest);
      const [a, b] = await Promise.all([
        postEvents(agent.url, event, auth),
        postEvents(agent.url, event, auth),
      ]);
      assert.equal(a.status, 202);
      assert.equal(b.status, 202);
      await waitForVerdict(wharf.url, repo, digest, jwks);
      // Re-delivered after the verdict exists: found through the referrers API, not run again.
      assert.equal((await postEvents(agent.url, event, auth)).status, 202);
      await agent.waitForLog('already verified by this agent', { repository: repo, digest });
      assert.equal(await verdictCount(wharf.url, repo, digest), 1);
    });

    void test('the verdict itself is not verified (no verdicts of verdicts)', async () => {
      assert.ok(wharf && agent);
      const image = await buildAgentImage('selfloop', { cmd: ['busybox', 'true'] });
      const repo = `${R}/selfloop`;
      localRefs.push(image.localRef, `${wharf.host}/${repo}:v1`);
      const digest = await pushImage(image, wharf.host, repo);
      assert.equal((await postEvents(agent.url, pushEnvelope(repo, digest), auth)).status, 202);
      const verdict = await waitForVerdict(wharf.url, repo, digest, jwks);
      // What a registry sends when the verdict manifest is pushed.
      const event = pushEnvelope(repo, verdict.digest, MANIFEST_MEDIA_TYPES.ociManifest);
      assert.equal((await postEvents(agent.url, event, auth)).status, 202);
      await agent.waitForLog('not verified', { repository: repo, digest: verdict.digest });
      assert.equal(await verdictCount(wharf.url, repo, verdict.digest), 0);
    });

    void test('an index: each linux/amd64 child and the index get a verdict, other platforms none', async () => {
      assert.ok(wharf && agent);
      const amd = await buildAgentImage('multi-amd64', { cmd: ['busybox', 'true'] });
      const arm = await buildAgentImage('multi-arm64', { cmd: ['busybox', 'false'] });
      const repo = `${R}/multi`;
      const amdRef = `${wharf.host}/${repo}:amd64`;
      const armRef = `${wharf.host}/${repo}:arm64`;
      localRefs.push(amd.localRef, arm.localRef, amdRef, armRef);
      const amdDigest = await pushImage(amd, wharf.host, repo, 'amd64');
      const armDigest = await pushImage(arm, wharf.host, repo, 'arm64');
      const indexDigest = await pushManifestList(`${wharf.host}/${repo}:1`, [
        { ref: amdRef, os: 'linux', arch: 'amd64' },
        { ref: armRef, os: 'linux', arch: 'arm64' },
      ]);
      const event = pushEnvelope(repo, indexDigest, MANIFEST_MEDIA_TYPES.dockerManifestList);
      assert.equal((await postEvents(agent.url, event, auth)).status, 202);
      const index = await waitForVerdict(wharf.url, repo, indexDigest, jwks);
      assert.equal(index.result, 'PASSED');
      assert.deepEqual(index.statement.predicate.passedTests, [`linux/amd64@${amdDigest}`]);
      const child = await waitForVerdict(wharf.url, repo, amdDigest, jwks, 1000);
      assert.equal(child.result, 'PASSED');
      assert.equal(await verdictCount(wharf.url, repo, armDigest), 0, 'the arm64 image is not run here');
    });

    void test('an image whose layers cannot be pulled: FAILED verdict naming the pull', async () => {
      assert.ok(wharf && agent);
      const image = await buildAgentImage('broken', { cmd: ['busybox', 'true'] });
      const repo = `${R}/broken`;
      const ref = `${wharf.host}/${repo}:v1`;
      const digest = await pushImage(image, wharf.host, repo);
      // The engine must fetch the layers from the registry, and the registry has lost one.
      const manifest = (await (
        await fetch(`${wharf.url}/v2/${repo}/manifests/${digest}`, {
          headers: { Accept: MANIFEST_MEDIA_TYPES.dockerManifest },
        })
      ).json()) as { layers: { digest: string }[] };
      // The last layer is this image's own (the busybox layer below it is in every test image).
      const layer = manifest.layers.at(-1)?.digest ?? '';
      const del = await fetch(`${wharf.url}/v2/${repo}/blobs/${layer}`, { method: 'DELETE' });
      assert.equal(del.status, 202);
      await removeImages(ref, image.localRef);
      assert.equal((await postEvents(agent.url, pushEnvelope(repo, digest), auth)).status, 202);
      const verdict = await waitForVerdict(wharf.url, repo, digest, jwks);
      assert.equal(verdict.result, 'FAILED');
      assert.deepEqual(verdict.statement.predicate.failedTests, ['pull']);
      assert.match(String((verdict.statement.predicate.wharf as Details).reason), /pull/);
    });

    void test('intake: 401 without the token or signature, 400 for a malformed body, HMAC accepted', async () => {
      assert.ok(agent);
      const body = JSON.stringify({ events: [{ action: 'pull', target: { mediaType: 'x' } }] });
      assert.equal((await postEvents(agent.url, body)).status, 401);
      assert.equal((await postEvents(agent.url, body, { Authorization: 'Bearer wrong' })).status, 401);
      assert.equal((await postEvents(agent.url, body, { 'X-Wharf-Signature-256': 'sha256=00' })).status, 401);
      const signed = await postEvents(agent.url, body, {
        'X-Wharf-Signature-256': signatureOf(SECRET, Buffer.from(body)),
      });
      assert.equal(signed.status, 202);
      assert.deepEqual(signed.body, { accepted: 0, ignored: 1 });
      // A signature over other bytes does not count.
      const forged = await postEvents(agent.url, `${body} `, {
        'X-Wharf-Signature-256': signatureOf(SECRET, Buffer.from(body)),
      });
      assert.equal(forged.status, 401);

      for (const [bad, why] of [
        ['{not json', /not JSON/],
        [JSON.stringify({ nope: [] }), /envelope/],
        [JSON.stringify({ events: [{ action: 'push' }] }), /target/],
        [JSON.stringify(pushEnvelope('ok/repo', 'sha256:1234')), /digest/],
        [JSON.stringify(pushEnvelope('Bad Repo', `sha256:${'a'.repeat(64)}`)), /repository/],
      ] as const) {
        const res = await postEvents(agent.url, bad, auth);
        assert.equal(res.status, 400, bad);
        assert.match((res.body as { error: string }).error, why);
      }
    });

    void test('GET /.well-known/jwks.json, /healthz, /readyz', async () => {
      assert.ok(agent);
      assert.equal(jwks.keys.length, 1);
      const [key] = jwks.keys;
      assert.ok(key);
      assert.equal(key.kty, 'EC');
      assert.equal(key.d, undefined, 'no private part');
      assert.equal((await fetch(`${agent.url}/healthz`)).status, 200);
      assert.equal((await fetch(`${agent.url}/readyz`)).status, 200);
    });

    void test('engine unreachable: retried with backoff, kept in the journal; a restart with the engine passes it', async () => {
      assert.ok(wharf);
      const image = await buildAgentImage('engine-down', { cmd: ['busybox', 'true'] });
      const repo = `${R}/engine-down`;
      localRefs.push(image.localRef, `${wharf.host}/${repo}:v1`);
      const digest = await pushImage(image, wharf.host, repo);
      const dir = await mkdtemp(join(tmpdir(), 'wharf-agent-state-'));
      const common = { registry: { url: wharf.url }, token: TOKEN, policies };
      const down = await startAgentProcess({
        statedir: dir,
        agent: { ...common, docker: { socket: join(dir, 'no-such.sock') } },
      });
      let up: RunningAgentProcess | undefined;
      try {
        assert.equal((await fetch(`${down.url}/readyz`)).status, 503);
        assert.equal((await postEvents(down.url, pushEnvelope(repo, digest), auth)).status, 202);
        const logged = await down.waitForLog('verification failed, will retry', { repository: repo, digest });
        assert.equal(logged.kind, 'transient');
        assert.match(JSON.stringify(logged.err), /docker engine unreachable/);
        assert.equal((await readdir(join(dir, 'pending'))).length, 1, 'the job is journaled');
        assert.equal(await verdictCount(wharf.url, repo, digest), 0, 'no verdict while the engine is down');
        // Killed without a chance to clean up: the journal is what carries the job over.
        await down.stop('SIGKILL');
        up = await startAgentProcess({ statedir: dir, agent: common });
        const verdict = await waitForVerdict(wharf.url, repo, digest, await agentJwks(up.url));
        assert.equal(verdict.result, 'PASSED');
        await up.waitForLog('replaying unfinished jobs from the journal', { jobs: 1 }, 1000);
        // Finished jobs leave the journal.
        for (let i = 0; i < 50 && (await readdir(join(dir, 'pending'))).length > 0; i++) {
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.deepEqual(await readdir(join(dir, 'pending')), []);
      } finally {
        await down.stop();
        await up?.stop();
        await rm(dir, { recursive: true, force: true });
      }
    });

    void test('SIGTERM mid-run: the container is removed, no verdict; the job is replayed at the next start', async () => {
      assert.ok(wharf);
      const image = await buildAgentImage('sleep', { cmd: ['busybox', 'sleep', '100000'] });
      const repo = `${R}/sleep`;
      localRefs.push(image.localRef, `${wharf.host}/${repo}:interrupted`);
      const digest = await pushImage(image, wharf.host, repo, 'interrupted');
      const dir = await mkdtemp(join(tmpdir(), 'wharf-agent-state-'));
      const common = { registry: { url: wharf.url }, token: TOKEN, policies };
      let first: RunningAgentProcess | undefined;
      let second: RunningAgentProcess | undefined;
      try {
        first = await startAgentProcess({ statedir: dir, agent: common });
        assert.equal((await postEvents(first.url, pushEnvelope(repo, digest), auth)).status, 202);
        for (let i = 0; i < 100 && (await agentContainers(repo, digest)).length === 0; i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.equal((await agentContainers(repo, digest)).length, 1, 'the container runs');
        const stopping = Date.now();
        await first.stop('SIGTERM');
        assert.ok(Date.now() - stopping < 10_000, 'shutdown does not wait for the wall-time limit');
        assert.deepEqual(await agentContainers(repo, digest), []);
        assert.equal(await verdictCount(wharf.url, repo, digest), 0, 'a cut-short run is no verdict');
        assert.equal((await readdir(join(dir, 'pending'))).length, 1);

        second = await startAgentProcess({ statedir: dir, agent: common });
        const verdict = await waitForVerdict(wharf.url, repo, digest, await agentJwks(second.url));
        assert.equal(verdict.result, 'FAILED');
        assert.equal((verdict.statement.predicate.wharf as Details).outcome, 'timeout');
        assert.equal(await verdictCount(wharf.url, repo, digest), 1);
      } finally {
        await first?.stop();
        await second?.stop();
        await rm(dir, { recursive: true, force: true });
      }
    });
  },
);
