// `wharf serve --workers N`: a primary process forks N workers (node:cluster) that each run the whole
// server on the shared port. This is safe because no state a request needs lives in process memory
// (upload sessions, tags, GC records are in storage). The primary only supervises: it restarts a worker
// that dies, forwards SIGTERM and waits for the workers to drain, and aggregates their metrics.
//
// IPC messages carry `wharf: <kind>`: a worker says `ready` once it listens; a scrape answered by a
// worker asks the primary (`metrics-request`), which collects every ready worker's metrics as JSON
// (`metrics-collect` / `metrics-collected`), aggregates them with prom-client and answers the text
// (`metrics-response`).
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { Config } from '../config/schema.js';
import { metricsEndpoint, metricsRoute, startDebugServer, type DebugServer } from './metrics/endpoint.js';

/** Set by the primary for each worker: its slot, 1..N, kept by the worker that replaces it. */
export const WORKER_SLOT_ENV = 'WHARF_WORKER_SLOT';

const MAX_WORKERS = 256;
// How long a scrape waits for every worker's figures. Past it the scrape fails: summing the workers
// that did answer would look like a counter reset to Prometheus.
const COLLECT_TIMEOUT_MS = 5000;
// A replacement waits 0.5 s, doubling per quick death up to 30 s; a worker that lived a minute resets it.
const RESTART_BASE_MS = 500;
const RESTART_MAX_MS = 30_000;
const HEALTHY_LIFETIME_MS = 60_000;
// How long after http.draintimeout the primary waits for workers before killing them.
const SHUTDOWN_GRACE_MS = 5000;

/** `--workers` / `WHARF_WORKERS`: a count, or `0` / `auto` for one worker per CPU. */
export function parseWorkerCount(text: string, cpus: number = availableParallelism()): number {
  const value = text.trim().toLowerCase();
  if (value === 'auto' || value === '0') return Math.max(1, cpus);
  if (!/^\d+$/.test(value) || Number(value) > MAX_WORKERS) {
    throw new Error(`expected a number of workers (1-${MAX_WORKERS}), 0 or auto; got "${text}"`);
  }
  return Number(value);
}

/** A worker's config when another worker runs the process group's scheduled GC and upload purge. */
export function withoutSchedules(config: Config): Config {
  const uploadpurging = { ...config.storage.maintenance.uploadpurging, enabled: false };
  return {
    ...config,
    ...(config.gc && { gc: { ...config.gc, interval: undefined } }),
    storage: { ...config.storage, maintenance: { ...config.storage.maintenance, uploadpurging } },
  };
}

// ---- IPC --------------------------------------------------------------------------------------------

type Message =
  | { wharf: 'ready' }
  | { wharf: 'metrics-request'; id: number }
  | { wharf: 'metrics-collect'; id: number }
  | { wharf: 'metrics-collected'; id: number; metrics?: object[]; error?: string }
  | { wharf: 'metrics-response'; id: number; body?: string; error?: string };

function isMessage(value: unknown): value is Message {
  return (
    typeof value === 'object' && value !== null && typeof (value as { wharf?: unknown }).wharf === 'string'
  );
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** What a server running in a worker needs from the cluster. */
export interface WorkerLink {
  /** Every worker's metrics aggregated by the primary, as Prometheus text. */
  clusterMetrics(): Promise<string>;
  /** Answers the primary's requests for this worker's metrics; returns a function that stops it. */
  answerMetrics(collect: () => Promise<object[]>): () => void;
}

/** The link to the primary when this process is a `serve --workers` worker; otherwise undefined. */
export function workerLink(): WorkerLink | undefined {
  if (!cluster.isWorker || process.send === undefined) return undefined;
  const send = (message: Message): Promise<void> =>
    new Promise((resolve, reject) => {
      process.send?.(message, undefined, {}, (err: Error | null) => {
        if (err) reject(err);
        else resolve();
      });
    });
  let nextId = 0;
  const waiting = new Map<number, (reply: { body?: string; error?: string }) => void>();
  const onReply = (message: unknown): void => {
    if (isMessage(message) && message.wharf === 'metrics-response') waiting.get(message.id)?.(message);
  };
  return {
    clusterMetrics: () => {
      const id = nextId++;
      if (waiting.size === 0) process.on('message', onReply);
      return new Promise<string>((resolve, reject) => {
        const done = (): void => {
          clearTimeout(timer);
          waiting.delete(id);
          if (waiting.size === 0) process.off('message', onReply);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error('the cluster primary did not answer'));
        }, COLLECT_TIMEOUT_MS * 2);
        waiting.set(id, (reply) => {
          done();
          if (reply.body !== undefined) resolve(reply.body);
          else reject(new Error(reply.error ?? 'no metrics'));
        });
        send({ wharf: 'metrics-request', id }).catch((err: unknown) => {
          done();
          reject(err instanceof Error ? err : new Error(String(err)));
        });
      });
    },
    answerMetrics: (collect) => {
      const onCollect = (message: unknown): void => {
        if (!isMessage(message) || message.wharf !== 'metrics-collect') return;
        const { id } = message;
        collect()
          .then(
            (metrics) => send({ wharf: 'metrics-collected', id, metrics }),
            (err: unknown) => send({ wharf: 'metrics-collected', id, error: errorText(err) }),
          )
          .catch(() => {
            // The primary is gone; its request died with it.
          });
      };
      process.on('message', onCollect);
      return () => {
        process.off('message', onCollect);
      };
    },
  };
}

/** Tells the primary that this worker serves (its server listens). No-op outside a cluster. */
export function announceReady(): void {
  if (cluster.isWorker) process.send?.({ wharf: 'ready' } satisfies Message);
}

// ---- the primary -----------------------------------------------------------------------------------

export interface PrimaryOptions {
  readonly workers: number;
  readonly config: Config;
  readonly logger: Logger;
}

interface Slot {
  readonly slot: number;
  /** Consecutive deaths soon after start, for the restart backoff. */
  failures: number;
  restart?: NodeJS.Timeout;
}

interface Running {
  readonly slot: Slot;
  readonly startedAt: number;
  ready: boolean;
}

interface Collection {
  readonly waiting: Set<Worker>;
  readonly responses: object[][];
  readonly finish: (err?: Error) => void;
}

/**
 * Runs the primary: forks `workers` workers (the same command line, so each runs `serve` as a
 * worker), keeps them running, and on SIGTERM or SIGINT has them drain and exits when they have.
 * Exits 1 when no worker ever starts (bad config, storage unreachable), as a single server would.
 */
export async function runPrimary(opts: PrimaryOptions): Promise<void> {
  const { logger, config } = opts;
  const running = new Map<Worker, Running>();
  const slots: Slot[] = Array.from({ length: opts.workers }, (_, i) => ({ slot: i + 1, failures: 0 }));
  let anyReady = false;
  let closing = false;
  let exitCode = 0;

  // The primary's own figures, summed with the workers' at every scrape.
  const own = new Registry();
  collectDefaultMetrics({ register: own });
  new Gauge({
    name: 'wharf_cluster_workers',
    help: 'Workers serving requests',
    registers: [own],
    collect() {
      this.set([...running.values()].filter((r) => r.ready).length);
    },
  });
  const restarts = new Counter({
    name: 'wharf_cluster_worker_restarts_total',
    help: 'Workers that died unexpectedly and were replaced',
    registers: [own],
  });

  let nextCollection = 0;
  const collections = new Map<number, Collection>();
  const collect = (worker: Worker, id: number): void => {
    const c = collections.get(id);
    if (!c?.waiting.delete(worker)) return;
    if (c.waiting.size === 0) c.finish();
  };
  const clusterMetrics = async (): Promise<string> => {
    const id = nextCollection++;
    const targets = [...running].filter(([w, r]) => r.ready && w.isConnected()).map(([w]) => w);
    const responses: object[][] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        finish(new Error(`${collections.get(id)?.waiting.size ?? 0} workers did not send their metrics`));
      }, COLLECT_TIMEOUT_MS);
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        collections.delete(id);
        if (err) reject(err);
        else resolve();
      };
      collections.set(id, { waiting: new Set(targets), responses, finish });
      if (targets.length === 0) finish();
      for (const worker of targets) worker.send({ wharf: 'metrics-collect', id } satisfies Message);
    });
    return AggregatorRegistry.aggregate([await own.getMetricsAsJSON(), ...responses]).metrics();
  };

  const onMessage = (worker: Worker, message: unknown): void => {
    if (!isMessage(message)) return;
    switch (message.wharf) {
      case 'ready': {
        const r = running.get(worker);
        if (!r) return;
        r.ready = true;
        anyReady = true;
        const ready = [...running.values()].filter((w) => w.ready).length;
        if (ready === opts.workers) logger.info({ workers: ready }, 'workers ready');
        return;
      }
      case 'metrics-collected': {
        const c = collections.get(message.id);
        if (message.metrics) c?.responses.push(message.metrics);
        else if (message.error !== undefined) c?.finish(new Error(message.error));
        collect(worker, message.id);
        return;
      }
      case 'metrics-request': {
        const { id } = message;
        clusterMetrics().then(
          (body) => worker.send({ wharf: 'metrics-response', id, body } satisfies Message),
          (err: unknown) =>
            worker.send({ wharf: 'metrics-response', id, error: errorText(err) } satisfies Message),
        );
        return;
      }
      default:
        return;
    }
  };

  const fork = (slot: Slot): void => {
    slot.restart = undefined;
    const worker = cluster.fork({ [WORKER_SLOT_ENV]: String(slot.slot) });
    running.set(worker, { slot, startedAt: Date.now(), ready: false });
    // A message to a worker that just died fails here; its 'exit' handles the rest.
    worker.on('error', (err: Error) => {
      logger.warn({ slot: slot.slot, err }, 'worker channel error');
    });
  };

  // With `http.debug.addr`, the primary serves the aggregated metrics there; the workers leave it alone.
  const endpoint = metricsEndpoint(config);
  const debugAddr = config.http.debug?.addr;
  let debug: DebugServer | undefined;
  if (debugAddr !== undefined) {
    try {
      debug = await startDebugServer(debugAddr, logger, (router) => {
        router.get('/healthz', (ctx) => {
          ctx.body = { status: 'ok' };
        });
        if (endpoint?.listener === 'debug') {
          metricsRoute(
            router,
            endpoint.path,
            async () => ({ contentType: own.contentType, body: await clusterMetrics() }),
            logger,
          );
        }
      });
    } catch (err) {
      logger.fatal({ err }, 'debug server failed to start');
      process.exit(1);
    }
  }

  let exiting = false;
  const finishIfDone = (): void => {
    if (exiting || running.size > 0) return;
    exiting = true;
    const exit = (): void => {
      logger.info({ code: exitCode }, 'shut down');
      process.exit(exitCode);
    };
    if (debug) void debug.close().finally(exit);
    else exit();
  };

  const onExit = (worker: Worker, code: number | null, signal: string | null): void => {
    const r = running.get(worker);
    running.delete(worker);
    for (const [id] of collections) collect(worker, id);
    if (!r) return;
    // Not `pid`: every line carries the primary's own.
    const how = { slot: r.slot.slot, workerPid: worker.process.pid, code, signal };
    if (closing) {
      if (code !== 0) exitCode = 1;
      logger.info(how, 'worker exited');
      finishIfDone();
      return;
    }
    if (!r.ready && !anyReady) {
      // The first workers cannot start: a config or storage problem that a restart will not fix.
      logger.fatal(how, 'worker failed to start');
      stopAll(1, 'SIGKILL');
      return;
    }
    if (Date.now() - r.startedAt >= HEALTHY_LIFETIME_MS) r.slot.failures = 0;
    const delay = Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** r.slot.failures);
    r.slot.failures++;
    restarts.inc();
    logger.error({ ...how, restartInMs: delay }, 'worker died, restarting');
    r.slot.restart = setTimeout(() => {
      fork(r.slot);
    }, delay);
  };

  const stopAll = (code: number, signal: NodeJS.Signals): void => {
    closing = true;
    exitCode = Math.max(exitCode, code);
    for (const slot of slots) {
      clearTimeout(slot.restart);
      slot.restart = undefined;
    }
    for (const worker of running.keys()) worker.process.kill(signal);
    finishIfDone();
  };

  const shutdown = (signal: NodeJS.Signals): void => {
    if (closing) {
      logger.warn({ signal }, 'second signal, killing workers without draining');
      for (const worker of running.keys()) worker.process.kill('SIGKILL');
      process.exit(1);
    }
    logger.info({ signal, workers: running.size, draintimeoutMs: config.http.draintimeout }, 'shutting down');
    setTimeout(() => {
      logger.error({ workers: running.size }, 'workers did not finish in time, killing them');
      for (const worker of running.keys()) worker.process.kill('SIGKILL');
      process.exit(1);
    }, config.http.draintimeout + SHUTDOWN_GRACE_MS).unref();
    stopAll(0, 'SIGTERM');
  };

  cluster.on('message', onMessage);
  cluster.on('exit', onExit);
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  logger.info({ workers: opts.workers }, 'starting workers');
  for (const slot of slots) fork(slot);
}
