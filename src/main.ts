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

  const driver = createDriver(config.storage);
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
  // <<< metrics and health <<<
  // >>> notifications (owner: src/notifications) >>>
  // <<< notifications <<<
  // >>> quarantine (owner: src/verify) >>>
  // <<< quarantine <<<
  const app = createApp({
    registry,
    logger,
    responseHeaders: config.http.headers,
    ...(externalURL !== undefined && { externalURL }),
    ...(auth && { auth }),
    hooks: { outer, guards },
  });
  const handle = app.callback();
  // Plain HTTP, or HTTPS with http.tls; the timeouts for slow clients are set there.
  const { server } = await createHttpServer(config.http.tls, (req, res) => {
    void handle(req, res);
  });

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
