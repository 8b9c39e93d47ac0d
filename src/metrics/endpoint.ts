// Where metrics are served: `/metrics` on the main listener, or, as in Distribution, on the debug
// listener at `http.debug.addr` (`http.debug.prometheus.{enabled,path}`), which carries no auth.
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Router } from '@koa/router';
import Koa from 'koa';
import type { Logger } from 'pino';
import { parseListenAddress, type Config } from '../../config/schema.js';
import type { Exposition } from './metrics.js';

export interface MetricsEndpoint {
  readonly listener: 'main' | 'debug';
  readonly path: string;
}

/** Where the config puts the metrics endpoint; undefined when it is turned off. */
export function metricsEndpoint(config: Config): MetricsEndpoint | undefined {
  const debug = config.http.debug;
  if (debug?.prometheus.enabled === false) return undefined;
  return {
    listener: debug?.addr === undefined ? 'main' : 'debug',
    path: debug?.prometheus.path ?? '/metrics',
  };
}

/** GET `path`: the Prometheus text exposition; 503 when it cannot be gathered (a worker did not answer). */
export function metricsRoute<S>(
  router: Router<S>,
  path: string,
  exposition: () => Promise<Exposition>,
  logger: Logger,
): void {
  router.get(path, async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    try {
      const { contentType, body } = await exposition();
      ctx.type = contentType;
      ctx.body = body;
    } catch (err) {
      logger.warn({ err }, 'metrics unavailable');
      ctx.status = 503;
      ctx.type = 'text/plain';
      ctx.body = `metrics unavailable: ${err instanceof Error ? err.message : String(err)}\n`;
    }
  });
}

export interface DebugServer {
  /** `host:port` it listens on. */
  readonly address: string;
  close(): Promise<void>;
}

/** Starts the debug listener (plain HTTP) with the routes `mount` adds; nothing else answers there. */
export async function startDebugServer(
  addr: string,
  logger: Logger,
  mount: (router: Router<never>) => void,
): Promise<DebugServer> {
  const app = new Koa();
  app.silent = true;
  app.on('error', (err: unknown) => {
    logger.warn({ err }, 'debug server error');
  });
  const router = new Router<never>();
  mount(router);
  app.use(router.routes());
  app.use(router.allowedMethods());
  const handle = app.callback();
  const server: Server = createServer((req, res) => {
    void handle(req, res);
  });
  const { host, port } = parseListenAddress(addr);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const address = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
  logger.info({ address }, 'debug server listening');
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        server.closeAllConnections();
      }),
  };
}
