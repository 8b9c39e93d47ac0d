// The server's Prometheus metrics: one prom-client Registry per server (never the global one), fed by
// the HTTP middleware, the storage drivers' operation hook, the core's cache observer, the GC status and
// webhook delivery. The parts that report here know only small interfaces, not prom-client.
import type { Middleware } from 'koa';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { WrapOptions } from '../../storage-drivers/base.js';
import { InvalidOffsetError, InvalidPathError, PathNotFoundError } from '../../storage-drivers/driver.js';
import type { WorkerLink } from '../cluster.js';
import type { GcStatus } from '../gc/summary.js';
import type { AppState } from '../http/app.js';
import type { NotificationObserver } from '../notifications/observer.js';
import type { CacheObserver } from '../registry/registry.js';
import { httpMetrics } from './http.js';

export interface Exposition {
  readonly contentType: string;
  readonly body: string;
}

export interface ServerMetrics {
  readonly registry: Registry;
  /** For `outer`: requests by route, method and status, latency, body bytes, uploads in flight. */
  readonly middleware: Middleware<AppState>;
  /** For `createDriver`: latency and errors of every storage operation. */
  readonly storageHooks: WrapOptions;
  /** For `createRegistry`: hits and misses of the core's caches. */
  readonly cacheObserver: CacheObserver;
  /** For webhook delivery: events queued, delivered, failed and pending per endpoint. */
  readonly notificationObserver: NotificationObserver;
  /** Exposes the figures of scheduled GC runs as they are recorded in `status`. */
  readonly watchGc: (status: GcStatus) => void;
  /** What a scrape gets: this process's metrics, or, in a worker, every worker's aggregated. */
  readonly exposition: () => Promise<Exposition>;
  /** Stops answering the cluster primary's requests for this worker's metrics. */
  readonly close: () => void;
}

export interface ServerMetricsOptions {
  /** Set in a `serve --workers` worker: scrapes are answered with the whole cluster's figures. */
  readonly cluster?: WorkerLink;
  /** Process and Node.js metrics (CPU, memory, event loop, GC pauses); default true. */
  readonly processMetrics?: boolean;
}

const PREFIX = 'wharf_';
const STORAGE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** The label a storage error gets: its kind, never its message (bounded cardinality). */
function storageErrorKind(error: unknown): string {
  if (error instanceof PathNotFoundError) return 'not_found';
  if (error instanceof InvalidPathError) return 'invalid_path';
  if (error instanceof InvalidOffsetError) return 'invalid_offset';
  return 'backend';
}

export function createServerMetrics(options: ServerMetricsOptions = {}): ServerMetrics {
  const registry = new Registry();
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const storageDuration = new Histogram({
    name: `${PREFIX}storage_operation_duration_seconds`,
    help: 'Storage driver operations by driver and operation (a reader or writer: until it is opened)',
    labelNames: ['driver', 'operation'] as const,
    buckets: STORAGE_BUCKETS,
    registers,
  });
  const storageErrors = new Counter({
    name: `${PREFIX}storage_operation_errors_total`,
    help: 'Storage driver operations that failed, by driver, operation and kind (not_found is often an answer, not a fault)',
    labelNames: ['driver', 'operation', 'error'] as const,
    registers,
  });
  const storageHooks: WrapOptions = {
    onOperation: (operation, driver, durationMs, error) => {
      storageDuration.observe({ driver, operation }, durationMs / 1000);
      if (error !== undefined) storageErrors.inc({ driver, operation, error: storageErrorKind(error) });
    },
  };

  const cacheHits = new Counter({
    name: `${PREFIX}cache_hits_total`,
    help: 'In-memory cache lookups that found what they needed, by cache',
    labelNames: ['cache'] as const,
    registers,
  });
  const cacheMisses = new Counter({
    name: `${PREFIX}cache_misses_total`,
    help: 'In-memory cache lookups that had to go to storage, by cache',
    labelNames: ['cache'] as const,
    registers,
  });
  const cacheObserver: CacheObserver = (cache, hit) => {
    (hit ? cacheHits : cacheMisses).inc({ cache });
  };

  const notificationObserver = notificationMetrics(registers);
  const watchGc = gcMetrics(registers);

  const stopAnswering = options.cluster?.answerMetrics(() => registry.getMetricsAsJSON());
  const cluster = options.cluster;
  return {
    registry,
    middleware: httpMetrics(PREFIX, registers),
    storageHooks,
    cacheObserver,
    notificationObserver,
    watchGc,
    exposition: async () =>
      cluster
        ? { contentType: registry.contentType, body: await cluster.clusterMetrics() }
        : { contentType: registry.contentType, body: await registry.metrics() },
    close: () => {
      stopAnswering?.();
    },
  };
}

function notificationMetrics(registers: Registry[]): NotificationObserver {
  const queued = new Counter({
    name: `${PREFIX}notifications_queued_total`,
    help: 'Webhook events written to the durable queue, by endpoint',
    labelNames: ['endpoint'] as const,
    registers,
  });
  const delivered = new Counter({
    name: `${PREFIX}notifications_delivered_total`,
    help: 'Webhook events delivered (2xx), by endpoint',
    labelNames: ['endpoint'] as const,
    registers,
  });
  const latency = new Histogram({
    name: `${PREFIX}notifications_delivery_duration_seconds`,
    help: 'Successful webhook deliveries: time from sending the request to its answer, by endpoint',
    labelNames: ['endpoint'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  });
  const failed = new Counter({
    name: `${PREFIX}notifications_failed_total`,
    help: 'Failed webhook delivery attempts, by endpoint and reason (HTTP status, timeout, network)',
    labelNames: ['endpoint', 'reason'] as const,
    registers,
  });
  const pending = new Gauge({
    name: `${PREFIX}notifications_pending`,
    help: 'Webhook events waiting in the durable queue, by endpoint',
    labelNames: ['endpoint'] as const,
    // Workers share the queue in storage: each sees the same backlog, so a sum would count it N times.
    aggregator: 'max',
    registers,
  });
  return {
    queued: (endpoint) => {
      queued.inc({ endpoint });
    },
    delivered: (endpoint, events, seconds) => {
      delivered.inc({ endpoint }, events);
      latency.observe({ endpoint }, seconds);
    },
    failed: (endpoint, reason) => {
      failed.inc({ endpoint, reason });
    },
    pending: (endpoint, count) => {
      pending.set({ endpoint }, count);
    },
  };
}

/** Gauges of the last scheduled GC run, read from the status when scraped. */
function gcMetrics(registers: Registry[]): (status: GcStatus) => void {
  let status: GcStatus | undefined;
  // One worker runs the schedule; the others report zeros, so the cluster's figure is the maximum.
  const gauge = (name: string, help: string, read: (s: GcStatus) => number | undefined) =>
    new Gauge({
      name: `${PREFIX}gc_${name}`,
      help,
      aggregator: 'max',
      registers,
      collect() {
        const value = status === undefined ? undefined : read(status);
        if (value === undefined) this.reset();
        else this.set(value);
      },
    });
  const seconds = (iso: string): number => Date.parse(iso) / 1000;
  gauge('running', '1 while a scheduled garbage collection runs', (s) => (s.running ? 1 : 0));
  gauge(
    'last_run_timestamp_seconds',
    'When the last scheduled garbage collection finished (Unix time)',
    (s) => s.lastRun && seconds(s.lastRun.finishedAt),
  );
  gauge(
    'last_run_duration_seconds',
    'How long the last scheduled garbage collection took',
    (s) => s.lastRun && s.lastRun.durationMs / 1000,
  );
  gauge(
    'last_run_blobs_removed',
    'Blobs the last scheduled garbage collection deleted',
    (s) => s.lastRun?.blobs.removed,
  );
  gauge(
    'last_run_bytes_removed',
    'Bytes the last scheduled garbage collection reclaimed',
    (s) => s.lastRun?.blobs.bytesRemoved,
  );
  gauge(
    'last_run_manifests_removed',
    'Untagged manifests the last scheduled garbage collection deleted',
    (s) => s.lastRun?.manifests.removed,
  );
  gauge(
    'last_failure_timestamp_seconds',
    'When a scheduled garbage collection last failed (Unix time)',
    (s) => s.lastError && seconds(s.lastError.at),
  );
  return (watched) => {
    status = watched;
  };
}
