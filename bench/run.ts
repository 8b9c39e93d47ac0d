// `npm run bench`: Wharf against CNCF Distribution 2.8, side by side on loopback, as ratios.
// See bench/README.md for what each number means and how to shorten a run.
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { benchPull, benchPush } from './blobs.js';
import { pushMonolithic } from './client.js';
import { hashStats, MiB, variant, writeRandomFile, type Content } from './content.js';
import { benchDocker, dockerUnavailable } from './docker.js';
import { benchManifest, detectLoadTool } from './manifest.js';
import { benchMemory } from './memory.js';
import { watchOtherLoad } from './proc.js';
import { errorText, renderTable, type Row } from './report.js';
import {
  startBenchDistribution,
  startBenchWharf,
  stopAll,
  type Registry,
  type RegistryName,
} from './servers.js';

/** A section that cannot run on this machine (no dockerd): reported, not a failure. */
class SectionSkipped extends Error {}

const SECTIONS = ['push', 'pull', 'manifest', 'docker', 'memory', 'requests'] as const;
type Section = (typeof SECTIONS)[number];

const USAGE = `usage: npm run bench -- [options]
  --storage filesystem|s3  s3: both registries on the S3 server in TEST_S3_* (test/s3/start-rgw.sh), each
                         in its own bucket, plus Wharf on the filesystem for the S3/fs ratio (see bench/README.md)
  --only LIST            sections to run, of ${SECTIONS.join(',')} (default: all; requests: S3 only)
  --size-mib N           blob size for push/pull (default 256; 64 on s3: RGW's memstore holds it all in RAM)
  --chunk-mib N          PATCH size for the chunked push (default 16)
  --memory-mib N         blob size for the memory section (default 1024; 256 on s3)
  --reps N               pushes per registry and mode (default 3)
  --pull-reps N          blob pulls per registry (default 5)
  --duration S           seconds of manifest load per registry and kind (default 10)
  --concurrency N        manifest GET connections (default 32)
  --docker-push-reps N   docker pushes per registry (default 3)
  --docker-pull-reps N   docker pulls per registry (default 3)
  --registries LIST      of wharf,distribution (default both)
  --wharf-from dist|source  built output (default; runs npm run build first) or tsx
  --no-build             use dist/ as it is
  --distribution-no-cache  run Distribution without its inmemory blob descriptor cache
`;

function parse(): {
  sections: Set<Section>;
  sizeMiB: number;
  chunkMiB: number;
  memoryMiB: number;
  reps: number;
  pullReps: number;
  duration: number;
  concurrency: number;
  dockerPushReps: number;
  dockerPullReps: number;
  registries: RegistryName[];
  wharfFrom: 'dist' | 'source';
  build: boolean;
  distributionCache: boolean;
  storage: 'filesystem' | 's3';
} {
  const { values } = parseArgs({
    options: {
      storage: { type: 'string' },
      only: { type: 'string' },
      'size-mib': { type: 'string' },
      'chunk-mib': { type: 'string' },
      'memory-mib': { type: 'string' },
      reps: { type: 'string' },
      'pull-reps': { type: 'string' },
      duration: { type: 'string' },
      concurrency: { type: 'string' },
      'docker-push-reps': { type: 'string' },
      'docker-pull-reps': { type: 'string' },
      registries: { type: 'string' },
      'wharf-from': { type: 'string' },
      'no-build': { type: 'boolean' },
      'distribution-no-cache': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const positive = (name: string, raw: string | undefined, dflt: number): number => {
    if (raw === undefined) return dflt;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${raw}`);
    return n;
  };
  const list = <T extends string>(name: string, raw: string | undefined, all: readonly T[]): T[] => {
    if (raw === undefined) return [...all];
    const items = raw.split(',').map((s) => s.trim());
    for (const item of items) {
      if (!all.includes(item as T))
        throw new Error(`--${name}: unknown ${item}; choose from ${all.join(',')}`);
    }
    return items as T[];
  };
  const storage = values.storage ?? 'filesystem';
  if (storage !== 'filesystem' && storage !== 's3')
    throw new Error(`--storage must be filesystem or s3, got ${storage}`);
  const s3 = storage === 's3';
  const from = values['wharf-from'] ?? 'dist';
  if (from !== 'dist' && from !== 'source')
    throw new Error(`--wharf-from must be dist or source, got ${from}`);
  return {
    sections: new Set(list('only', values.only, SECTIONS)),
    sizeMiB: positive('size-mib', values['size-mib'], s3 ? 64 : 256),
    chunkMiB: positive('chunk-mib', values['chunk-mib'], 16),
    memoryMiB: positive('memory-mib', values['memory-mib'], s3 ? 256 : 1024),
    reps: Math.round(positive('reps', values.reps, 3)),
    pullReps: Math.round(positive('pull-reps', values['pull-reps'], 5)),
    duration: positive('duration', values.duration, 10),
    concurrency: Math.round(positive('concurrency', values.concurrency, 32)),
    dockerPushReps: Math.round(positive('docker-push-reps', values['docker-push-reps'], 3)),
    dockerPullReps: Math.round(positive('docker-pull-reps', values['docker-pull-reps'], 3)),
    registries: list('registries', values.registries, ['distribution', 'wharf'] as const),
    wharfFrom: from,
    build: values['no-build'] !== true,
    distributionCache: values['distribution-no-cache'] !== true,
    storage,
  };
}

async function main(): Promise<void> {
  const opts = parse();
  const t0 = performance.now();
  const started = new Date();
  const command = [
    'npm run bench',
    ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : []),
  ].join(' ');
  const load = detectLoadTool();
  if (opts.storage === 's3') {
    // Loaded only here: it loads the AWS SDK, whose notice about Node 22 is noise (as in src/cli.ts).
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const { benchS3 } = await import('./s3.js');
    process.exitCode = await benchS3({ ...opts, command, loadTool: load });
    return;
  }
  const loadStart = loadavg();
  const otherLoad = watchOtherLoad();
  process.stdout.write(`${command}\n`);

  if (opts.sections.has('requests') && process.argv.some((a) => a.startsWith('--only')))
    process.stdout.write('NOTE: the requests section counts S3 requests; it runs with --storage s3\n');
  if (load.message !== undefined && opts.sections.has('manifest'))
    process.stdout.write(`NOTE: ${load.message}\n`);

  const workDir = await mkdtemp(join(tmpdir(), 'wharf-bench-data-'));
  const rows: Row[] = [];
  const problems: string[] = [];
  const skipped: string[] = [];
  const regs: Registry[] = [];
  const onSignal = (): void => {
    void stopAll()
      .then(() => rm(workDir, { recursive: true, force: true }))
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    let built = !opts.build;
    const start = async (name: RegistryName): Promise<Registry> => {
      if (name === 'distribution') return startBenchDistribution(opts.distributionCache);
      const reg = await startBenchWharf({ from: opts.wharfFrom, build: !built });
      built = true;
      return reg;
    };
    for (const name of opts.registries) {
      try {
        process.stdout.write(`starting ${name} ...\n`);
        regs.push(await start(name));
      } catch (err) {
        problems.push(`${name} did not start: ${errorText(err)}`);
        process.stdout.write(
          `  ${name} did not start: ${err instanceof Error ? err.message : String(err)}\n`,
        );
      }
    }
    for (const reg of regs)
      process.stdout.write(`  ${reg.name}: ${reg.describe}, pid ${reg.server.pid}, ${reg.server.url}\n`);
    if (regs.length === 0) throw new Error('no registry started');

    let base: Content | undefined;
    const blob = async (): Promise<Content> => {
      if (base === undefined) {
        process.stdout.write(`writing a ${opts.sizeMiB} MiB random file ...\n`);
        base = await writeRandomFile(join(workDir, 'blob.bin'), Math.round(opts.sizeMiB * MiB));
      }
      return base;
    };

    let pushed: Awaited<ReturnType<typeof benchPush>>['pushed'] | undefined;
    const run = async (section: Section, fn: () => Promise<Row[]>): Promise<void> => {
      if (!opts.sections.has(section)) return;
      try {
        rows.push(...(await fn()));
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

    await run('push', async () => {
      const result = await benchPush(regs, await blob(), {
        reps: opts.reps,
        chunkSize: Math.round(opts.chunkMiB * MiB),
      });
      pushed = result.pushed;
      return result.rows;
    });
    await run('pull', async () => {
      if (pushed === undefined || pushed.size < regs.length) {
        // Pull alone: put one blob in place first, untimed.
        const c = await variant(await blob(), 'pull');
        pushed = new Map();
        for (const reg of regs) {
          await pushMonolithic(reg.server.url, 'bench/pull', c);
          pushed.set(reg.name, { repo: 'bench/pull', content: c });
        }
      }
      return benchPull(regs, pushed, opts.pullReps);
    });
    await run('manifest', () =>
      benchManifest(regs, {
        tool: load.tool,
        concurrency: opts.concurrency,
        seconds: opts.duration,
        warmupSeconds: 2,
        workDir,
      }),
    );
    await run('docker', async () => {
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
    await run('memory', async () => {
      // The blob file is no longer needed; keep the disk use of a run bounded.
      if (base !== undefined) await rm(base.path, { force: true });
      process.stdout.write(`writing a ${opts.memoryMiB} MiB random file ...\n`);
      const big = await writeRandomFile(join(workDir, 'memory.bin'), Math.round(opts.memoryMiB * MiB));
      return benchMemory(
        regs.map((r) => () => start(r.name)),
        big,
      );
    });
    for (const reg of problems.length > 0 ? regs : []) {
      if (reg.server.output().trim() !== '') {
        process.stdout.write(
          `--- ${reg.name} output (last 2 KiB) ---\n${reg.server.output().slice(-2048)}\n`,
        );
      }
    }
  } finally {
    await stopAll();
    await rm(workDir, { recursive: true, force: true });
  }

  const elapsed = (performance.now() - t0) / 1000;
  const other = otherLoad.stop();
  const sha =
    hashStats.seconds > 0
      ? `, client sha256 over page-cached file ${(hashStats.bytes / 1e6 / hashStats.seconds).toFixed(0)} MB/s`
      : '';
  const noisy = other.mean > 0.2 || other.max > 0.8;
  const summary = [
    '',
    '==================== wharf bench summary ====================',
    `command:      ${command}`,
    `date:         ${started.toISOString()}   elapsed ${elapsed.toFixed(0)} s`,
    `machine:      nproc ${cpus().length}, node ${process.version}, linux ${release()}, ` +
      `loadavg at start ${loadStart.map((l) => l.toFixed(2)).join(' ')}`,
    `other load:   ${other.mean.toFixed(2)} cores busy on average, ${other.max.toFixed(2)} at most, with other processes than ` +
      `the bench, its servers and dockerd${noisy ? '  -> NOISY: numbers are rough' : ''}`,
    ...regs.map((r) => `${r.name.padEnd(13)} ${r.describe}`),
    `sizes:        blob ${opts.sizeMiB} MiB, chunk ${opts.chunkMiB} MiB, memory blob ${opts.memoryMiB} MiB; MB = 10^6 bytes${sha}`,
    `manifest:     ${load.tool === 'wrk' ? 'wrk -t1' : 'node load generator (bench/loadgen.ts, wrk missing)'}, c=${opts.concurrency}, ${opts.duration} s after 2 s warm-up`,
    `ratio:        W vs D = Wharf/Distribution for rates, Distribution/Wharf for times: above 1 means Wharf is better`,
    '',
    renderTable(rows),
    ...(skipped.length > 0 ? ['', 'skipped:', ...skipped.map((p) => `  ${p}`)] : []),
    ...(problems.length > 0 ? ['', 'problems:', ...problems.map((p) => `  ${p}`)] : []),
    '=============================================================',
  ];
  process.stdout.write(`${summary.join('\n')}\n`);
  if (problems.length > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
