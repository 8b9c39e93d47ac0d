// Starts real registry processes (Wharf from source, Debian's CNCF Distribution) on loopback for
// e2e tests. Every child is killed when the test process exits, so a crashed test leaves nothing behind.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { get as httpsGet } from 'node:https';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const distributionBinary = '/usr/bin/docker-registry';

export interface RunningServer {
  /** Base URL, e.g. http://127.0.0.1:40123 */
  url: string;
  /** Registry host for image references, e.g. 127.0.0.1:40123 */
  host: string;
  /** Filesystem storage root directory ('' for a registry on S3). */
  root: string;
  pid: number;
  /** Signals the process (default SIGTERM), waits for exit (SIGKILL after 10 s). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** SIGKILL, then waits for exit. */
  kill(): Promise<void>;
  /** Everything the process wrote to stdout and stderr so far (last 256 KiB). */
  output(): string;
}

export interface StartWharfOptions {
  /**
   * 'filesystem' (default) sets the storage root variable; 's3' leaves it out, so that the
   * `WHARF_STORAGE_S3_*` settings in `env` (see `wharfS3Env`) choose the driver.
   */
  storage?: 'filesystem' | 's3';
  /** Storage root. When omitted a fresh temp dir is created and removed on stop()/kill(). */
  root?: string;
  /** Extra environment; overrides the defaults. */
  env?: Record<string, string>;
  /** Path of a YAML config file passed with --config. */
  config?: string;
  /** Milliseconds to wait for GET /v2/ to answer 200 (default 30 000). */
  timeoutMs?: number;
  /** The status of GET /v2/ that means ready (default 200; 401 with auth on). */
  readyStatus?: number;
  /** The server speaks HTTPS (`http.tls`): `url` is https, readiness is probed without verifying. */
  tls?: boolean;
}

export interface StartDistributionOptions {
  /** Filesystem root; ignored when `s3` is given. */
  root?: string;
  /** Store in this bucket with Distribution's s3 driver instead of the filesystem. */
  s3?: S3Target;
  /** With `s3`: answer blob GETs with 307 to a presigned URL (Distribution's default); default false. */
  redirect?: boolean;
  deleteEnabled?: boolean;
  timeoutMs?: number;
}

/** A bucket on an S3-compatible server (path-style addressing), for a registry's storage settings. */
export interface S3Target {
  bucket: string;
  region?: string;
  regionendpoint?: string;
  accesskey?: string;
  secretkey?: string;
  rootdirectory?: string;
}

/** The environment that puts `startWharf({ storage: 's3' })` on a bucket. */
export function wharfS3Env(target: S3Target): Record<string, string> {
  const env: Record<string, string> = {
    WHARF_STORAGE_S3_BUCKET: target.bucket,
    WHARF_STORAGE_S3_REGION: target.region ?? 'us-east-1',
    WHARF_STORAGE_S3_FORCEPATHSTYLE: 'true',
  };
  if (target.regionendpoint !== undefined) env.WHARF_STORAGE_S3_REGIONENDPOINT = target.regionendpoint;
  if (target.accesskey !== undefined) env.WHARF_STORAGE_S3_ACCESSKEY = target.accesskey;
  if (target.secretkey !== undefined) env.WHARF_STORAGE_S3_SECRETKEY = target.secretkey;
  if (target.rootdirectory !== undefined) env.WHARF_STORAGE_S3_ROOTDIRECTORY = target.rootdirectory;
  return env;
}

const live = new Set<ChildProcess>();
const killLive = (): void => {
  for (const child of live) child.kill('SIGKILL');
};
process.on('exit', killLive);
// A test file killed by the runner (timeout, Ctrl-C) must not leave registries behind either.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killLive();
    process.kill(process.pid, signal);
  });
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('no port assigned'));
        return;
      }
      const { port } = addr;
      srv.close(() => {
        resolve(port);
      });
    });
  });
}

export interface WaitForHttpOptions {
  /** Status that counts as ready (default 200). */
  status?: number;
  timeoutMs?: number;
  intervalMs?: number;
  /** Checked between attempts; a string return aborts the wait with that message. */
  abort?: () => string | undefined;
}

/** Polls `url` with GET until it answers the wanted status. */
export async function waitForHttp(url: string, opts: WaitForHttpOptions = {}): Promise<void> {
  const want = opts.status ?? 200;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const intervalMs = opts.intervalMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  let last: string;
  for (;;) {
    const reason = opts.abort?.();
    if (reason !== undefined) throw new Error(reason);
    try {
      const status = url.startsWith('https:') ? await unverifiedHttpsStatus(url) : await fetchStatus(url);
      if (status === want) return;
      last = `status ${status}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${url} to answer ${want} (last: ${last})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

async function fetchStatus(url: string): Promise<number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  await res.arrayBuffer();
  return res.status;
}

/** Readiness only: whether the TLS server answers, not whether its certificate is trusted. */
function unverifiedHttpsStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsGet(url, { rejectUnauthorized: false, timeout: 2_000 }, (res) => {
      res.resume();
      res.on('end', () => {
        resolve(res.statusCode ?? 0);
      });
    });
    req.on('timeout', () => {
      req.destroy(new Error('timeout'));
    });
    req.on('error', reject);
  });
}

interface SpawnSpec {
  readyStatus?: number;
  scheme?: 'http' | 'https';
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  host: string;
  root: string;
  timeoutMs: number;
  /** Runs after the process has exited (or stop/kill), e.g. to remove temp dirs. */
  cleanup: () => Promise<void>;
}

const MAX_OUTPUT = 256 * 1024;

async function spawnServer(spec: SpawnSpec): Promise<RunningServer> {
  const child = spawn(spec.command, spec.args, {
    cwd: repoRoot,
    env: spec.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let output = '';
  const collect = (chunk: Buffer): void => {
    output += chunk.toString('utf8');
    if (output.length > MAX_OUTPUT) output = output.slice(-MAX_OUTPUT);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);

  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.on('error', (err) => {
      exitInfo = `failed to start: ${err.message}`;
      live.delete(child);
      resolve();
    });
    child.on('exit', (code, signal) => {
      exitInfo = `exited with ${signal ?? `code ${code}`}`;
      live.delete(child);
      resolve();
    });
  });

  let cleaned = false;
  const finish = async (): Promise<void> => {
    await exited;
    if (!cleaned) {
      cleaned = true;
      await spec.cleanup();
    }
  };
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    if (exitInfo === undefined) {
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await finish();
  };
  const kill = (): Promise<void> => stop('SIGKILL');

  const url = `${spec.scheme ?? 'http'}://${spec.host}`;
  try {
    await waitForHttp(`${url}/v2/`, {
      status: spec.readyStatus ?? 200,
      timeoutMs: spec.timeoutMs,
      abort: () => (exitInfo === undefined ? undefined : `server ${exitInfo}`),
    });
  } catch (err) {
    await kill();
    const msg = err instanceof Error ? err.message : String(err);
    const cmd = [spec.command, ...spec.args].join(' ');
    throw new Error(`${cmd} did not become ready: ${msg}\n--- output ---\n${output}`, {
      cause: err,
    });
  }
  if (child.pid === undefined) throw new Error('child has no pid');
  return { url, host: spec.host, root: spec.root, pid: child.pid, stop, kill, output: () => output };
}

/** The inherited environment without settings that would change a registry's config. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('WHARF_') || k.startsWith('REGISTRY_')) continue;
    env[k] = v;
  }
  return env;
}

const isAddrInUse = (err: unknown): boolean =>
  err instanceof Error && /EADDRINUSE|address already in use/i.test(err.message);

/** Runs `wharf serve` from source on a free loopback port and waits until GET /v2/ answers 200 (or readyStatus). */
export async function startWharf(opts: StartWharfOptions = {}): Promise<RunningServer> {
  const onS3 = opts.storage === 's3';
  const ownRoot = !onS3 && opts.root === undefined;
  const root = onS3 ? '' : (opts.root ?? (await mkdtemp(join(tmpdir(), 'wharf-e2e-root-'))));
  const args = ['--import', 'tsx', 'src/cli.ts', 'serve'];
  if (opts.config !== undefined) args.push('--config', opts.config);
  // freePort() can race with another process taking the port; retry on that one failure.
  for (let attempt = 1; ; attempt++) {
    const host = `127.0.0.1:${await freePort()}`;
    try {
      return await spawnServer({
        command: process.execPath,
        args,
        env: {
          ...cleanEnv(),
          WHARF_HTTP_ADDR: host,
          ...(!onS3 && { WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY: root }),
          WHARF_STORAGE_DELETE_ENABLED: 'true',
          WHARF_LOG_LEVEL: 'warn',
          ...opts.env,
        },
        host,
        root,
        timeoutMs: opts.timeoutMs ?? 30_000,
        ...(opts.readyStatus !== undefined && { readyStatus: opts.readyStatus }),
        ...(opts.tls === true && { scheme: 'https' as const }),
        cleanup: async () => {
          if (ownRoot) await rm(root, { recursive: true, force: true });
        },
      });
    } catch (err) {
      if (attempt < 3 && isAddrInUse(err)) continue;
      if (ownRoot) await rm(root, { recursive: true, force: true });
      throw err;
    }
  }
}

/** Distribution 2.8 config.yml for a filesystem root (or, with `s3`, a bucket) on loopback. */
export function distributionConfig(
  root: string,
  host: string,
  deleteEnabled: boolean,
  s3?: { target: S3Target; redirect: boolean },
): string {
  const q = JSON.stringify;
  // Distribution 2.8 has no `forcepathstyle` key: a `regionendpoint` makes it address buckets by path.
  const driver =
    s3 === undefined
      ? ['  filesystem:', `    rootdirectory: ${q(root)}`]
      : [
          '  s3:',
          `    bucket: ${q(s3.target.bucket)}`,
          `    region: ${q(s3.target.region ?? 'us-east-1')}`,
          ...(s3.target.regionendpoint === undefined
            ? []
            : [`    regionendpoint: ${q(s3.target.regionendpoint)}`]),
          ...(s3.target.accesskey === undefined ? [] : [`    accesskey: ${q(s3.target.accesskey)}`]),
          ...(s3.target.secretkey === undefined ? [] : [`    secretkey: ${q(s3.target.secretkey)}`]),
          ...(s3.target.rootdirectory === undefined
            ? []
            : [`    rootdirectory: ${q(s3.target.rootdirectory)}`]),
          `    secure: ${s3.target.regionendpoint?.startsWith('https:') === true}`,
          '    v4auth: true',
          '  redirect:',
          `    disable: ${!s3.redirect}`,
        ];
  return [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    ...driver,
    '  delete:',
    `    enabled: ${deleteEnabled}`,
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${host}`,
    '  secret: wharf-e2e-not-secret',
    '',
  ].join('\n');
}

/** Runs Debian's CNCF Distribution 2.8 (`docker-registry serve`) on `opts.root`. */
export async function startDistribution(opts: StartDistributionOptions): Promise<RunningServer> {
  if (opts.root === undefined && opts.s3 === undefined) throw new Error('startDistribution: give root or s3');
  const env = cleanEnv();
  // Distribution 2.8 panics when AWS_CA_BUNDLE is set.
  delete env.AWS_CA_BUNDLE;
  for (let attempt = 1; ; attempt++) {
    const host = `127.0.0.1:${await freePort()}`;
    const dir = await mkdtemp(join(tmpdir(), 'wharf-e2e-distribution-'));
    const configPath = join(dir, 'config.yml');
    const s3 = opts.s3 === undefined ? undefined : { target: opts.s3, redirect: opts.redirect ?? false };
    const root = s3 === undefined ? (opts.root ?? '') : '';
    await writeFile(configPath, distributionConfig(root, host, opts.deleteEnabled ?? true, s3));
    try {
      return await spawnServer({
        command: distributionBinary,
        args: ['serve', configPath],
        env,
        host,
        root,
        timeoutMs: opts.timeoutMs ?? 30_000,
        cleanup: () => rm(dir, { recursive: true, force: true }),
      });
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      if (attempt < 3 && isAddrInUse(err)) continue;
      throw err;
    }
  }
}

/**
 * The registry e2e tests target: Wharf, or with E2E_REGISTRY=distribution the reference implementation,
 * which shows that a failing e2e test is Wharf's fault and not the test's.
 */
export async function startRegistryUnderTest(opts: StartWharfOptions = {}): Promise<RunningServer> {
  if (process.env.E2E_REGISTRY !== 'distribution') return startWharf(opts);
  const root = opts.root ?? (await mkdtemp(join(tmpdir(), 'wharf-e2e-root-')));
  const server = await startDistribution({ root });
  if (opts.root !== undefined) return server;
  const stop = async (signal?: NodeJS.Signals): Promise<void> => {
    await server.stop(signal);
    await rm(root, { recursive: true, force: true });
  };
  return { ...server, stop, kill: () => stop('SIGKILL') };
}

/** Prints what a server logged (warnings and errors at the default level), for after() hooks. */
export function printOutput(server: RunningServer | undefined, label: string): void {
  // Distribution 2.8 logs every 404 answer at error level; those are expected in these tests.
  const output = server
    ?.output()
    .split('\n')
    .filter((line) => !line.includes('http.response.status=404'))
    .join('\n')
    .trim();
  if (output) console.error(`--- ${label} output ---\n${output}\n--- end of ${label} output ---`);
}

/**
 * Runs Distribution's offline garbage collector (`docker-registry garbage-collect`) on a filesystem
 * root and returns its output. It marks from every manifest revision (and tags, with deleteUntagged)
 * and deletes every other blob, so it shows whether a tree is complete in Distribution's eyes.
 */
export async function runDistributionGc(
  root: string,
  opts: { dryRun?: boolean; deleteUntagged?: boolean } = {},
): Promise<string> {
  const env = cleanEnv();
  delete env.AWS_CA_BUNDLE;
  const dir = await mkdtemp(join(tmpdir(), 'wharf-e2e-distribution-gc-'));
  try {
    const configPath = join(dir, 'config.yml');
    await writeFile(configPath, distributionConfig(root, '127.0.0.1:0', true));
    const args = ['garbage-collect'];
    if (opts.dryRun === true) args.push('--dry-run');
    if (opts.deleteUntagged === true) args.push('--delete-untagged');
    args.push(configPath);
    const { stdout, stderr } = await execFileAsync(distributionBinary, args, {
      env,
      timeout: 60_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout + stderr;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
