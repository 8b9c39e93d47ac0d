// The operations endpoints of one server: health probes and metrics on the main listener, or on the
// debug listener (`http.debug.addr`) as Distribution does. In a `serve --workers` worker, the primary
// owns the debug listener and the worker serves only the main one.
import type { Router } from '@koa/router';
import type { Logger } from 'pino';
import type { Config } from '../../config/schema.js';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { createHealth, type Health } from '../health/health.js';
import { metricsEndpoint, metricsRoute, startDebugServer, type DebugServer } from './endpoint.js';
import type { ServerMetrics } from './metrics.js';

export interface Operations {
  readonly health: Health;
  /** For the app's `routes` hook: what the main listener serves without auth. */
  readonly routes: <S>(router: Router<S>) => void;
  /** The address of the debug listener, when this server runs one. */
  readonly debugAddress?: string;
  /** Closes the debug listener; runs after the main listener has drained. */
  close(): Promise<void>;
}

export async function startOperations(deps: {
  config: Config;
  logger: Logger;
  driver: StorageDriver;
  metrics: ServerMetrics;
  /** True in a `serve --workers` worker: the primary serves the debug listener. */
  clustered: boolean;
}): Promise<Operations> {
  const { config, logger, metrics } = deps;
  const health = createHealth(deps.driver, { logger });
  const endpoint = metricsEndpoint(config);
  const addr = config.http.debug?.addr;
  const debug: DebugServer | undefined =
    addr === undefined || deps.clustered
      ? undefined
      : await startDebugServer(addr, logger, (router) => {
          health.routes(router);
          if (endpoint?.listener === 'debug') metricsRoute(router, endpoint.path, metrics.exposition, logger);
        });
  return {
    health,
    routes: (router) => {
      health.routes(router);
      if (endpoint?.listener === 'main') metricsRoute(router, endpoint.path, metrics.exposition, logger);
    },
    ...(debug && { debugAddress: debug.address }),
    async close() {
      metrics.close();
      await debug?.close();
    },
  };
}
