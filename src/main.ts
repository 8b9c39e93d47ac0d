import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { parseListenAddress, type Config } from '../config/schema.js';
import { createDriver } from '../storage-drivers/index.js';
import { createApp } from './http/app.js';
import { notYetImplemented } from './not-yet-implemented.js';
import { createRegistry } from './registry/registry.js';
import { scheduleUploadPurge } from './upload-purge-schedule.js';

export interface RunningServer {
  /** `host:port` the server listens on. */
  readonly address: string;
  /** Stops accepting, lets in-flight requests finish up to `http.draintimeout`, then closes the rest. */
  close(): Promise<void>;
}

/** The composition root: config → driver → registry core → koa app → HTTP server. */
export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  const pending = notYetImplemented(config);
  for (const warning of pending.warnings) logger.warn({ warning }, 'config warning');
  if (pending.errors.length > 0) throw new Error(pending.errors.join('; '));

  const driver = createDriver(config.storage);
  const registry = createRegistry(driver, {
    manifestMaxSize: config.validation.manifests.maxsize,
    deleteEnabled: config.storage.delete.enabled,
  });
  const app = createApp({
    registry,
    logger,
    responseHeaders: config.http.headers,
    ...(config.http.host !== undefined && { externalURL: config.http.host }),
  });
  const handle = app.callback();
  const server = createServer((req, res) => {
    void handle(req, res);
  });
  // Blob uploads may legitimately take longer than node's 5-minute default.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 65_000;

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
  const bound = server.address() as AddressInfo;
  const address = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
  logger.info({ address, driver: driver.name }, 'listening');
  return {
    address,
    close: async () => {
      stopPurge();
      await drain(server, config.http.draintimeout);
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
