// Verification agent speed (issue 6): how long after `docker push` returns a verdict is visible
// through the referrers API, and how many images a minute the agent verifies with concurrency 2.
//
//   node --import tsx bench/agent.ts [--latency-runs 5] [--images 10] [--concurrency 2]
//
// Latency: a Wharf whose notifications endpoint is the agent; each run builds a fresh small image
// (busybox FROM scratch, `true`), pushes it, then polls the referrers API every 25 ms. Throughput: a
// second Wharf without notifications gets N images pushed first, then N events are posted to a second
// agent at once, and the clock runs until the last verdict is visible.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  agentJwks,
  buildAgentImage,
  postEvents,
  pushEnvelope,
  pushImage,
  startAgentProcess,
  waitForVerdict,
} from '../test/helpers/agent.js';
import { removeImages, requireTools } from '../test/helpers/images.js';
import { freePort, startWharf } from '../test/helpers/processes.js';

const { values } = parseArgs({
  options: {
    'latency-runs': { type: 'string', default: '5' },
    images: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '2' },
  },
});
const latencyRuns = Number(values['latency-runs']);
const imageCount = Number(values.images);
const concurrency = Number(values.concurrency);
const R = 'wharf-agent-test/bench';

const missing = await requireTools('docker', 'busybox');
if (missing !== undefined) {
  console.error(`bench/agent: ${missing}`);
  process.exit(1);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
};
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

const dir = await mkdtemp(join(tmpdir(), 'wharf-agent-bench-'));
const localRefs: string[] = [];
const stops: (() => Promise<void>)[] = [];
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

try {
  console.log(`bench/agent: ${new Date().toISOString()}, ${cpus().length} cores, load ${load()}`);

  // ---- latency: push → verdict, through the registry's notifications -----------------------------
  const token = randomBytes(16).toString('hex');
  const port = await freePort();
  const config = join(dir, 'registry.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'notifications:',
      '  endpoints:',
      '    - name: agent',
      `      url: http://127.0.0.1:${port}/events`,
      `      headers: { Authorization: ['Bearer ${token}'] }`,
      '      backoff: 200ms',
      '      maxbackoff: 1s',
      '',
    ].join('\n'),
  );
  const wharf = await startWharf({ config });
  stops.push(() => wharf.stop());
  const agent = await startAgentProcess({
    port,
    level: 'warn',
    agent: { registry: { url: wharf.url }, token, concurrency },
  });
  stops.push(() => agent.stop());
  const jwks = await agentJwks(agent.url);

  const latencies: number[] = [];
  for (let i = 0; i < latencyRuns + 1; i++) {
    const image = await buildAgentImage(`bench-latency-${i}`, { cmd: ['busybox', 'true'] });
    const repo = `${R}/latency-${i}`;
    localRefs.push(image.localRef, `${wharf.host}/${repo}:v1`);
    const digest = await pushImage(image, wharf.host, repo);
    const pushed = performance.now();
    await waitForVerdict(wharf.url, repo, digest, jwks, 60_000, 25);
    const ms = performance.now() - pushed;
    // The first run warms up tsx's module cache and the engine; it is shown but not counted.
    if (i === 0) console.log(`  warm-up run: ${secs(ms)}`);
    else latencies.push(ms);
  }
  console.log(
    `push → verdict visible (small image, ${latencyRuns} runs): median ${secs(median(latencies))}, ` +
      `min ${secs(Math.min(...latencies))}, max ${secs(Math.max(...latencies))} (target < 5 s)`,
  );

  // ---- throughput: N events at once, concurrency C ------------------------------------------------
  const plain = await startWharf();
  stops.push(() => plain.stop());
  const agent2 = await startAgentProcess({
    level: 'warn',
    agent: { registry: { url: plain.url }, token, concurrency },
  });
  stops.push(() => agent2.stop());
  const jwks2 = await agentJwks(agent2.url);
  const pushedImages: { repo: string; digest: string }[] = [];
  for (let i = 0; i < imageCount; i++) {
    const image = await buildAgentImage(`bench-throughput-${i}`, { cmd: ['busybox', 'true'] });
    const repo = `${R}/throughput-${i}`;
    localRefs.push(image.localRef, `${plain.host}/${repo}:v1`);
    pushedImages.push({ repo, digest: await pushImage(image, plain.host, repo) });
  }
  const started = performance.now();
  await Promise.all(
    pushedImages.map(async ({ repo, digest }) => {
      const res = await postEvents(agent2.url, pushEnvelope(repo, digest), {
        Authorization: `Bearer ${token}`,
      });
      if (res.status !== 202) throw new Error(`POST /events: ${res.status} ${JSON.stringify(res.body)}`);
    }),
  );
  await Promise.all(
    pushedImages.map(({ repo, digest }) => waitForVerdict(plain.url, repo, digest, jwks2, 300_000, 50)),
  );
  const elapsed = performance.now() - started;
  console.log(
    `throughput: ${imageCount} images in ${secs(elapsed)} with concurrency ${concurrency}: ` +
      `${((imageCount * 60_000) / elapsed).toFixed(1)} images/min`,
  );
  console.log(`load at the end: ${load()} (a shared machine: numbers are noisy)`);
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
  await removeImages(...localRefs);
  await rm(dir, { recursive: true, force: true });
}
