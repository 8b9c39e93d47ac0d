// `node --import tsx bench/gc.ts [--storage s3]`: garbage collection on the filesystem driver, or on the
// S3 server of test/s3/start-rgw.sh (TEST_S3_* settings, a bucket of its own).
//  1. GC time on a generated tree (default 100 repositories, 2,000 manifests, 10,000 blobs, a tenth of
//     them garbage): a dry run, then a real run that deletes the garbage, then a run with nothing to do.
//     On S3 each run goes through a counting proxy: requests by operation, and how many keys its
//     listings returned against the keys in the bucket (issue 4: no more than one whole listing per run).
//  2. Pull latency (each HTTP request of manifest + config + layers pulls) against `wharf serve` in its
//     own process, with and without GC looping inside it (`gc.interval` 10 ms, as the server schedules
//     it), p50/p99 and ratio, in alternating rounds (--duration seconds in total per side).
// The tree is written through the storage driver, not through HTTP, to keep generation short.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { createFilesystemDriver } from '../storage-drivers/filesystem/driver.js';
import { PathNotFoundError, type StorageDriver } from '../storage-drivers/driver.js';
import { createS3Driver } from '../storage-drivers/s3/driver.js';
import { collectGarbage } from '../src/gc/collect.js';
import { forEachLimit } from '../src/gc/pool.js';
import { parseDigest, type Digest } from '../src/registry/digest.js';
import { pathFor } from '../src/registry/paths.js';
import { startWharf, wharfS3Env, type RunningServer } from '../test/helpers/processes.js';
import { createTestBucket, readS3TestSettings, type TestBucket } from '../test/s3/env.js';
import { CountingProxy, emptyBucket } from './s3.js';

const { values: args } = parseArgs({
  options: {
    repos: { type: 'string', default: '100' },
    manifests: { type: 'string', default: '2000' },
    blobs: { type: 'string', default: '10000' },
    'layer-kib': { type: 'string', default: '4' },
    duration: { type: 'string', default: '20' },
    concurrency: { type: 'string', default: '8' },
    root: { type: 'string' },
    storage: { type: 'string', default: 'fs' },
    'skip-pull': { type: 'boolean', default: false },
  },
});
if (args.storage !== 'fs' && args.storage !== 's3') throw new Error('--storage is fs or s3');
const ON_S3 = args.storage === 's3';
const REPOS = Number(args.repos);
const MANIFESTS = Number(args.manifests);
const BLOBS = Number(args.blobs);
const LAYER_BYTES = Number(args['layer-kib']) * 1024;
const DURATION_MS = Number(args.duration) * 1000;
const CONCURRENCY = Number(args.concurrency);

const MT = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar',
};

function digestOf(data: Buffer): Digest {
  const d = parseDigest(`sha256:${createHash('sha256').update(data).digest('hex')}`);
  if (!d) throw new Error('bad digest');
  return d;
}

interface Image {
  repo: string;
  tag: string;
  digest: string;
  blobs: string[];
}

/**
 * Writes the tree: per manifest a config of its own and 3 layers drawn from a shared set, so that
 * manifests + configs + layers + garbage = BLOBS. A tenth of the blobs are garbage: unreferenced
 * layers linked into some repository.
 */
async function generate(driver: StorageDriver): Promise<Image[]> {
  const garbage = Math.floor(BLOBS / 10);
  const layerCount = BLOBS - garbage - 2 * MANIFESTS;
  if (layerCount < 3) throw new Error('too few blobs for that many manifests');
  const layers = Array.from({ length: layerCount }, () => randomBytes(LAYER_BYTES));
  const layerDigests = layers.map(digestOf);
  const writes: { path: string; content: Buffer | string }[] = [];
  const link = (repo: string, d: Digest) =>
    writes.push({ path: pathFor({ kind: 'layerLink', name: repo, digest: d }), content: d.toString() });
  layers.forEach((data, i) => {
    const d = layerDigests[i];
    if (d) writes.push({ path: pathFor({ kind: 'blobData', digest: d }), content: data });
  });

  const images: Image[] = [];
  for (let i = 0; i < MANIFESTS; i++) {
    const repo = `bench/repo-${i % REPOS}`;
    const config = Buffer.from(
      JSON.stringify({ architecture: 'amd64', os: 'linux', n: i, r: randomBytes(8).toString('hex') }),
    );
    const configDigest = digestOf(config);
    // Every layer is used at least once (3 × MANIFESTS ≥ layers), most by two manifests.
    const chosen = [0, 1, 2]
      .map((j) => (3 * i + j) % layerCount)
      .map((k) => ({
        data: layers[k] ?? Buffer.alloc(0),
        digest: layerDigests[k] ?? configDigest,
      }));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.manifest,
        config: { mediaType: MT.config, digest: configDigest.toString(), size: config.length },
        layers: chosen.map((l) => ({
          mediaType: MT.layer,
          digest: l.digest.toString(),
          size: l.data.length,
        })),
      }),
    );
    const digest = digestOf(manifest);
    writes.push({ path: pathFor({ kind: 'blobData', digest: configDigest }), content: config });
    writes.push({ path: pathFor({ kind: 'blobData', digest }), content: manifest });
    link(repo, configDigest);
    for (const l of chosen) link(repo, l.digest);
    writes.push({
      path: pathFor({ kind: 'manifestRevisionLink', name: repo, digest }),
      content: digest.toString(),
    });
    const tag = `t${Math.floor(i / REPOS)}`;
    writes.push({ path: pathFor({ kind: 'tagCurrentLink', name: repo, tag }), content: digest.toString() });
    writes.push({
      path: pathFor({ kind: 'tagIndexEntryLink', name: repo, tag, digest }),
      content: digest.toString(),
    });
    images.push({
      repo,
      tag,
      digest: digest.toString(),
      blobs: [configDigest.toString(), ...chosen.map((l) => l.digest.toString())],
    });
  }
  for (let i = 0; i < garbage; i++) {
    const data = randomBytes(LAYER_BYTES);
    const d = digestOf(data);
    writes.push({ path: pathFor({ kind: 'blobData', digest: d }), content: data });
    link(`bench/repo-${i % REPOS}`, d);
  }
  let done = 0;
  await forEachLimit(writes, 32, async (w) => {
    await driver.putContent(w.path, w.content);
    if (++done % 5000 === 0) process.stderr.write(`\r  written ${done}/${writes.length}`);
  });
  process.stderr.write('\r\x1b[2K');
  return images;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** Pulls random images for `durationMs` with CONCURRENCY loops; returns every request's latency (ms). */
async function pullLoad(
  base: string,
  images: Image[],
  durationMs: number,
): Promise<{ latencies: number[]; errors: number }> {
  const latencies: number[] = [];
  let errors = 0;
  const deadline = Date.now() + durationMs;
  const timed = async (path: string, accept?: string) => {
    const started = performance.now();
    const res = await fetch(`${base}${path}`, accept ? { headers: { accept } } : {});
    await res.arrayBuffer();
    latencies.push(performance.now() - started);
    if (res.status !== 200) errors++;
  };
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < deadline) {
        const image = images[Math.floor(Math.random() * images.length)];
        if (!image) continue;
        await timed(`/v2/${image.repo}/manifests/${image.tag}`, MT.manifest);
        for (const b of image.blobs) await timed(`/v2/${image.repo}/blobs/${b}`);
      }
    }),
  );
  return { latencies, errors };
}

/** Where the tree lives: a filesystem root or a bucket. */
interface Place {
  readonly describe: string;
  readonly driver: StorageDriver;
  /** Between GC and S3 (S3 only). */
  readonly proxy?: CountingProxy;
  readonly bucket?: TestBucket;
  /** `wharf serve` in its own process (the client must not share the server's event loop). */
  serve(gcInterval: string | undefined): Promise<RunningServer>;
  /** Keys in the bucket (S3 only). */
  keys(): Promise<number | undefined>;
  close(): Promise<void>;
}

function serveEnv(gcInterval: string | undefined): Record<string, string> {
  return {
    WHARF_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED: 'false',
    ...(gcInterval !== undefined && { WHARF_GC_INTERVAL: gcInterval, WHARF_GC_GRACE: '1h' }),
  };
}

async function filesystemPlace(): Promise<Place> {
  const root = args.root ?? (await mkdtemp(join(tmpdir(), 'wharf-bench-gc-')));
  return {
    describe: `filesystem at ${root}`,
    driver: createFilesystemDriver({ rootdirectory: root }),
    serve: (gcInterval) => startWharf({ root, env: serveEnv(gcInterval) }),
    keys: () => Promise.resolve(undefined),
    close: async () => {
      if (args.root === undefined) await rm(root, { recursive: true, force: true });
    },
  };
}

async function s3Place(): Promise<Place> {
  const read = readS3TestSettings();
  if (!('settings' in read)) throw new Error(`--storage s3: ${read.missing}`);
  const { settings } = read;
  const bucket = await createTestBucket(settings, 'bench-gc');
  const proxy = new CountingProxy(new URL(settings.endpoint));
  await proxy.start();
  const target = {
    bucket: bucket.name,
    region: settings.region,
    regionendpoint: settings.endpoint,
    accesskey: settings.accessKey,
    secretkey: settings.secretKey,
  };
  return {
    describe: `S3 bucket ${bucket.name} at ${settings.endpoint}`,
    // GC goes through the counting proxy.
    driver: createS3Driver({ ...bucket.params, regionendpoint: proxy.url }),
    proxy,
    bucket,
    serve: (gcInterval) =>
      startWharf({ storage: 's3', env: { ...wharfS3Env(target), ...serveEnv(gcInterval) } }),
    keys: async () => {
      let keys = 0;
      let token: string | undefined;
      do {
        const page = await bucket.client.send(
          new ListObjectsV2Command({
            Bucket: bucket.name,
            ...(token !== undefined && { ContinuationToken: token }),
          }),
        );
        keys += page.KeyCount ?? 0;
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token !== undefined);
      return keys;
    },
    close: async () => {
      await proxy.stop();
      await emptyBucket(bucket);
      await bucket.destroy();
    },
  };
}

/** When the last GC run recorded in storage started; a change means a run finished. */
async function lastRunStart(driver: StorageDriver): Promise<string | undefined> {
  try {
    const record = JSON.parse((await driver.getContent(pathFor({ kind: 'gcLastRun' }))).toString('utf8')) as {
      startedAt: string;
    };
    return record.startedAt;
  } catch (err) {
    if (err instanceof PathNotFoundError || err instanceof SyntaxError) return undefined;
    throw err;
  }
}

async function main(): Promise<void> {
  const place = ON_S3 ? await s3Place() : await filesystemPlace();
  const driver = place.driver;
  const lines: string[] = [];
  const out = (line: string) => {
    lines.push(line);
    process.stderr.write(`${line}\n`);
  };
  try {
    out(
      `gc bench: ${REPOS} repositories, ${MANIFESTS} manifests, ${BLOBS} blobs (${LAYER_BYTES / 1024} KiB layers), ${place.describe}`,
    );
    const t0 = performance.now();
    const images = await generate(driver);
    out(`  tree generated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await new Promise((r) => setTimeout(r, 1100)); // past GC's clock slack, so grace 0 sees it all as old

    const timeRun = async (label: string, dryRun: boolean) => {
      const keys = await place.keys();
      place.proxy?.reset();
      const summary = await collectGarbage(driver, { graceMs: 0, dryRun });
      out(
        `  ${label.padEnd(28)} ${(summary.durationMs / 1000).toFixed(2)} s  ` +
          `(${summary.blobs.total} blobs, ${summary.manifests.total} manifests, removed ${summary.blobs.removed} blobs, ${summary.linksRemoved} links)`,
      );
      const proxy = place.proxy;
      if (proxy !== undefined && keys !== undefined) {
        const ops = [...proxy.counts.entries()].sort(([, a], [, b]) => b - a);
        out(
          `    S3: ${proxy.total()} requests (${ops.map(([op, n]) => `${n} ${op}`).join(', ')}); ` +
            `walks listed ${proxy.walkedKeys} keys of the ${keys} in the bucket ` +
            `(${(proxy.walkedKeys / keys).toFixed(2)} whole listings), per-path listings ${proxy.listedKeys - proxy.walkedKeys} more`,
        );
      }
      return summary;
    };
    await timeRun('gc --dry-run', true);
    await timeRun('gc (removes the garbage)', false);
    await timeRun('gc (nothing left to remove)', false);
    if (args['skip-pull']) return;

    // Alternating rounds, so that neither side always runs on a colder cache or a busier machine.
    const samples = { without: [] as number[], during: [] as number[] };
    let errors = 0;
    let gcRuns = 0;
    for (let round = 0; round < 2; round++) {
      for (const kind of ['without', 'during'] as const) {
        const server = await place.serve(kind === 'during' ? '10ms' : undefined);
        try {
          await pullLoad(server.url, images.slice(0, 50), 1000); // warm-up, not counted
          const before = await lastRunStart(driver);
          const result = await pullLoad(server.url, images, DURATION_MS / 2);
          samples[kind].push(...result.latencies);
          errors += result.errors;
          if ((await lastRunStart(driver)) !== before) gcRuns++;
        } finally {
          await server.stop();
        }
      }
    }
    const report = (label: string, latencies: number[]) => {
      latencies.sort((a, b) => a - b);
      out(
        `  pull ${label.padEnd(12)} ${latencies.length} requests, p50 ${percentile(latencies, 50).toFixed(2)} ms, ` +
          `p99 ${percentile(latencies, 99).toFixed(2)} ms`,
      );
      return percentile(latencies, 99);
    };
    const without = report('without GC', samples.without);
    const withGc = report('during GC', samples.during);
    out(
      `  p99 during GC / without: ${(withGc / without).toFixed(2)}x (target <= 2x); ` +
        `errors ${errors}; rounds in which a GC run finished: ${gcRuns}/2`,
    );
  } finally {
    out(
      `  machine: ${cpus().length} cpus, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')} at the end`,
    );
    process.stdout.write(`${lines.join('\n')}\n`);
    await place.close();
  }
}

await main();
