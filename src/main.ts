import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import { gcSettings, parseListenAddress, type Config } from '../config/schema.js';
import { createDriver, PathNotFoundError } from '../storage-drivers/index.js';
import { scheduleGc } from './gc/schedule.js';
import { newGcStatus, type GcStatus } from './gc/summary.js';
import { createAuth } from './auth/auth.js';
import { createApp, type AppState } from './http/app.js';
import { createHttpServer } from './http/tls.js';
import { notYetImplemented } from './not-yet-implemented.js';
import { createRegistry } from './registry/registry.js';
import { workerLink } from './cluster.js';
import { createServerMetrics } from './metrics/metrics.js';
import { startOperations } from './metrics/operations.js';
import { scheduleUploadPurge } from './upload-purge-schedule.js';

export interface RunningServer {
  /** `host:port` the server listens on. */
  readonly address: string;
  /** Scheduled garbage collection: running now, the last run's summary (for metrics, issue 7). */
  readonly gc: GcStatus;
  /** Stops accepting, lets in-flight requests finish up to `http.draintimeout`, then closes the rest. */
  close(): Promise<void>;
}

/** The composition root: config → driver → registry core → koa app → HTTP server. */
export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  const pending = notYetImplemented(config);
  for (const warning of pending.warnings) logger.warn({ warning }, 'config warning');
  if (pending.errors.length > 0) throw new Error(pending.errors.join('; '));

  // Metrics come first (block "metrics and health"): the driver and the core report into them.
  const cluster = workerLink();
  const metrics = createServerMetrics({ ...(cluster && { cluster }) });
  const driver = createDriver(config.storage, metrics.storageHooks);
  // Fail at start-up, in one line, when the storage cannot be reached (dead endpoint, bucket, credentials).
  await driver.stat('/').catch((err: unknown) => {
    if (err instanceof PathNotFoundError) return;
    // No `cause`: the driver's message says it all, and the logger would repeat it once per cause.
    const detail = err instanceof Error ? err.message : String(err);
    throw new Error(`storage ${driver.name} is not usable: ${detail}`);
  });
  const registry = createRegistry(driver, {
    manifestMaxSize: config.validation.manifests.maxsize,
    deleteEnabled: config.storage.delete.enabled,
    cacheObserver: metrics.cacheObserver,
  });
  const externalURL = config.http.host;
  const auth = config.auth
    ? await createAuth(config.auth, { driver, logger, ...(externalURL !== undefined && { externalURL }) })
    : undefined;
  // Parts that plug into the app: each adds its middleware here and its shutdown to `closers`.
  const outer: Middleware<AppState>[] = [];
  const guards: Middleware<AppState>[] = [];
  const closers: (() => Promise<void>)[] = [];
  // >>> metrics and health (owner: src/metrics) >>>
  // `metrics` (created before the driver, above) also carries `notificationObserver` for webhooks.
  const operations = await startOperations({ config, logger, driver, metrics, clustered: !!cluster });
  outer.push(metrics.middleware);
  closers.push(() => operations.close());
  // <<< metrics and health <<<
  // >>> notifications (owner: src/notifications) >>>
  if (config.notifications && config.notifications.endpoints.length > 0) {
    // Loaded only when webhooks are configured; delivery of what is queued in storage starts now.
    const { createNotifications } = await import('./notifications/notifications.js');
    const notifications = createNotifications(config.notifications, {
      driver,
      registry,
      logger,
      observer: metrics.notificationObserver,
      port: parseListenAddress(config.http.addr).port,
      ...(externalURL !== undefined && { externalURL }),
    });
    outer.push(notifications.middleware);
    closers.push(() => notifications.close());
  }
  // <<< notifications <<<
  // >>> quarantine (owner: src/verify) >>>
  if (config.verification && config.verification.quarantine.length > 0) {
    const { createQuarantine } = await import('./verify/quarantine.js');
    const quarantine = await createQuarantine(registry, config.verification, logger);
    if (quarantine) {
      guards.push(quarantine.middleware);
      closers.push(quarantine.close);
    }
  }
  // <<< quarantine <<<
  const app = createApp({
    registry,
    logger,
    responseHeaders: config.http.headers,
    ...(externalURL !== undefined && { externalURL }),
    ...(auth && { auth }),
    hooks: { outer, guards, routes: operations.routes },
  });
  const handle = app.callback();
  // Plain HTTP, or HTTPS with http.tls; the timeouts for slow clients are set there.
  const { server } = await createHttpServer(
    config.http.tls,
    (req, res) => {
      void handle(req, res);
    },
    {
      onTlsReload: (result) => {
        if ('error' in result) {
          logger.warn(
            { err: result.error },
            'TLS files changed but cannot be used; serving the previous certificate',
          );
        } else {
          const { subject, validTo, fingerprint256 } = result.certificate;
          logger.info({ subject, validTo, fingerprint256 }, 'TLS certificate reloaded');
        }
      },
    },
  );

  const { host, port } = parseListenAddress(config.http.addr);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const purging = config.storage.maintenance.uploadpurging;
  const stopPurge = purging.enabled ? scheduleUploadPurge(driver, purging, logger) : () => undefined;
  const gc = gcSettings(config);
  const gcStatus = newGcStatus();
  metrics.watchGc(gcStatus);
  // Upload purging has its own schedule above, so scheduled GC runs leave uploads alone.
  const stopGc = gc.interval
    ? scheduleGc(
        driver,
        { interval: gc.interval, grace: gc.grace, deleteUntagged: gc.deleteuntagged },
        { logger, status: gcStatus, records: registry.blobs.gc },
      )
    : () => Promise.resolve();
  const bound = server.address() as AddressInfo;
  const address = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
  logger.info({ address, driver: driver.name, tls: config.http.tls !== undefined }, 'listening');
  return {
    address,
    gc: gcStatus,
    close: async () => {
      // Probes answer 503 from now on, so load balancers stop sending while in-flight requests finish.
      operations.health.drain();
      stopPurge();
      await Promise.all([stopGc(), drain(server, config.http.draintimeout)]);
      // After the drain: requests that finished during it may still have queued work (events).
      await Promise.all(closers.map((close) => close()));
    },
  };
}

async function drain(server: Server, timeoutMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  server.closeIdleConnections();
  const timer = setTimeout(() => {
    server.closeAllConnections();
  }, timeoutMs);
  await closed;
  clearTimeout(timer);
}
