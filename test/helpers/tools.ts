// Runs the real clients (docker, skopeo) for e2e tests, and decides whether a missing one skips or fails.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { access, constants, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const busyboxPath = '/bin/busybox';
export const inCI = process.env.CI === 'true';

export interface RunOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Kills the command after this many milliseconds (default 120 000). */
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command without a shell; a failure's message carries the command line and its stderr. */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  try {
    const { stdout, stderr } = await execFileAsync(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      timeout: opts.timeoutMs ?? 120_000,
      killSignal: 'SIGKILL',
      maxBuffer: 64 * 1024 * 1024,
      encoding: 'utf8',
    });
    return { stdout, stderr };
  } catch (err) {
    const e = err as Error & {
      stderr?: string;
      stdout?: string;
      code?: number | string;
      signal?: string | null;
    };
    const how = e.signal != null ? `signal ${e.signal}` : `code ${String(e.code)}`;
    throw new Error(
      `${cmd} ${args.join(' ')} failed (${how})\n--- stderr ---\n${e.stderr ?? ''}\n--- stdout ---\n${e.stdout ?? ''}`,
      { cause: err },
    );
  }
}

// A private client config: no credential helpers or stale `docker manifest` lists from the host leak in.
let dockerConfigDir: string | undefined;
function dockerConfig(): string {
  if (dockerConfigDir === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'wharf-e2e-docker-config-'));
    dockerConfigDir = dir;
    process.on('exit', () => {
      rmSync(dir, { recursive: true, force: true });
    });
  }
  return dockerConfigDir;
}

/** The docker CLI. The legacy builder is forced (no buildx on Debian), `docker manifest` enabled on 20.10. */
export function docker(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('docker', args, {
    ...opts,
    env: {
      DOCKER_CONFIG: dockerConfig(),
      DOCKER_BUILDKIT: '0',
      DOCKER_CLI_EXPERIMENTAL: 'enabled',
      ...opts.env,
    },
  });
}

/** skopeo with the policy check off; registries on loopback are plain HTTP, so pass the tls flags. */
export function skopeo(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('skopeo', ['--insecure-policy', ...args], opts);
}

/** True when an ELF64 file has a PT_INTERP program header, i.e. is dynamically linked. */
function hasInterpreter(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    if (elf.readUInt32LE(phoff + i * phentsize) === 3) return true;
  }
  return false;
}

export type Tool = 'docker' | 'skopeo' | 'docker-registry' | 'busybox';

async function problemWith(tool: Tool): Promise<string | undefined> {
  const probe = async (fn: () => Promise<unknown>, what: string): Promise<string | undefined> => {
    try {
      await fn();
      return undefined;
    } catch (err) {
      const msg = err instanceof Error ? err.message.split('\n').slice(0, 4).join(' ') : String(err);
      return `${what}: ${msg}`;
    }
  };
  switch (tool) {
    case 'docker':
      return probe(
        () => docker(['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 15_000 }),
        'docker engine not available',
      );
    case 'skopeo':
      return probe(() => run('skopeo', ['--version'], { timeoutMs: 15_000 }), 'skopeo not available');
    case 'docker-registry':
      return probe(
        () => access('/usr/bin/docker-registry', constants.X_OK),
        'docker-registry (CNCF Distribution) not available',
      );
    case 'busybox':
      return probe(async () => {
        // A dynamically linked busybox (package `busybox`) cannot run in a FROM scratch image.
        if (hasInterpreter(await readFile(busyboxPath))) throw new Error(`${busyboxPath} is not static`);
      }, 'static busybox (busybox-static) not available');
  }
}

/**
 * Checks that the tools a test needs are usable. Outside CI it returns a skip reason (or undefined when
 * all is well) for `describe(..., { skip })`; in CI (CI=true) a missing tool throws, so the test fails.
 */
export async function requireTools(...tools: Tool[]): Promise<string | undefined> {
  const problems = (await Promise.all(tools.map(problemWith))).filter((p): p is string => p !== undefined);
  if (problems.length === 0) return undefined;
  const reason = problems.join('; ');
  if (inCI) throw new Error(`required tool missing in CI: ${reason}`);
  return reason;
}

/** One-tool form of requireTools. */
export function requireTool(tool: Tool): Promise<string | undefined> {
  return requireTools(tool);
}
