// What authentication costs: manifest GET requests/s of one Wharf without auth, one behind the built-in
// token server (Bearer; each token is verified once, then served from the cache until it expires), and
// one with htpasswd (Basic; bcrypt once, then cached). Target (issue 5): token auth costs at most 10%.
//
//   node --import tsx bench/auth.ts [--duration 10] [--rounds 3] [--concurrency 32]
//
// Needs wrk (apt-get install -y wrk). Rounds alternate the order of the three servers so that drift in
// background load hits each alike; the medians are reported.
import { execFile, spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import bcrypt from 'bcryptjs';
import { startWharf, type RunningServer } from '../test/helpers/processes.js';
import { cpuUsage } from './proc.js';
import { Router } from '@koa/router';
import { pino } from 'pino';
import { parseConfig } from '../config/load.js';
import { createInMemoryDriver } from '../storage-drivers/inmemory/driver.js';
import { createAuth } from '../src/auth/auth.js';
import { createApp, type AppState } from '../src/http/app.js';
import { createRegistry } from '../src/registry/registry.js';

const execFileAsync = promisify(execFile);
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '32' },
    warmup: { type: 'string', default: '2' },
  },
});
const duration = Number(args.duration);
const rounds = Number(args.rounds);
const concurrency = Number(args.concurrency);
const warmup = Number(args.warmup);

interface Variant {
  name: string;
  server: RunningServer;
  /** The Authorization header every request carries, if any. */
  authorization?: string;
  rates: number[];
  /** Server CPU per answered request, in µs: steadier than req/s on a busy machine. */
  cpuPerRequest: number[];
}

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function pushBlob(
  base: string,
  repo: string,
  data: Buffer,
  headers: Record<string, string>,
): Promise<string> {
  const post = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers });
  if (post.status !== 202) throw new Error(`POST upload: ${post.status} ${await post.text()}`);
  const location = new URL(post.headers.get('location') ?? '', base);
  const digest = sha256(data);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, {
    method: 'PUT',
    headers: { ...headers, 'content-type': 'application/octet-stream' },
    body: data,
  });
  if (put.status !== 201) throw new Error(`PUT blob: ${put.status} ${await put.text()}`);
  return digest;
}

/** A config, one small layer and an OCI manifest tagged `latest`. */
async function pushImage(base: string, repo: string, authorization?: string): Promise<void> {
  const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }),
  );
  const layer = Buffer.from('wharf auth bench layer\n'.repeat(64));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: await pushBlob(base, repo, config, headers),
        size: config.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          digest: await pushBlob(base, repo, layer, headers),
          size: layer.length,
        },
      ],
    }),
  );
  const put = await fetch(`${base}/v2/${repo}/manifests/latest`, {
    method: 'PUT',
    headers: { ...headers, 'content-type': OCI_MANIFEST },
    body: manifest,
  });
  if (put.status !== 201) throw new Error(`PUT manifest: ${put.status} ${await put.text()}`);
}

async function wrk(
  url: string,
  seconds: number,
  script: string,
): Promise<{ rate: number; requests: number; errors: number }> {
  const { stdout } = await execFileAsync(
    'wrk',
    ['-t1', `-c${concurrency}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, url],
    { timeout: (seconds + 30) * 1000 },
  );
  const total = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? 0);
  const elapsed = Number(/requests in ([\d.]+)s/.exec(stdout)?.[1] ?? seconds);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(stdout)?.[1] ?? 0);
  return { rate: (total - non2xx) / elapsed, requests: total - non2xx, errors: non2xx };
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
};

/**
 * The auth middleware alone, in this process: µs per manifest GET it guards (route match, credentials,
 * cache hit, scope check). Immune to the machine's load, unlike the req/s above.
 */
async function middlewareCost(work: string, basic: string): Promise<{ name: string; us: number }[]> {
  const out: { name: string; us: number }[] = [];
  const logger = pino({ level: 'silent' });
  const driver = createInMemoryDriver();
  const registry = createRegistry(driver, { deleteEnabled: false, manifestMaxSize: 4 << 20 });
  const sections = {
    token: {
      tokenserver: { enabled: true, htpasswd: join(work, 'htpasswd'), signingkey: join(work, 'signing.pem') },
    },
    basic: { htpasswd: { realm: 'bench', path: join(work, 'htpasswd') } },
  };
  for (const [name, section] of Object.entries(sections)) {
    const config = parseConfig({ auth: section }).config.auth;
    if (config === undefined) throw new Error('no auth config');
    const auth = await createAuth(config, { driver, logger });
    // The app's own router, so that route matching costs what it costs there.
    let router: Router | undefined;
    const app = createApp({
      registry,
      logger,
      auth: {
        routes: (r) => {
          router = r;
          auth.routes(r);
        },
        middleware: (r) => auth.middleware(r),
      },
    });
    if (router === undefined) throw new Error('no router');
    let authorization = basic;
    if (name === 'token') {
      const server = createServer((req, res) => void app.callback()(req, res));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as AddressInfo;
      const res = await fetch(
        `http://127.0.0.1:${port}/auth/token?service=wharf&scope=repository:bench/auth:pull`,
        {
          headers: { authorization: basic },
        },
      );
      authorization = `Bearer ${((await res.json()) as { token: string }).token}`;
      server.close();
    }
    const middleware = auth.middleware(router);
    const ctx = {
      method: 'GET',
      path: '/v2/bench/auth/manifests/latest',
      ip: '127.0.0.1',
      query: {},
      state: { log: logger } as AppState,
      get: (header: string) => (header === 'Authorization' ? authorization : ''),
      set: () => undefined,
    };
    let passed = 0;
    const next = () => {
      passed++;
      return Promise.resolve();
    };
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) await middleware(ctx as never, next);
    };
    await run(5_000);
    if (passed !== 5_000) throw new Error(`${name}: the middleware refused the request`);
    const n = 200_000;
    const t0 = performance.now();
    await run(n);
    out.push({ name, us: ((performance.now() - t0) * 1000) / n });
  }
  return out;
}

async function main(): Promise<void> {
  // `wrk --version` exits 1 after printing its version; only a missing binary matters.
  const probe = spawnSync('wrk', ['--version']);
  if (probe.error !== undefined) {
    console.error('bench/auth.ts needs wrk (apt-get install -y wrk)');
    process.exit(2);
  }
  const work = await mkdtemp(join(tmpdir(), 'wharf-bench-auth-'));
  const variants: Variant[] = [];
  try {
    const password = 'bench-password';
    await writeFile(join(work, 'htpasswd'), `bench:${bcrypt.hashSync(password, 10)}\n`);
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    await writeFile(join(work, 'signing.pem'), key.export({ type: 'pkcs8', format: 'pem' }));
    const configs = {
      open: {},
      token: {
        auth: {
          tokenserver: {
            enabled: true,
            htpasswd: join(work, 'htpasswd'),
            signingkey: join(work, 'signing.pem'),
            expiration: '1h',
          },
        },
      },
      basic: { auth: { htpasswd: { realm: 'bench', path: join(work, 'htpasswd') } } },
    };
    for (const [name, config] of Object.entries(configs)) {
      const file = join(work, `${name}.yml`);
      await writeFile(file, JSON.stringify(config));
      const server = await startWharf({
        config: file,
        env: { WHARF_LOG_LEVEL: 'warn', NODE_ENV: 'production' },
        ...(name !== 'open' && { readyStatus: 401 }),
      });
      variants.push({ name, server, rates: [], cpuPerRequest: [] });
    }
    const basic = `Basic ${Buffer.from(`bench:${password}`).toString('base64')}`;
    for (const v of variants) {
      if (v.name === 'basic') v.authorization = basic;
      if (v.name === 'token') {
        const res = await fetch(
          `${v.server.url}/auth/token?service=wharf&scope=repository:bench/auth:pull,push`,
          {
            headers: { authorization: basic },
          },
        );
        v.authorization = `Bearer ${((await res.json()) as { token: string }).token}`;
      }
      await pushImage(v.server.url, 'bench/auth', v.authorization);
    }

    console.log(
      `manifest GET by tag: wrk -t1 -c${concurrency}, ${duration}s x ${rounds} rounds (warm-up ${warmup}s)`,
    );
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? variants : [...variants].reverse();
      for (const v of order) {
        const script = join(work, `${v.name}.lua`);
        const lines = ['wrk.method = "GET"', `wrk.headers["Accept"] = "${OCI_MANIFEST}"`];
        if (v.authorization !== undefined) lines.push(`wrk.headers["Authorization"] = "${v.authorization}"`);
        await writeFile(script, `${lines.join('\n')}\n`);
        const url = `${v.server.url}/v2/bench/auth/manifests/latest`;
        if (warmup > 0) await wrk(url, warmup, script);
        const cpuBefore = cpuUsage(v.server.pid).seconds;
        const { rate, requests, errors } = await wrk(url, duration, script);
        const cpu = ((cpuUsage(v.server.pid).seconds - cpuBefore) / requests) * 1e6;
        if (errors > 0) throw new Error(`${v.name}: ${errors} non-2xx answers`);
        v.rates.push(rate);
        v.cpuPerRequest.push(cpu);
        console.log(
          `  round ${round + 1} ${v.name.padEnd(5)} ${rate.toFixed(0)} req/s, ${cpu.toFixed(0)} µs CPU/request`,
        );
      }
    }

    const open = median(variants.find((v) => v.name === 'open')?.rates ?? []);
    const openCpu = median(variants.find((v) => v.name === 'open')?.cpuPerRequest ?? []);
    console.log('');
    console.log('| auth  | req/s (median) | vs open | server CPU µs/request | vs open |');
    console.log('| ----- | -------------- | ------- | --------------------- | ------- |');
    for (const v of variants) {
      const rate = median(v.rates);
      const cpu = median(v.cpuPerRequest);
      console.log(
        `| ${v.name.padEnd(5)} | ${rate.toFixed(0).padStart(14)} | ${(rate / open).toFixed(3).padStart(7)} | ` +
          `${cpu.toFixed(0).padStart(21)} | ${(cpu / openCpu).toFixed(3).padStart(7)} |`,
      );
    }
    console.log('');
    console.log('the auth middleware alone, in-process (route match, credentials, cache, scope check):');
    const alone = await middlewareCost(work, basic);
    for (const { name, us } of alone) {
      const share = (us / openCpu) * 100;
      console.log(
        `  ${name.padEnd(5)} ${us.toFixed(2)} µs per request = ${share.toFixed(1)}% of an open request's server CPU`,
      );
    }
    const token = median(variants.find((v) => v.name === 'token')?.rates ?? []) / open;
    const tokenShare = ((alone.find((a) => a.name === 'token')?.us ?? 0) / openCpu) * 100;
    console.log('');
    console.log(
      `target: token auth costs <= 10%: req/s ratio ${token.toFixed(3)} (${token >= 0.9 ? 'met' : 'NOT met'}; ` +
        `noisy when the machine is busy), middleware ${tokenShare.toFixed(1)}% of server CPU (${tokenShare <= 10 ? 'met' : 'NOT met'})`,
    );
    console.log(
      `machine: ${cpus().length} cores, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}, node ${process.version}`,
    );
  } finally {
    await Promise.all(variants.map((v) => v.server.stop()));
    await rm(work, { recursive: true, force: true });
  }
}

await main();
