// Starts the two registries side by side on loopback, each on a fresh temp root.
// The e2e helper starts Wharf from source (tsx) and Distribution without its blob descriptor cache;
// for fair numbers the bench runs Wharf from dist/ and Distribution as Debian ships it (cache on),
// so it spawns them itself, reusing the helper's port, readiness and config pieces.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  distributionBinary,
  distributionConfig,
  freePort,
  repoRoot,
  startWharf,
  waitForHttp,
  type RunningServer,
} from '../test/helpers/processes.js';

export type RegistryName = 'distribution' | 'wharf';

export interface Registry {
  name: RegistryName;
  /** How it was started, for the summary. */
  describe: string;
  server: RunningServer;
}

export interface WharfLaunch {
  /** 'dist' runs `node dist/src/cli.js serve`; 'source' runs it through tsx. */
  from: 'dist' | 'source';
  /** Run `npm run build` first (only for from: 'dist'). */
  build: boolean;
}

const live = new Set<RunningServer>();

/** Stops every server this module started. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((s) => s.stop()));
  live.clear();
}

function inheritedEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('WHARF_') || k.startsWith('REGISTRY_')) continue;
    env[k] = v;
  }
  return env;
}

export interface Spawned {
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  host: string;
  root: string;
  cleanup: () => Promise<void>;
}

export async function spawnRegistry(spec: Spawned): Promise<RunningServer> {
  const child = spawn(spec.command, spec.args, {
    cwd: repoRoot,
    env: spec.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-64 * 1024);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.on('error', (err) => {
      exitInfo = `failed to start: ${err.message}`;
      resolve();
    });
    child.on('exit', (code, signal) => {
      exitInfo = `exited with ${signal ?? `code ${code}`}`;
      resolve();
    });
  });
  process.on('exit', () => child.kill('SIGKILL'));
  let cleaned = false;
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    if (exitInfo === undefined) {
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    if (!cleaned) {
      cleaned = true;
      await spec.cleanup();
    }
  };
  const url = `http://${spec.host}`;
  try {
    await waitForHttp(`${url}/v2/`, {
      timeoutMs: 60_000,
      abort: () => (exitInfo === undefined ? undefined : `server ${exitInfo}`),
    });
  } catch (err) {
    await stop('SIGKILL');
    const msg = err instanceof Error ? err.message : String(err);
    throw new Error(`${[spec.command, ...spec.args].join(' ')} did not become ready: ${msg}\n${output}`, {
      cause: err,
    });
  }
  if (child.pid === undefined) throw new Error('child has no pid');
  return {
    url,
    host: spec.host,
    root: spec.root,
    pid: child.pid,
    stop,
    kill: () => stop('SIGKILL'),
    output: () => output,
  };
}

export async function startBenchDistribution(cache: boolean): Promise<Registry> {
  const root = await mkdtemp(join(tmpdir(), 'wharf-bench-distribution-root-'));
  const dir = await mkdtemp(join(tmpdir(), 'wharf-bench-distribution-'));
  const host = `127.0.0.1:${await freePort()}`;
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, distributionConfig(root, host, true));
  const env = inheritedEnv();
  // Distribution 2.8 panics when AWS_CA_BUNDLE is set.
  delete env.AWS_CA_BUNDLE;
  if (cache) env.REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR = 'inmemory';
  const server = await spawnRegistry({
    command: distributionBinary,
    args: ['serve', configPath],
    env,
    host,
    root,
    cleanup: async () => {
      await rm(dir, { recursive: true, force: true });
      await rm(root, { recursive: true, force: true });
    },
  });
  live.add(server);
  const version = spawnSync(distributionBinary, ['--version'], { encoding: 'utf8' }).stdout.trim();
  return {
    name: 'distribution',
    describe: `${version.split(' ').pop() ?? 'docker-registry'} (Debian docker-registry, blobdescriptor cache ${cache ? 'inmemory' : 'off'})`,
    server,
  };
}

const builtCli = join(repoRoot, 'dist/src/cli.js');

/** Builds dist/ if asked; returns a note when the built CLI cannot be used. */
export function prepareDist(build: boolean): string | undefined {
  if (build) {
    process.stdout.write('building Wharf (npm run build) ...\n');
    const result = spawnSync('npm', ['run', 'build'], { cwd: repoRoot, encoding: 'utf8' });
    if (result.status !== 0) {
      // tsc still emits on type errors, so a usable dist/ may exist; say so rather than hide it.
      const errors = `${result.stdout}${result.stderr}`.split('\n').filter((l) => l.includes('error TS'));
      process.stdout.write(
        `  npm run build failed (${errors.length} type errors, first: ${errors[0] ?? '?'})\n`,
      );
      if (!existsSync(builtCli)) return 'build failed and dist/src/cli.js is missing';
      process.stdout.write('  using the JavaScript tsc emitted anyway\n');
    }
  }
  return existsSync(builtCli) ? undefined : 'dist/src/cli.js is missing (run npm run build)';
}

export async function startBenchWharf(launch: WharfLaunch): Promise<Registry> {
  let from = launch.from;
  let note = '';
  if (from === 'dist') {
    const problem = prepareDist(launch.build);
    if (problem !== undefined) {
      process.stdout.write(`  ${problem}; falling back to running Wharf from source via tsx\n`);
      note = ` (fell back: ${problem})`;
      from = 'source';
    }
  }
  if (from === 'source') {
    const server = await startWharf({ env: { WHARF_LOG_LEVEL: 'warn' }, timeoutMs: 60_000 });
    live.add(server);
    return { name: 'wharf', describe: `node --import tsx src/cli.ts serve${note}`, server };
  }
  const root = await mkdtemp(join(tmpdir(), 'wharf-bench-wharf-root-'));
  const host = `127.0.0.1:${await freePort()}`;
  const server = await spawnRegistry({
    command: process.execPath,
    args: [builtCli, 'serve'],
    env: {
      ...inheritedEnv(),
      WHARF_HTTP_ADDR: host,
      WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
      WHARF_STORAGE_DELETE_ENABLED: 'true',
      WHARF_LOG_LEVEL: 'warn',
      NODE_ENV: 'production',
    },
    host,
    root,
    cleanup: () => rm(root, { recursive: true, force: true }),
  });
  live.add(server);
  return { name: 'wharf', describe: 'node dist/src/cli.js serve (built)', server };
}
