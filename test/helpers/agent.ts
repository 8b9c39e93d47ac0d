// For the verification agent's e2e tests and benchmark: images that behave in chosen ways, the agent
// as a real process (`wharf agent` from source), and polling the registry for its verdicts.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import type { AgentConfigInput } from '../../config/agent-schema.js';
import { RegistryClient } from '../../src/client/registry-client.js';
import { findVerdicts, type InTotoStatement, type JSONWebKeySet } from '../../src/verify/verdict.js';
import { freePort, repoRoot, waitForHttp } from './processes.js';
import { busyboxPath, docker } from './tools.js';

/** Every local image these tests build is named under this. */
export const IMAGE_PREFIX = 'wharf-agent-test';

export interface AgentImageSpec {
  /** The default command (JSON form); busybox applets are on PATH. */
  cmd: string[];
  /** `HEALTHCHECK` options and command, e.g. `--interval=1s --retries=1 CMD ["busybox","true"]`. */
  healthcheck?: string;
}

export interface AgentImage {
  /** `wharf-agent-test/<name>:<random>` */
  localRef: string;
  id: string;
}

/** Builds a FROM scratch busybox image whose default command is `spec.cmd`. */
export async function buildAgentImage(name: string, spec: AgentImageSpec): Promise<AgentImage> {
  const ctx = await mkdtemp(join(tmpdir(), 'wharf-agent-build-'));
  const localRef = `${IMAGE_PREFIX}/${name}:${randomBytes(6).toString('hex')}`;
  try {
    await copyFile(busyboxPath, join(ctx, 'busybox'));
    // A unique file, so every build is a distinct image (and digest) even with the same command.
    await writeFile(join(ctx, 'nonce'), randomBytes(16).toString('hex'));
    const lines = [
      'FROM scratch',
      'COPY busybox /bin/busybox',
      'COPY nonce /nonce',
      'ENV PATH=/bin',
      ...(spec.healthcheck !== undefined ? [`HEALTHCHECK ${spec.healthcheck}`] : []),
      `CMD ${JSON.stringify(spec.cmd)}`,
      '',
    ];
    await writeFile(join(ctx, 'Dockerfile'), lines.join('\n'));
    await docker(['build', '--quiet', '--force-rm', '--tag', localRef, ctx], { timeoutMs: 120_000 });
    const { stdout } = await docker(['image', 'inspect', '--format', '{{.Id}}', localRef]);
    return { localRef, id: stdout.trim() };
  } finally {
    await rm(ctx, { recursive: true, force: true });
  }
}

/** `docker push`es the image as `host/repo:tag` and returns the manifest digest it reports. */
export async function pushImage(image: AgentImage, host: string, repo: string, tag = 'v1'): Promise<string> {
  const ref = `${host}/${repo}:${tag}`;
  await docker(['tag', image.id, ref]);
  const { stdout } = await docker(['push', ref], { timeoutMs: 120_000 });
  const m = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(stdout);
  if (!m?.[1]) throw new Error(`no digest in docker push output:\n${stdout}`);
  return m[1];
}

/** A push event as CNCF Distribution sends it, in its envelope. */
export function pushEnvelope(
  repository: string,
  digest: string,
  mediaType = 'application/vnd.docker.distribution.manifest.v2+json',
): { events: Record<string, unknown>[] } {
  return {
    events: [
      {
        id: randomBytes(8).toString('hex'),
        timestamp: new Date().toISOString(),
        action: 'push',
        target: { mediaType, digest, repository, size: 528, length: 528, tag: 'v1' },
        request: { id: randomBytes(4).toString('hex'), method: 'PUT', useragent: 'docker/20.10' },
        actor: {},
        source: { addr: 'localhost:5000', instanceID: 'test' },
      },
    ],
  };
}

/** POSTs an event body (an object is sent as JSON) to the agent. */
export async function postEvents(
  agentUrl: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${agentUrl}/events`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/vnd.docker.distribution.events.v2+json', ...headers },
    body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON: keep the text.
  }
  return { status: res.status, body: parsed };
}

export interface RunningAgentProcess {
  url: string;
  configPath: string;
  statedir: string;
  pid: number;
  /** SIGTERM (or `signal`), then waits; SIGKILL after 15 s. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Everything the agent logged so far (JSON lines). */
  output(): string;
  /** Resolves with the first log line whose message is `msg` and whose fields include `fields`. */
  waitForLog(
    msg: string,
    fields?: Record<string, unknown>,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface StartAgentOptions {
  /** The `agent` section; `listen` is filled in with a free loopback port. */
  agent: Omit<AgentConfigInput['agent'], 'listen'>;
  /** Log level (default info, so tests can wait for log lines). */
  level?: 'debug' | 'info' | 'warn';
  /** A state dir to reuse (restart tests); a fresh one is made (and removed on stop) otherwise. */
  statedir?: string;
  /** Listen on this loopback port (a registry's config names it); a free one otherwise. */
  port?: number;
}

/** Runs `wharf agent` from source on a free loopback port and waits for GET /healthz. */
export async function startAgentProcess(opts: StartAgentOptions): Promise<RunningAgentProcess> {
  const ownDir = opts.statedir === undefined;
  const statedir = opts.statedir ?? (await mkdtemp(join(tmpdir(), 'wharf-agent-state-')));
  const confDir = await mkdtemp(join(tmpdir(), 'wharf-agent-conf-'));
  const configPath = join(confDir, 'agent.yaml');
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const config = {
      log: { level: opts.level ?? 'info' },
      agent: { statedir, ...opts.agent, listen: `127.0.0.1:${port}` },
    };
    await writeFile(configPath, YAML.stringify(config));
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'agent', '--config', configPath],
      {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    live.add(child);
    let output = '';
    const listeners = new Set<() => void>();
    const collect = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      if (output.length > 4 * 1024 * 1024) output = output.slice(-4 * 1024 * 1024);
      for (const l of listeners) l();
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    let exited: string | undefined;
    const exit = new Promise<void>((resolve) => {
      child.on('exit', (code, signal) => {
        exited = signal ?? `code ${code}`;
        live.delete(child);
        resolve();
      });
    });
    const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (exited === undefined) {
        child.kill(signal);
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exit;
        clearTimeout(timer);
      }
      await rm(confDir, { recursive: true, force: true });
      if (ownDir) await rm(statedir, { recursive: true, force: true });
    };
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitForHttp(`${url}/healthz`, {
        timeoutMs: 30_000,
        abort: () => (exited === undefined ? undefined : `agent exited with ${exited}:\n${output}`),
      });
    } catch (err) {
      if (exited === undefined) child.kill('SIGKILL');
      await exit;
      if (attempt < 3 && opts.port === undefined && /EADDRINUSE/.test(output)) continue;
      await rm(confDir, { recursive: true, force: true });
      if (ownDir) await rm(statedir, { recursive: true, force: true });
      throw err;
    }
    const findLog = (msg: string, fields: Record<string, unknown>) => {
      for (const line of output.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          if (rec.msg === msg && Object.entries(fields).every(([k, v]) => rec[k] === v)) return rec;
        } catch {
          // A line cut in two while it is written.
        }
      }
      return undefined;
    };
    return {
      url,
      configPath,
      statedir,
      pid: child.pid ?? 0,
      stop,
      output: () => output,
      waitForLog: (msg, fields = {}, timeoutMs = 30_000) =>
        new Promise((resolve, reject) => {
          const check = () => {
            const rec = findLog(msg, fields);
            if (rec === undefined) return;
            listeners.delete(check);
            clearTimeout(timer);
            resolve(rec);
          };
          const timer = setTimeout(() => {
            listeners.delete(check);
            reject(
              new Error(`no log line "${msg}" ${JSON.stringify(fields)} in ${timeoutMs} ms:\n${output}`),
            );
          }, timeoutMs);
          listeners.add(check);
          check();
        }),
    };
  }
}

/** The agent's public keys. */
export async function agentJwks(agentUrl: string): Promise<JSONWebKeySet> {
  const res = await fetch(`${agentUrl}/.well-known/jwks.json`);
  if (res.status !== 200) throw new Error(`GET jwks.json: ${res.status}`);
  return (await res.json()) as JSONWebKeySet;
}

export interface SeenVerdict {
  digest: string;
  result: string | undefined;
  statement: InTotoStatement;
  /** How many verdicts (of any key) the referrers API lists for the subject. */
  count: number;
}

/**
 * Polls the referrers API until a verdict signed by one of `trusted` is listed for `digest`, then
 * returns it with its verified statement. Throws after `timeoutMs`.
 */
export async function waitForVerdict(
  registryUrl: string,
  repo: string,
  digest: string,
  trusted: JSONWebKeySet,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<SeenVerdict> {
  const client = new RegistryClient({ url: registryUrl });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await findVerdicts(client, repo, digest, trusted);
    const ok = found.find((v) => v.verification?.ok === true);
    if (ok?.verification?.ok === true) {
      return {
        digest: ok.digest,
        result: ok.result,
        statement: ok.verification.statement,
        count: found.length,
      };
    }
    if (Date.now() > deadline) {
      const seen = found.map(
        (v) =>
          `${v.digest} ${String(v.result)} ${v.verification?.ok === false ? v.verification.error.message : ''}`,
      );
      throw new Error(
        `no trusted verdict for ${repo}@${digest} in ${timeoutMs} ms (seen: ${seen.join('; ') || 'none'})`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The verdicts (any key) the referrers API lists for `digest`. */
export async function verdictCount(registryUrl: string, repo: string, digest: string): Promise<number> {
  return (await findVerdicts(new RegistryClient({ url: registryUrl }), repo, digest)).length;
}

/** Containers the agent started for `repo@digest` that still exist (running or not). */
export async function agentContainers(repo: string, digest: string): Promise<string[]> {
  const { stdout } = await docker([
    'ps',
    '-a',
    '--quiet',
    '--filter',
    `label=dev.wharf.agent.subject=${repo}@${digest}`,
  ]);
  return stdout.split('\n').filter((l) => l !== '');
}
