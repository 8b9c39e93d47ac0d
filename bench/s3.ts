// `npm run bench -- --storage s3`: Wharf against CNCF Distribution 2.8 with both on the same S3 server
// (the Ceph RGW of test/s3/start-rgw.sh), each in its own bucket; the same measurements on a filesystem
// Wharf for the S3/filesystem ratio; and the S3 requests each registry makes per `docker push`.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, request as httpRequest, Agent, type IncomingMessage, type Server } from 'node:http';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AbortMultipartUploadCommand,
  DeleteObjectsCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
} from '@aws-sdk/client-s3';
import {
  distributionBinary,
  distributionConfig,
  freePort,
  repoRoot,
  startWharf,
  wharfS3Env,
  type RunningServer,
  type S3Target,
} from '../test/helpers/processes.js';
import { docker } from '../test/helpers/tools.js';
import {
  createTestBucket,
  readS3TestSettings,
  type S3TestSettings,
  type TestBucket,
} from '../test/s3/env.js';
import { benchPull, benchPush } from './blobs.js';
import { OCI_MANIFEST, pushMonolithic, send, type Reply } from './client.js';
import { digestOf, hashStats, MiB, variant, writeRandomFile, type Content } from './content.js';
import { benchDocker, dockerUnavailable } from './docker.js';
import { benchManifest, type LoadTool } from './manifest.js';
import { benchMemory } from './memory.js';
import { cpuUsage, watchOtherLoad } from './proc.js';
import { errorText, fmt, interleaved, medianSample, renderTable, timed, type Row } from './report.js';
import {
  prepareDist,
  spawnRegistry,
  startBenchWharf,
  stopAll,
  type Registry,
  type RegistryName,
} from './servers.js';
import { wire } from './wire.js';

export interface S3BenchOptions {
  command: string;
  sections: ReadonlySet<string>;
  sizeMiB: number;
  chunkMiB: number;
  memoryMiB: number;
  reps: number;
  pullReps: number;
  duration: number;
  concurrency: number;
  dockerPushReps: number;
  dockerPullReps: number;
  registries: readonly RegistryName[];
  wharfFrom: 'dist' | 'source';
  build: boolean;
  distributionCache: boolean;
  loadTool: { tool: LoadTool; message?: string };
}

/** A section that cannot run on this machine (no dockerd): reported, not a failure. */
class SectionSkipped extends Error {}

const REQUEST_LAYERS = 5;
const REQUEST_LAYER_MIB = 20;

// ---------------------------------------------------------------------------------------------
// Registries on S3

interface Launcher {
  /** Wharf from dist/ (else source via tsx, with the reason). */
  from: 'dist' | 'source';
  note: string;
  distributionCache: boolean;
}

const owned = new Set<RunningServer>();

function inheritedEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('WHARF_') && !k.startsWith('REGISTRY_')),
  );
}

function targetOf(settings: S3TestSettings, bucket: string, endpoint = settings.endpoint): S3Target {
  return {
    bucket,
    region: settings.region,
    regionendpoint: endpoint,
    accesskey: settings.accessKey,
    secretkey: settings.secretKey,
  };
}

async function startS3Wharf(
  launch: Launcher,
  target: S3Target,
  redirect: boolean,
  extraEnv: Record<string, string> = {},
): Promise<Registry> {
  const env = {
    ...wharfS3Env(target),
    ...extraEnv,
    WHARF_STORAGE_DELETE_ENABLED: 'true',
    WHARF_STORAGE_REDIRECT_DISABLE: String(!redirect),
    WHARF_LOG_LEVEL: 'warn',
  };
  let server: RunningServer;
  if (launch.from === 'source') {
    server = await startWharf({ storage: 's3', env, timeoutMs: 60_000 });
  } else {
    const host = `127.0.0.1:${await freePort()}`;
    server = await spawnRegistry({
      command: process.execPath,
      args: [join(repoRoot, 'dist/src/cli.js'), 'serve'],
      env: { ...inheritedEnv(), ...env, WHARF_HTTP_ADDR: host, NODE_ENV: 'production' },
      host,
      root: '',
      cleanup: () => Promise.resolve(),
    });
  }
  owned.add(server);
  const how = launch.from === 'dist' ? 'node dist/src/cli.js serve (built)' : `tsx src/cli.ts${launch.note}`;
  return {
    name: 'wharf',
    describe: `${how}, s3 bucket ${target.bucket}, redirect ${redirect ? 'on' : 'off'}`,
    server,
  };
}

async function startS3Distribution(launch: Launcher, target: S3Target, redirect: boolean): Promise<Registry> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-bench-distribution-s3-'));
  const host = `127.0.0.1:${await freePort()}`;
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, distributionConfig('', host, true, { target, redirect }));
  const env = inheritedEnv();
  // Distribution 2.8 panics when AWS_CA_BUNDLE is set.
  delete env.AWS_CA_BUNDLE;
  if (launch.distributionCache) env.REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR = 'inmemory';
  const server = await spawnRegistry({
    command: distributionBinary,
    args: ['serve', configPath],
    env,
    host,
    root: '',
    cleanup: () => rm(dir, { recursive: true, force: true }),
  });
  owned.add(server);
  const version = spawnSync(distributionBinary, ['--version'], { encoding: 'utf8' }).stdout.trim();
  return {
    name: 'distribution',
    describe:
      `${version.split(' ').pop() ?? 'docker-registry'} (Debian docker-registry, blobdescriptor cache ` +
      `${launch.distributionCache ? 'inmemory' : 'off'}), s3 bucket ${target.bucket}, redirect ${redirect ? 'on' : 'off'}`,
    server,
  };
}

async function stopOwned(server: RunningServer): Promise<void> {
  owned.delete(server);
  await server.stop();
}

/** Deletes every object and unfinished upload, keeping the bucket: memstore keeps it all in RAM. */
export async function emptyBucket(bucket: TestBucket): Promise<void> {
  const { client, name } = bucket;
  const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: name }));
  for (const u of uploads.Uploads ?? []) {
    if (u.Key !== undefined && u.UploadId !== undefined)
      await client.send(new AbortMultipartUploadCommand({ Bucket: name, Key: u.Key, UploadId: u.UploadId }));
  }
  for (;;) {
    const page = await client.send(new ListObjectsV2Command({ Bucket: name, MaxKeys: 1000 }));
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key === undefined ? [] : [{ Key: o.Key }]));
    if (keys.length === 0) return;
    await client.send(new DeleteObjectsCommand({ Bucket: name, Delete: { Objects: keys, Quiet: true } }));
  }
}

// ---------------------------------------------------------------------------------------------
// Counting S3 requests

/** The S3 operation of a path-style request, from its method, query and copy header. */
export function s3Operation(method: string, url: string, headers: IncomingMessage['headers']): string {
  const u = new URL(url, 'http://s3');
  const q = u.searchParams;
  const bucketLevel = u.pathname.replace(/^\/[^/]+\/?/, '') === '';
  const copy = headers['x-amz-copy-source'] !== undefined;
  switch (method) {
    case 'GET':
      if (q.has('uploads')) return 'ListMultipartUploads';
      if (q.has('uploadId')) return 'ListParts';
      if (bucketLevel) return q.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects';
      return 'GetObject';
    case 'HEAD':
      return bucketLevel ? 'HeadBucket' : 'HeadObject';
    case 'PUT':
      if (q.has('partNumber')) return copy ? 'UploadPartCopy' : 'UploadPart';
      return copy ? 'CopyObject' : 'PutObject';
    case 'POST':
      if (q.has('uploads')) return 'CreateMultipartUpload';
      if (q.has('uploadId')) return 'CompleteMultipartUpload';
      if (q.has('delete')) return 'DeleteObjects';
      return 'POST';
    case 'DELETE':
      return q.has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
    default:
      return method;
  }
}

/** An HTTP proxy in front of the S3 endpoint that counts requests by operation. */
export class CountingProxy {
  counts = new Map<string, number>();
  /** `operation path?query` of every request since the last reset. */
  log: string[] = [];
  /** Keys in the answers to ListObjectsV2 since the last reset: what listing cost in keys. */
  listedKeys = 0;
  /**
   * The same, from listings of whole directories only (a prefix ending in `/`, no delimiter: a
   * `walk`); the rest are a path's own listings (stat, delete).
   */
  walkedKeys = 0;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 256 });
  private server: Server | undefined;
  url = '';

  constructor(private readonly target: URL) {}

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const op = s3Operation(req.method ?? 'GET', req.url ?? '/', req.headers);
      this.counts.set(op, (this.counts.get(op) ?? 0) + 1);
      this.log.push(`${op} ${req.url ?? ''}`);
      // The Host header is forwarded as signed; the proxy answers 100-continue itself.
      const { expect: _expect, ...headers } = req.headers;
      const upstream = httpRequest(
        {
          host: this.target.hostname,
          port: Number(this.target.port || 80),
          method: req.method,
          path: req.url,
          headers,
          agent: this.agent,
        },
        (upRes) => {
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          if (op === 'ListObjectsV2') this.countKeys(upRes, req.url ?? '/');
          upRes.pipe(res);
        },
      );
      upstream.on('error', () => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      req.pipe(upstream);
    });
    server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve) => {
      server.listen(0, '127.0.0.1', () => {
        resolve();
      });
    });
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('proxy has no port');
    this.url = `http://127.0.0.1:${addr.port}`;
    this.server = server;
  }

  reset(): void {
    this.counts = new Map();
    this.log = [];
    this.listedKeys = 0;
    this.walkedKeys = 0;
  }

  /** Counts `<Key>` elements in a listing as it passes (a tag may be split across chunks). */
  private countKeys(body: IncomingMessage, url: string): void {
    const q = new URL(url, 'http://s3').searchParams;
    const walk = (q.get('prefix') ?? '/').endsWith('/') && !q.has('delimiter') && !q.has('max-keys');
    let tail = '';
    body.on('data', (chunk: Buffer) => {
      const text = tail + chunk.toString('latin1');
      const keys = text.split('<Key>').length - 1;
      this.listedKeys += keys;
      if (walk) this.walkedKeys += keys;
      tail = text.slice(-4);
    });
  }

  total(): number {
    return [...this.counts.values()].reduce((a, b) => a + b, 0);
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.agent.destroy();
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => {
      server.close(() => {
        resolve();
      });
    });
  }
}

/** Builds a FROM-scratch image of exactly `layers` layers: busybox and `layers - 1` random files. */
async function buildLayeredImage(workDir: string, tag: string, layers: number): Promise<void> {
  const ctx = join(workDir, 'requests-context');
  await mkdir(ctx, { recursive: true });
  await copyFile('/bin/busybox', join(ctx, 'busybox'));
  const lines = ['FROM scratch', 'COPY busybox /bin/busybox'];
  for (let i = 1; i < layers; i++) {
    await writeRandomFile(join(ctx, `layer${i}.bin`), REQUEST_LAYER_MIB * MiB);
    lines.push(`COPY layer${i}.bin /data/layer${i}.bin`);
  }
  lines.push('CMD ["/bin/busybox", "true"]', '');
  await writeFile(join(ctx, 'Dockerfile'), lines.join('\n'));
  await docker(['build', '--quiet', '--tag', tag, ctx], { timeoutMs: 300_000 });
  await rm(ctx, { recursive: true, force: true });
}

interface RequestCounts {
  push: Map<RegistryName, Map<string, number>>;
  pull: Map<RegistryName, Map<string, number>>;
  /** Per registry operation (`countOperations`). */
  ops: Map<RegistryName, Map<string, Map<string, number>>>;
}

/**
 * Each registry on a fresh bucket behind its own counting proxy (redirects off, so a pull's blob
 * reads are counted too): each registry operation once (`countOperations`), then, with docker, one
 * `docker push` and, after `docker rmi`, one `docker pull` each.
 */
async function countRequests(
  settings: S3TestSettings,
  names: readonly RegistryName[],
  launch: Launcher,
  workDir: string,
  withDocker: boolean,
): Promise<RequestCounts> {
  const image = `wharf-bench-requests:${process.pid}`;
  const counts: RequestCounts = { push: new Map(), pull: new Map(), ops: new Map() };
  const setups: { name: RegistryName; bucket: TestBucket; proxy: CountingProxy; reg?: Registry }[] = [];
  try {
    if (withDocker) {
      process.stdout.write(
        `requests: building ${image} (${REQUEST_LAYERS} layers: busybox + ${REQUEST_LAYERS - 1} x ${REQUEST_LAYER_MIB} MiB)\n`,
      );
      await buildLayeredImage(workDir, image, REQUEST_LAYERS);
    }
    for (const name of names) {
      const bucket = await createTestBucket(settings, `bench-requests-${name}`);
      const proxy = new CountingProxy(new URL(settings.endpoint));
      await proxy.start();
      setups.push({ name, bucket, proxy });
      const target = targetOf(settings, bucket.name, proxy.url);
      const setup = setups.at(-1)!;
      setup.reg =
        name === 'wharf'
          ? // The first purge comes at a random time within a minute; it is not part of a push.
            await startS3Wharf(launch, target, false, {
              WHARF_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false',
            })
          : await startS3Distribution(launch, target, false);
    }
    const logs: string[] = [];
    const refOf = (reg: Registry | undefined): string => `${reg!.server.host}/bench/requests:latest`;
    // Let start-up work (upload purging, listings) finish before counting.
    await new Promise((r) => setTimeout(r, 1000));
    for (const { name, proxy, reg } of setups) {
      const opLogs = new Map<string, string[]>();
      counts.ops.set(name, await countOperations(reg!.server.url, proxy, 'bench/ops', opLogs));
      for (const [op, lines] of opLogs) logs.push(...lines.map((l) => `${name} ${op}: ${l}`));
    }
    for (const { name, proxy, reg } of withDocker ? setups : []) {
      await docker(['tag', image, refOf(reg)]);
      proxy.reset();
      await docker(['push', refOf(reg)], { timeoutMs: 300_000 });
      counts.push.set(name, proxy.counts);
      logs.push(...proxy.log.map((l) => `${name} push ${l}`));
    }
    // Every layer must be downloaded: no tag may keep them in the engine.
    if (withDocker) await docker(['rmi', '-f', image, ...setups.map((s) => refOf(s.reg))]);
    for (const { name, proxy, reg } of withDocker ? setups : []) {
      proxy.reset();
      await docker(['pull', refOf(reg)], { timeoutMs: 300_000 });
      counts.pull.set(name, proxy.counts);
      logs.push(...proxy.log.map((l) => `${name} pull ${l}`));
      await docker(['rmi', refOf(reg)]);
      process.stdout.write(
        `  ${name.padEnd(12)} docker push: ${sum(counts.push.get(name))} S3 requests, docker pull: ${sum(counts.pull.get(name))}\n`,
      );
    }
    const logFile = process.env.BENCH_S3_REQUEST_LOG;
    if (logFile !== undefined && logFile !== '') {
      await writeFile(logFile, `${logs.join('\n')}\n`);
      process.stdout.write(`  every counted request: ${logFile}\n`);
    }
  } finally {
    if (withDocker) await docker(['rmi', '-f', image]).catch(() => undefined);
    for (const { bucket, proxy, reg } of setups) {
      if (reg !== undefined) await stopOwned(reg.server);
      await proxy.stop();
      await bucket.destroy().catch(() => undefined);
    }
  }
  return counts;
}

const sum = (m: Map<string, number> | undefined): number =>
  m === undefined ? 0 : [...m.values()].reduce((a, b) => a + b, 0);

function renderCounts(counts: RequestCounts, names: readonly RegistryName[]): string {
  const out: string[] = [];
  for (const kind of ['push', 'pull'] as const) {
    const byName = counts[kind];
    const ops = [...new Set(names.flatMap((n) => [...(byName.get(n)?.keys() ?? [])]))].sort();
    if (ops.length === 0) continue;
    const header = [
      `S3 requests per docker ${kind}`,
      ...names.map((n) => (n === 'wharf' ? 'Wharf' : 'Distribution')),
    ];
    const body = ops.map((op) => [op, ...names.map((n) => String(byName.get(n)?.get(op) ?? 0))]);
    body.push(['total', ...names.map((n) => String(sum(byName.get(n))))]);
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
    const line = (cells: string[]): string =>
      cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
    out.push(line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line), '');
  }
  return out.join('\n').trimEnd();
}

// ---------------------------------------------------------------------------------------------
// S3 requests per registry operation

/** Labels of the operations `countOperations` performs, in order. */
export const COUNTED_OPERATIONS = [
  'HEAD blob (missing)',
  'POST upload',
  'PATCH 1 MiB (no Content-Range)',
  'PUT ?digest (complete)',
  'PATCH 12 MiB (multipart)',
  'PUT ?digest (complete, 12 MiB)',
  'POST+PUT ?digest (monolithic)',
  'PUT manifest by tag',
  'HEAD blob',
  'GET blob (1 MiB)',
  'GET manifest by tag',
  'GET manifest by digest',
  'HEAD manifest by tag',
] as const;

/**
 * Performs one of each registry operation a `docker push`/`pull` is made of, on a fresh repository, and
 * returns the S3 requests each one cost (operation → S3 operation → count). Reads come more than a
 * second after the push, past Wharf's touch-skip window, as they would from another client.
 */
export async function countOperations(
  base: string,
  proxy: CountingProxy,
  repo = 'bench/ops',
  logs?: Map<string, string[]>,
): Promise<Map<string, Map<string, number>>> {
  const out = new Map<string, Map<string, number>>();
  const counted = async (
    label: (typeof COUNTED_OPERATIONS)[number],
    fn: () => Promise<Reply>,
    want: number,
  ) => {
    // Let background work of the previous operation (a download's touch) land first.
    await new Promise((r) => setTimeout(r, 200));
    proxy.reset();
    const reply = await fn();
    if (reply.status !== want) throw new Error(`${label}: expected ${want}, got ${reply.status}`);
    await new Promise((r) => setTimeout(r, 200));
    out.set(label, proxy.counts);
    logs?.set(label, proxy.log);
    return reply;
  };
  const layer = randomBytes(MiB);
  const big = randomBytes(12 * MiB);
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', n: randomBytes(8).toString('hex') }),
  );
  const [layerDigest, bigDigest, configDigest] = [layer, big, config].map(digestOf) as [
    string,
    string,
    string,
  ];
  const at = (loc: string | undefined, digest?: string): string => {
    if (loc === undefined) throw new Error('no Location');
    const url = new URL(loc, base);
    if (digest !== undefined) url.searchParams.set('digest', digest);
    return url.toString();
  };
  const octets = { 'content-type': 'application/octet-stream' };

  await counted('HEAD blob (missing)', () => send('HEAD', `${base}/v2/${repo}/blobs/${layerDigest}`), 404);
  let started = await counted(
    'POST upload',
    () => send('POST', `${base}/v2/${repo}/blobs/uploads/`, { 'content-length': 0 }),
    202,
  );
  let patched = await counted(
    'PATCH 1 MiB (no Content-Range)',
    () => send('PATCH', at(started.headers.location), octets, layer),
    202,
  );
  await counted(
    'PUT ?digest (complete)',
    () => send('PUT', at(patched.headers.location, layerDigest), { 'content-length': 0 }),
    201,
  );
  started = await send('POST', `${base}/v2/${repo}/blobs/uploads/`, { 'content-length': 0 });
  patched = await counted(
    'PATCH 12 MiB (multipart)',
    () => send('PATCH', at(started.headers.location), octets, big),
    202,
  );
  await counted(
    'PUT ?digest (complete, 12 MiB)',
    () => send('PUT', at(patched.headers.location, bigDigest), { 'content-length': 0 }),
    201,
  );
  await counted(
    'POST+PUT ?digest (monolithic)',
    async () => {
      const post = await send('POST', `${base}/v2/${repo}/blobs/uploads/`, { 'content-length': 0 });
      return send('PUT', at(post.headers.location, configDigest), octets, config);
    },
    201,
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: bigDigest, size: big.length },
      ],
    }),
  );
  const manifestDigest = digestOf(manifest);
  await counted(
    'PUT manifest by tag',
    () => send('PUT', `${base}/v2/${repo}/manifests/latest`, { 'content-type': OCI_MANIFEST }, manifest),
    201,
  );
  // Past the touch-skip window (1 s), as a read by another client would come.
  await new Promise((r) => setTimeout(r, 1200));
  await counted('HEAD blob', () => send('HEAD', `${base}/v2/${repo}/blobs/${layerDigest}`), 200);
  // A pull comes from another client, not right after that HEAD.
  await new Promise((r) => setTimeout(r, 1200));
  await counted('GET blob (1 MiB)', () => send('GET', `${base}/v2/${repo}/blobs/${layerDigest}`), 200);
  const accept = { accept: OCI_MANIFEST };
  await counted('GET manifest by tag', () => send('GET', `${base}/v2/${repo}/manifests/latest`, accept), 200);
  await counted(
    'GET manifest by digest',
    () => send('GET', `${base}/v2/${repo}/manifests/${manifestDigest}`, accept),
    200,
  );
  await counted(
    'HEAD manifest by tag',
    () => send('HEAD', `${base}/v2/${repo}/manifests/latest`, accept),
    200,
  );
  return out;
}

/** A table of totals per operation, then what each total is made of, one line per registry. */
export function renderOperationCounts(byName: ReadonlyMap<string, Map<string, Map<string, number>>>): string {
  const names = [...byName.keys()];
  const header = ['S3 requests per registry operation', ...names];
  const body = COUNTED_OPERATIONS.map((op) => [
    op,
    ...names.map((n) => {
      const m = byName.get(n)?.get(op);
      return m === undefined ? '-' : String(sum(m));
    }),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const made: string[] = ['', 'made of:'];
  for (const op of COUNTED_OPERATIONS) {
    made.push(`  ${op}`);
    for (const n of names) {
      const m = byName.get(n)?.get(op);
      if (m === undefined || m.size === 0) continue;
      const parts = [...m.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${v} ${k}`);
      made.push(`    ${n.padEnd(Math.max(...names.map((x) => x.length)))}  ${parts.join(', ')}`);
    }
  }
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line), ...made].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Pull through the presigned redirect

/** GET the blob from the registry (307), then from the Location; checks the length. */
async function pullRedirected(base: string, repo: string, c: Content): Promise<void> {
  const first = await wire({ method: 'GET', url: `${base}/v2/${repo}/blobs/${c.digest}` });
  if (first.status !== 307) throw new Error(`GET blob: expected 307, got ${first.status}`);
  const location = first.headers.location;
  if (location === undefined) throw new Error('GET blob: 307 without Location');
  const reply = await wire({ method: 'GET', url: location, discardBody: true });
  if (reply.status !== 200) throw new Error(`GET presigned URL: status ${reply.status}`);
  if (reply.bodyBytes !== c.size)
    throw new Error(`GET presigned URL: ${reply.bodyBytes} bytes, want ${c.size}`);
}

async function benchRedirectPull(regs: readonly Registry[], c: Content, reps: number): Promise<Row[]> {
  const row: Row = {
    metric: 'blob pull via presigned redirect',
    unit: 'MB/s',
    compare: 'higher',
    target: 1.0,
    values: {},
    notes: {},
  };
  process.stdout.write(`blob pull via presigned redirect: ${reps} x ${c.size / MiB} MiB per registry\n`);
  const result = await interleaved(regs, reps, async (reg) => {
    const s = await timed(reg.server.pid, () => pullRedirected(reg.server.url, 'bench/redirect', c));
    process.stdout.write(`  ${reg.name.padEnd(12)} ${fmt(c.size / 1e6 / s.seconds)} MB/s\n`);
    return s;
  });
  for (const [name, samples] of result.samples) {
    const m = medianSample(samples);
    row.values[name] = c.size / 1e6 / m.seconds;
    row.notes![name] =
      `runs ${samples.map((s) => fmt(c.size / 1e6 / s.seconds)).join(', ')} MB/s (RGW serves the bytes)`;
  }
  for (const [name, err] of result.errors) row.notes![name] = err;
  return [row];
}

// ---------------------------------------------------------------------------------------------
// RGW's CPU, which is part of every S3 measurement and not "other load"

const RGW_COMMANDS = new Set(['radosgw', 'ceph-osd', 'ceph-mon']);

function rgwCpuSeconds(): number {
  let total = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (RGW_COMMANDS.has(readFileSync(`/proc/${name}/comm`, 'utf8').trim()))
        total += cpuUsage(Number(name)).seconds;
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

// ---------------------------------------------------------------------------------------------

/** Filesystem against S3 for Wharf: the same metric from the filesystem pass and the S3 pass. */
function renderStorageComparison(fsRows: readonly Row[], s3Rows: readonly Row[]): string {
  const header = ['metric (Wharf)', 'filesystem', 'S3', 'S3 vs fs'];
  const body: string[][] = [];
  for (const fs of fsRows) {
    if (fs.compare === 'none') continue;
    const s3 = s3Rows.find((r) => r.metric === fs.metric);
    const a = fs.values.wharf;
    const b = s3?.values.wharf;
    if (a === undefined || b === undefined) continue;
    const ratio = fs.compare === 'higher' ? b / a : a / b;
    body.push([`${fs.metric} (${fs.unit})`, fmt(a), fmt(b), `${ratio.toFixed(2)}x`]);
  }
  if (body.length === 0) return '';
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

/** Runs the S3 benchmark and prints its summary; resolves to the exit code. */
export async function benchS3(opts: S3BenchOptions): Promise<number> {
  // spawnRegistry adds an exit listener per server, and this run starts more than ten.
  process.setMaxListeners(Math.max(process.getMaxListeners(), 64));
  const t0 = performance.now();
  const started = new Date();
  const loadStart = loadavg();
  const otherLoad = watchOtherLoad();
  const rgw0 = rgwCpuSeconds();
  process.stdout.write(`${opts.command}\n`);
  const read = readS3TestSettings();
  if (!('settings' in read)) {
    process.stderr.write(
      `bench --storage s3 needs an S3 server: ${read.missing}\n` +
        'e.g. eval "$(test/s3/start-rgw.sh /tmp/wharf-rgw)" (or: source /tmp/wharf-rgw/env if it runs)\n',
    );
    return 2;
  }
  const settings = read.settings;
  if (opts.loadTool.message !== undefined && opts.sections.has('manifest'))
    process.stdout.write(`NOTE: ${opts.loadTool.message}\n`);

  const workDir = await mkdtemp(join(tmpdir(), 'wharf-bench-s3-data-'));
  const s3Rows: Row[] = [];
  const fsRows: Row[] = [];
  const problems: string[] = [];
  const skipped: string[] = [];
  const describes: string[] = [];
  const buckets = new Map<RegistryName, TestBucket>();
  let counts: RequestCounts | undefined;
  const cleanup = async (): Promise<void> => {
    await Promise.all([...owned].map((s) => s.stop()));
    owned.clear();
    await stopAll();
    for (const b of buckets.values()) await b.destroy().catch(() => undefined);
    await rm(workDir, { recursive: true, force: true });
  };
  const onSignal = (): void => {
    void cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const run = async (section: string, into: Row[], fn: () => Promise<Row[]>): Promise<void> => {
    try {
      into.push(...(await fn()));
    } catch (err) {
      if (err instanceof SectionSkipped) {
        skipped.push(`${section}: ${err.message}`);
        process.stdout.write(`${section} skipped: ${err.message}\n`);
        return;
      }
      problems.push(`${section}: ${errorText(err)}`);
      process.stdout.write(
        `${section} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
    }
  };

  try {
    let from = opts.wharfFrom;
    let note = '';
    if (from === 'dist') {
      const problem = prepareDist(opts.build);
      if (problem !== undefined) {
        process.stdout.write(`  ${problem}; running Wharf from source via tsx\n`);
        note = ` (fell back: ${problem})`;
        from = 'source';
      }
    }
    const launch: Launcher = { from, note, distributionCache: opts.distributionCache };
    const start = (name: RegistryName, redirect = false): Promise<Registry> => {
      const bucket = buckets.get(name)!;
      const target = targetOf(settings, bucket.name);
      return name === 'wharf'
        ? startS3Wharf(launch, target, redirect)
        : startS3Distribution(launch, target, redirect);
    };

    // Pass 1: both registries on S3.
    const regs: Registry[] = [];
    for (const name of opts.registries) {
      try {
        process.stdout.write(`starting ${name} on s3 ...\n`);
        buckets.set(name, await createTestBucket(settings, `bench-${name}`));
        regs.push(await start(name));
      } catch (err) {
        problems.push(`${name} did not start: ${errorText(err)}`);
        process.stdout.write(
          `  ${name} did not start: ${err instanceof Error ? err.message : String(err)}\n`,
        );
      }
    }
    for (const reg of regs) {
      process.stdout.write(`  ${reg.name}: ${reg.describe}, pid ${reg.server.pid}, ${reg.server.url}\n`);
      describes.push(`${reg.name.padEnd(13)} ${reg.describe}`);
    }
    if (regs.length === 0) throw new Error('no registry started');
    const emptyAll = async (): Promise<void> => {
      for (const b of buckets.values()) await emptyBucket(b);
    };

    let base: Content | undefined;
    const blob = async (): Promise<Content> => {
      if (base === undefined) {
        process.stdout.write(`writing a ${opts.sizeMiB} MiB random file ...\n`);
        base = await writeRandomFile(join(workDir, 'blob.bin'), Math.round(opts.sizeMiB * MiB));
      }
      return base;
    };
    const has = (s: string): boolean => opts.sections.has(s);

    const blobSections = async (pass: readonly Registry[], into: Row[], label: string): Promise<void> => {
      let pushed: Awaited<ReturnType<typeof benchPush>>['pushed'] | undefined;
      if (has('push'))
        await run(`push (${label})`, into, async () => {
          const result = await benchPush(pass, await blob(), {
            reps: opts.reps,
            chunkSize: Math.round(opts.chunkMiB * MiB),
          });
          pushed = result.pushed;
          return result.rows;
        });
      if (has('pull'))
        await run(`pull (${label})`, into, async () => {
          if (pushed === undefined || pushed.size < pass.length) {
            const c = await variant(await blob(), `pull ${label}`);
            pushed = new Map();
            for (const reg of pass) {
              await pushMonolithic(reg.server.url, 'bench/pull', c);
              pushed.set(reg.name, { repo: 'bench/pull', content: c });
            }
          }
          return benchPull(pass, pushed, opts.pullReps);
        });
    };

    await blobSections(regs, s3Rows, 's3');
    if (has('pull'))
      await run('pull via redirect (s3)', s3Rows, async () => {
        // Redirecting instances on the same buckets, started for this measurement only.
        const c = await variant(await blob(), 'redirect');
        const redirecting: Registry[] = [];
        try {
          for (const reg of regs) {
            const r = await start(reg.name, true);
            redirecting.push(r);
            await pushMonolithic(r.server.url, 'bench/redirect', c);
          }
          return await benchRedirectPull(redirecting, c, opts.pullReps);
        } finally {
          for (const r of redirecting) await stopOwned(r.server);
        }
      });
    await emptyAll();
    if (has('manifest'))
      await run('manifest (s3)', s3Rows, () =>
        benchManifest(regs, {
          tool: opts.loadTool.tool,
          concurrency: opts.concurrency,
          seconds: opts.duration,
          warmupSeconds: 2,
          workDir,
        }),
      );
    if (has('docker'))
      await run('docker (s3)', s3Rows, async () => {
        const why = await dockerUnavailable();
        if (why !== undefined) throw new SectionSkipped(why);
        return benchDocker(regs, {
          layers: 5,
          layerSize: 20 * MiB,
          pushReps: opts.dockerPushReps,
          pullReps: opts.dockerPullReps,
          workDir,
        });
      });
    await emptyAll();
    if (has('memory'))
      await run('memory (s3)', s3Rows, async () => {
        if (base !== undefined) await rm(base.path, { force: true });
        base = undefined;
        process.stdout.write(`writing a ${opts.memoryMiB} MiB random file ...\n`);
        const big = await writeRandomFile(join(workDir, 'memory.bin'), Math.round(opts.memoryMiB * MiB));
        try {
          return await benchMemory(
            regs.map((r) => () => start(r.name)),
            big,
          );
        } finally {
          await rm(big.path, { force: true });
        }
      });
    await emptyAll();
    if (has('requests'))
      await run('requests (s3)', [], async () => {
        const why = await dockerUnavailable();
        if (why !== undefined) skipped.push(`requests per docker push/pull: ${why}`);
        counts = await countRequests(settings, opts.registries, launch, workDir, why === undefined);
        const row: Row = {
          metric: `S3 requests per docker push, ${REQUEST_LAYERS} layers`,
          unit: 'requests',
          compare: 'lower',
          target: 1.0,
          values: {},
        };
        for (const [name, m] of counts.push) row.values[name] = sum(m);
        s3Rows.push(row);
        return [];
      });
    for (const reg of regs) {
      if (problems.length > 0 && reg.server.output().trim() !== '')
        process.stdout.write(
          `--- ${reg.name} output (last 2 KiB) ---\n${reg.server.output().slice(-2048)}\n`,
        );
      await stopOwned(reg.server);
    }

    // Pass 2: Wharf on the filesystem, for the S3/filesystem ratio.
    if (opts.registries.includes('wharf') && (has('push') || has('pull') || has('manifest'))) {
      process.stdout.write('starting wharf on the filesystem ...\n');
      try {
        const fsWharf = await startBenchWharf({ from, build: false });
        describes.push(`wharf (fs)    ${fsWharf.describe}, filesystem ${fsWharf.server.root}`);
        await blobSections([fsWharf], fsRows, 'filesystem');
        if (has('manifest'))
          await run('manifest (filesystem)', fsRows, () =>
            benchManifest([fsWharf], {
              tool: opts.loadTool.tool,
              concurrency: opts.concurrency,
              seconds: opts.duration,
              warmupSeconds: 2,
              workDir,
            }),
          );
      } catch (err) {
        problems.push(`filesystem wharf: ${errorText(err)}`);
      }
    }
  } finally {
    await cleanup();
  }

  // On S3 the issue asks for Wharf/Distribution >= 1.0 on every measurement.
  for (const row of s3Rows) if (row.target !== undefined) row.target = 1.0;
  const elapsed = (performance.now() - t0) / 1000;
  const rgwCores = (rgwCpuSeconds() - rgw0) / elapsed;
  const other = otherLoad.stop();
  // RGW works for the bench, so its CPU is not noise (though other users of it may add some).
  const otherMean = Math.max(0, other.mean - rgwCores);
  const noisy = otherMean > 0.2;
  const sha =
    hashStats.seconds > 0
      ? `, client sha256 over page-cached file ${(hashStats.bytes / 1e6 / hashStats.seconds).toFixed(0)} MB/s`
      : '';
  const comparison = renderStorageComparison(fsRows, s3Rows);
  const summary = [
    '',
    '================= wharf bench summary: S3 ===================',
    `command:      ${opts.command}`,
    `date:         ${started.toISOString()}   elapsed ${elapsed.toFixed(0)} s`,
    `machine:      nproc ${cpus().length}, node ${process.version}, linux ${release()}, ` +
      `loadavg at start ${loadStart.map((l) => l.toFixed(2)).join(' ')}`,
    `S3:           ${settings.endpoint} (Ceph RGW of test/s3/start-rgw.sh), one bucket per registry, path style; ` +
      `RGW used ${rgwCores.toFixed(2)} cores on average`,
    `other load:   ${otherMean.toFixed(2)} cores busy on average (RGW not counted), ${other.max.toFixed(2)} at most ` +
      `(RGW counted)${noisy ? '  -> NOISY: numbers are rough' : ''}`,
    ...describes,
    `sizes:        blob ${opts.sizeMiB} MiB, chunk ${opts.chunkMiB} MiB, memory blob ${opts.memoryMiB} MiB; MB = 10^6 bytes${sha}`,
    `manifest:     ${opts.loadTool.tool === 'wrk' ? 'wrk -t1' : 'node load generator'}, c=${opts.concurrency}, ${opts.duration} s after 2 s warm-up`,
    'redirects:    off for every measurement but "via presigned redirect" (the registry streams the bytes)',
    `ratio:        W vs D = Wharf/Distribution for rates, Distribution/Wharf for times and requests: above 1 means Wharf is better`,
    '',
    renderTable(s3Rows),
    ...(comparison === ''
      ? []
      : ['', 'Wharf, filesystem against S3 (S3 vs fs above 1 means S3 is faster):', comparison]),
    ...(counts === undefined
      ? []
      : [
          '',
          renderCounts(
            counts,
            opts.registries.filter((n) => counts!.push.has(n)),
          ),
          '',
          renderOperationCounts(
            new Map([...counts.ops].map(([n, m]) => [n === 'wharf' ? 'Wharf' : 'Distribution', m] as const)),
          ),
        ]),
    ...(skipped.length > 0 ? ['', 'skipped:', ...skipped.map((p) => `  ${p}`)] : []),
    ...(problems.length > 0 ? ['', 'problems:', ...problems.map((p) => `  ${p}`)] : []),
    '=============================================================',
  ];
  process.stdout.write(`${summary.join('\n')}\n`);
  return problems.length > 0 ? 1 : 0;
}
