// The whole verification flow with nothing posted by hand: `docker push` → Wharf's notifications →
// `wharf agent` → run in the Docker engine → signed verdict visible through the referrers API.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  agentJwks,
  buildAgentImage,
  pushImage,
  startAgentProcess,
  verdictCount,
  waitForVerdict,
  type RunningAgentProcess,
} from '../helpers/agent.js';
import { pushManifestList, removeImages, requireTools } from '../helpers/images.js';
import { freePort, printOutput, startWharf, type RunningServer } from '../helpers/processes.js';

const skip = await requireTools('docker', 'busybox');
const R = 'wharf-agent-test/flow';

/** A Wharf config whose one notifications endpoint is the agent on `port`. */
async function registryConfig(dir: string, port: number, endpoint: string[]): Promise<string> {
  const path = join(dir, 'config.yml');
  await writeFile(
    path,
    [
      'version: 0.1',
      'notifications:',
      '  endpoints:',
      '    - name: agent',
      `      url: http://127.0.0.1:${port}/events`,
      '      timeout: 5s',
      '      backoff: 200ms',
      '      maxbackoff: 1s',
      ...endpoint.map((line) => `      ${line}`),
      '',
    ].join('\n'),
  );
  return path;
}

void describe('verification flow: registry notifications drive the agent', { skip, timeout: 300_000 }, () => {
  const localRefs: string[] = [];
  const dirs: string[] = [];
  const running: { label: string; wharf?: RunningServer; agent?: RunningAgentProcess }[] = [];

  after(async () => {
    await removeImages(...localRefs);
    for (const r of running) {
      await r.agent?.stop();
      await r.wharf?.stop();
      printOutput(r.wharf, `registry (${r.label})`);
      if (process.exitCode !== undefined && process.exitCode !== 0) {
        console.error(`--- agent (${r.label}) ---\n${r.agent?.output() ?? ''}`);
      }
    }
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  async function setUp(label: string, endpoint: string[], agentAuth: { token?: string; secret?: string }) {
    const dir = await mkdtemp(join(tmpdir(), 'wharf-agent-flow-'));
    dirs.push(dir);
    const port = await freePort();
    const wharf = await startWharf({ config: await registryConfig(dir, port, endpoint) });
    const entry: (typeof running)[number] = { label, wharf };
    running.push(entry);
    const statedir = join(dir, 'agent');
    const start = async () =>
      startAgentProcess({ port, statedir, agent: { registry: { url: wharf.url }, ...agentAuth } });
    entry.agent = await start();
    return { wharf, entry, start };
  }

  async function build(name: string, cmd: string[], wharf: RunningServer, tag = 'v1') {
    const image = await buildAgentImage(name, { cmd });
    const repo = `${R}/${name}`;
    localRefs.push(image.localRef, `${wharf.host}/${repo}:${tag}`);
    return { image, repo };
  }

  void test('bearer token in the endpoint headers: push → PASSED or FAILED verdict, index too, none on verdicts', async () => {
    const token = randomBytes(16).toString('hex');
    const { wharf, entry } = await setUp('token', [`headers: { Authorization: ['Bearer ${token}'] }`], {
      token,
    });
    assert.ok(entry.agent);
    const jwks = await agentJwks(entry.agent.url);

    const good = await build('good', ['busybox', 'true'], wharf);
    const goodDigest = await pushImage(good.image, wharf.host, good.repo);
    const passed = await waitForVerdict(wharf.url, good.repo, goodDigest, jwks);
    assert.equal(passed.result, 'PASSED');

    const bad = await build('bad', ['busybox', 'false'], wharf);
    const badDigest = await pushImage(bad.image, wharf.host, bad.repo);
    assert.equal((await waitForVerdict(wharf.url, bad.repo, badDigest, jwks)).result, 'FAILED');

    // A multi-platform list: the amd64 image and the list get verdicts, each exactly one.
    const amd = await build('multi', ['busybox', 'true'], wharf, 'amd64');
    const arm = await build('multi', ['busybox', 'true'], wharf, 'arm64');
    const amdDigest = await pushImage(amd.image, wharf.host, amd.repo, 'amd64');
    await pushImage(arm.image, wharf.host, arm.repo, 'arm64');
    const listDigest = await pushManifestList(`${wharf.host}/${amd.repo}:1`, [
      { ref: `${wharf.host}/${amd.repo}:amd64`, os: 'linux', arch: 'amd64' },
      { ref: `${wharf.host}/${arm.repo}:arm64`, os: 'linux', arch: 'arm64' },
    ]);
    assert.equal((await waitForVerdict(wharf.url, amd.repo, listDigest, jwks)).result, 'PASSED');
    assert.equal((await waitForVerdict(wharf.url, amd.repo, amdDigest, jwks)).result, 'PASSED');

    // The registry also announced each verdict manifest; none of them got a verdict of its own,
    // and no image got two.
    await entry.agent.waitForLog('not verified', { repository: good.repo, digest: passed.digest });
    assert.equal(await verdictCount(wharf.url, good.repo, passed.digest), 0);
    assert.equal(await verdictCount(wharf.url, good.repo, goodDigest), 1);
    assert.equal(await verdictCount(wharf.url, amd.repo, amdDigest), 1);
  });

  void test('HMAC secret on the endpoint; a push while the agent is down is verified once it is back', async () => {
    const secret = randomBytes(16).toString('hex');
    const { wharf, entry, start } = await setUp('hmac', [`secret: ${secret}`], { secret });
    assert.ok(entry.agent);
    const jwks = await agentJwks(entry.agent.url);

    const first = await build('signed', ['busybox', 'true'], wharf);
    const firstDigest = await pushImage(first.image, wharf.host, first.repo);
    assert.equal((await waitForVerdict(wharf.url, first.repo, firstDigest, jwks)).result, 'PASSED');

    await entry.agent.stop();
    const later = await build('while-down', ['busybox', 'true'], wharf);
    const laterDigest = await pushImage(later.image, wharf.host, later.repo);
    await new Promise((r) => setTimeout(r, 1500)); // the registry retries meanwhile
    entry.agent = await start();
    // Same state dir, same key: the JWKS read before still checks it.
    assert.equal((await waitForVerdict(wharf.url, later.repo, laterDigest, jwks)).result, 'PASSED');
  });
});
