// Runs one image in isolation through the Docker engine and reports what it did; judging is policy.ts's.
import { Writable } from 'node:stream';
import Docker from 'dockerode';
import type { Logger } from 'pino';
import { parseSize, type Policy } from '../../config/agent-schema.js';

/** Everything an image wrote (stdout and stderr interleaved) is kept up to this many bytes. */
export const MAX_OUTPUT_BYTES = 256 * 1024;
const PULL_TIMEOUT_MS = 5 * 60_000;
const PING_TIMEOUT_MS = 3_000;
const POLL_MS = 200;
// After the container exits its output stream ends by itself; this bounds the wait for that.
const OUTPUT_DRAIN_MS = 1_000;

/** The engine could not be reached (socket missing, refused): not the image's fault, so retried. */
export class EngineUnavailableError extends Error {
  override name = 'EngineUnavailableError';
}

/** The engine refused to pull the image: the image's (or the registry's) fault, so a FAILED verdict. */
export class PullError extends Error {
  override name = 'PullError';
}

/** The agent is shutting down: the run was cut short and says nothing about the image. */
export class RunAbortedError extends Error {
  override name = 'RunAbortedError';
}

/** What happened to the container. `output` is bounded by MAX_OUTPUT_BYTES. */
export type RunOutcome =
  | { kind: 'exited'; exitCode: number; output: string; durationMs: number; oomKilled: boolean }
  /** Still running when the policy's `running` time was reached (and healthy, or no HEALTHCHECK). */
  | { kind: 'running'; health: string | undefined; output: string; durationMs: number }
  | { kind: 'unhealthy'; output: string; durationMs: number }
  | { kind: 'timeout'; health: string | undefined; output: string; durationMs: number }
  | { kind: 'start-failed'; reason: string; output: string; durationMs: number };

export interface RunRequest {
  /** What the engine pulls: `host:port/repo@sha256:...`. */
  ref: string;
  policy: Policy;
  /** Labels that identify the container (agent instance, subject). */
  labels: Record<string, string>;
}

export interface RunResult {
  outcome: RunOutcome;
  /** The image declares a HEALTHCHECK. */
  healthcheck: boolean;
}

export interface RunnerOptions {
  socketPath: string;
  /** Sent to the engine with each pull. */
  auth?: { username: string; password: string; serveraddress: string };
  logger: Logger;
}

const ENGINE_DOWN_CODES = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/** True when `err` says the engine's socket could not be used at all. */
export function isEngineUnavailable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof EngineUnavailableError) return true;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && ENGINE_DOWN_CODES.has(code)) return true;
  }
  return false;
}

const statusOf = (err: unknown): number | undefined => {
  const status = (err as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof status === 'number' ? status : undefined;
};

const messageOf = (err: unknown): string => {
  if (!(err instanceof Error)) return String(err);
  // docker-modem puts the engine's JSON answer in `json`; its `message` is what the engine said.
  const json = (err as { json?: { message?: unknown } }).json;
  return typeof json?.message === 'string' ? json.message : err.message;
};

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Collects a container's output up to a bound; the rest is counted and dropped. */
class BoundedOutput {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  dropped = 0;

  sink(): Writable {
    return new Writable({
      write: (chunk: Buffer, _enc, done) => {
        const room = MAX_OUTPUT_BYTES - this.kept;
        if (room > 0) {
          const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
          this.chunks.push(Buffer.from(part));
          this.kept += part.length;
        }
        this.dropped += Math.max(0, chunk.length - Math.max(room, 0));
        done();
      },
    });
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

/**
 * Pulls, runs and removes images. Every container gets no network, a read-only root with a small
 * noexec tmpfs at /tmp, no capabilities, no-new-privileges and the policy's limits; the container and
 * the pulled reference are removed afterwards whatever happened.
 */
export class DockerRunner {
  private readonly docker: Docker;
  private readonly logger: Logger;
  private readonly auth: RunnerOptions['auth'];
  private readonly active = new Set<Docker.Container>();
  private closing = false;

  constructor(opts: RunnerOptions) {
    this.docker = new Docker({ socketPath: opts.socketPath });
    this.logger = opts.logger;
    this.auth = opts.auth;
  }

  /** Resolves when the engine answers, else throws EngineUnavailableError. */
  async ping(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.docker.ping(),
        new Promise((_, reject) => {
          timer = setTimeout(() => {
            reject(new Error(`no answer in ${PING_TIMEOUT_MS} ms`));
          }, PING_TIMEOUT_MS);
        }),
      ]);
    } catch (err) {
      throw new EngineUnavailableError(`docker engine unreachable: ${messageOf(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  /** Containers a previous run of this agent left behind (it was killed mid-run): removed. */
  async removeLeftovers(labels: Record<string, string>): Promise<number> {
    const containers = await this.docker.listContainers({
      all: true,
      filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) },
    });
    for (const info of containers) {
      await this.docker
        .getContainer(info.Id)
        .remove({ force: true, v: true })
        .catch((err: unknown) => {
          this.logger.warn({ err, container: info.Id }, 'removing a leftover container failed');
        });
    }
    return containers.length;
  }

  async run(req: RunRequest): Promise<RunResult> {
    if (this.closing) throw new RunAbortedError('the agent is shutting down');
    await this.pull(req.ref);
    try {
      const image = await this.docker.getImage(req.ref).inspect();
      const test = image.Config.Healthcheck?.Test;
      const healthcheck = test !== undefined && test.length > 0 && test[0] !== 'NONE';
      const outcome = await this.runContainer(req, healthcheck);
      // A container removed by shutdown() "exited"; that is no finding about the image.
      if (this.isClosing()) throw new RunAbortedError('the agent is shutting down');
      return { outcome, healthcheck };
    } finally {
      await this.removeImage(req.ref);
    }
  }

  // A method, so the check after an await is not narrowed away by the one before it.
  private isClosing(): boolean {
    return this.closing;
  }

  /**
   * Removes running containers and fails their runs with RunAbortedError, so a shutdown neither waits
   * for a wall-time limit nor leaves containers behind; the journal replays those jobs at start.
   */
  async shutdown(): Promise<void> {
    this.closing = true;
    await Promise.all(
      [...this.active].map((c) =>
        c.remove({ force: true, v: true }).catch((err: unknown) => {
          if (statusOf(err) !== 404)
            this.logger.warn({ err, container: c.id }, 'removing a container at shutdown failed');
        }),
      ),
    );
  }

  private async pull(ref: string): Promise<void> {
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.createImage({
        fromImage: ref,
        abortSignal: AbortSignal.timeout(PULL_TIMEOUT_MS),
        ...(this.auth !== undefined && { authconfig: this.auth }),
      });
    } catch (err) {
      if (isEngineUnavailable(err)) {
        throw new EngineUnavailableError(`docker engine unreachable: ${messageOf(err)}`, { cause: err });
      }
      throw new PullError(`pull ${ref}: ${messageOf(err)}`, { cause: err });
    }
    // The engine reports a failed pull inside a 200 stream of JSON lines: `{"error": "..."}`.
    let failure: string | undefined;
    let pending = '';
    const consume = (line: string) => {
      if (line.trim() === '') return;
      try {
        const msg = JSON.parse(line) as { error?: unknown; errorDetail?: { message?: unknown } };
        if (typeof msg.error === 'string') failure ??= msg.error;
      } catch {
        // A progress line cut in two; the rest of the stream still counts.
      }
    };
    try {
      for await (const chunk of stream) {
        pending += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        lines.forEach(consume);
      }
      consume(pending);
    } catch (err) {
      if (isEngineUnavailable(err)) {
        throw new EngineUnavailableError(`docker engine unreachable: ${messageOf(err)}`, { cause: err });
      }
      throw new PullError(`pull ${ref}: ${messageOf(err)}`, { cause: err });
    }
    if (failure !== undefined) throw new PullError(`pull ${ref}: ${failure}`);
  }

  private async runContainer(req: RunRequest, healthcheck: boolean): Promise<RunOutcome> {
    const { policy } = req;
    const memory = parseSize(policy.limits.memory);
    let container: Docker.Container;
    let started: number;
    const output = new BoundedOutput();
    try {
      container = await this.docker.createContainer({
        Image: req.ref,
        ...(policy.run.command !== undefined && { Cmd: policy.run.command }),
        ...(policy.run.env.length > 0 && { Env: policy.run.env }),
        ...(policy.run.user !== undefined && { User: policy.run.user }),
        Labels: req.labels,
        NetworkDisabled: true,
        AttachStdout: true,
        AttachStderr: true,
        HostConfig: {
          NetworkMode: 'none',
          ReadonlyRootfs: true,
          Tmpfs: { '/tmp': `rw,noexec,nosuid,nodev,size=${policy.limits.tmpfs}` },
          CapDrop: ['ALL'],
          SecurityOpt: ['no-new-privileges'],
          Privileged: false,
          Memory: memory,
          MemorySwap: memory, // no swap on top
          NanoCpus: Math.round(policy.limits.cpus * 1e9),
          PidsLimit: policy.limits.pids,
          // The engine keeps a copy of the output too; an image must not fill the host's disk with it.
          LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '1' } },
          Binds: [],
          Mounts: [],
        },
      });
    } catch (err) {
      if (isEngineUnavailable(err)) {
        throw new EngineUnavailableError(`docker engine unreachable: ${messageOf(err)}`, { cause: err });
      }
      return { kind: 'start-failed', reason: `create: ${messageOf(err)}`, output: '', durationMs: 0 };
    }
    this.active.add(container);
    try {
      const attached = (await container.attach({
        stream: true,
        stdout: true,
        stderr: true,
      })) as NodeJS.ReadableStream;
      const drained = new Promise<void>((resolve) => {
        attached.on('end', resolve);
        attached.on('close', resolve);
        attached.on('error', () => {
          resolve();
        });
      });
      this.docker.modem.demuxStream(attached, output.sink(), output.sink());
      // The wall-time limit counts from here: pulls and creation are the engine's time, not the image's.
      started = Date.now();
      try {
        await container.start();
      } catch (err) {
        if (isEngineUnavailable(err)) throw err;
        return {
          kind: 'start-failed',
          reason: `start: ${messageOf(err)}`,
          output: output.text(),
          durationMs: Date.now() - started,
        };
      }
      const outcome = await this.watch(container, policy, healthcheck, started, output);
      await Promise.race([drained, delay(OUTPUT_DRAIN_MS)]);
      return { ...outcome, output: output.text() };
    } finally {
      this.active.delete(container);
      await container.remove({ force: true, v: true }).catch((err: unknown) => {
        if (statusOf(err) !== 404) this.logger.error({ err, ref: req.ref }, 'removing the container failed');
      });
    }
  }

  /** Waits for the policy's condition within the wall-time limit; kills the container at the limit. */
  private async watch(
    container: Docker.Container,
    policy: Policy,
    healthcheck: boolean,
    started: number,
    output: BoundedOutput,
  ): Promise<RunOutcome> {
    const deadline = started + policy.limits.timeout;
    let exited: { StatusCode: number } | undefined;
    let waitError: Error | undefined;
    const waiting = (container.wait() as Promise<{ StatusCode: number }>).then(
      (res) => {
        exited = res;
      },
      (err: unknown) => {
        waitError = err instanceof Error ? err : new Error(String(err));
      },
    );
    const running = policy.expect.running;
    for (;;) {
      const now = Date.now();
      if (exited !== undefined) {
        const state = await container.inspect().catch(() => undefined);
        return {
          kind: 'exited',
          exitCode: exited.StatusCode,
          oomKilled: state?.State.OOMKilled === true,
          output: '',
          durationMs: now - started,
        };
      }
      if (waitError !== undefined) throw waitError;
      if (now >= deadline) break;
      if (running !== undefined) {
        const health = healthcheck ? await this.health(container) : undefined;
        if (health === 'unhealthy') {
          await this.kill(container);
          return { kind: 'unhealthy', output: '', durationMs: now - started };
        }
        if (now - started >= running && (!healthcheck || health === 'healthy')) {
          await this.kill(container);
          return { kind: 'running', health, output: '', durationMs: now - started };
        }
      }
      await Promise.race([waiting, delay(Math.min(POLL_MS, Math.max(deadline - now, 1)))]);
    }
    const health = healthcheck ? await this.health(container) : undefined;
    await this.kill(container);
    this.logger.debug({ dropped: output.dropped }, 'container timed out');
    return { kind: 'timeout', health, output: '', durationMs: Date.now() - started };
  }

  private async health(container: Docker.Container): Promise<string | undefined> {
    const state = await container.inspect();
    return state.State.Health?.Status;
  }

  private async kill(container: Docker.Container): Promise<void> {
    await container.kill().catch((err: unknown) => {
      // 409: it stopped on its own in the meantime.
      if (statusOf(err) !== 409 && statusOf(err) !== 404) throw err;
    });
  }

  /** Removes the reference the run pulled; other tags of the same image stay. */
  private async removeImage(ref: string): Promise<void> {
    await this.docker
      .getImage(ref)
      .remove({ force: true })
      .catch((err: unknown) => {
        if (statusOf(err) !== 404) this.logger.error({ err, ref }, 'removing the pulled image failed');
      });
  }
}
