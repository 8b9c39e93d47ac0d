import { createServer, type Server } from 'node:http';
import type Koa from 'koa';
import { pino, type Logger } from 'pino';
import { parseConfig } from '../../config/load.js';
import type { ConfigInput } from '../../config/schema.js';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { createAuth } from '../../src/auth/auth.js';
import { createApp, type AppState } from '../../src/http/app.js';
import { createRegistry, type Registry } from '../../src/registry/registry.js';

export interface TestApp {
  readonly app: Koa<AppState>;
  /** An HTTP server around the app, not listening; for tests that need one. */
  readonly server: Server;
  readonly driver: StorageDriver;
  readonly registry: Registry;
}

export interface TestAppOptions {
  readonly deleteEnabled?: boolean;
  readonly manifestMaxSize?: number;
  readonly driver?: StorageDriver;
  readonly responseHeaders?: Record<string, string[]>;
  readonly externalURL?: string;
  /** An `auth` config section (as in the YAML file), validated by the config schema. */
  readonly auth?: NonNullable<NonNullable<ConfigInput>['auth']>;
  /** Default: silent (or `WHARF_TEST_LOG_LEVEL`). */
  readonly logger?: Logger;
}

/** The assembled app on the in-memory driver, as integration tests use it with supertest. */
export async function createTestApp(opts: TestAppOptions = {}): Promise<TestApp> {
  const driver = opts.driver ?? createInMemoryDriver();
  const registry = createRegistry(driver, {
    deleteEnabled: opts.deleteEnabled ?? true,
    manifestMaxSize: opts.manifestMaxSize ?? 4 * 1024 * 1024,
  });
  const logger = opts.logger ?? pino({ level: process.env.WHARF_TEST_LOG_LEVEL ?? 'silent' });
  const authConfig = opts.auth && parseConfig({ auth: opts.auth }).config.auth;
  const auth =
    authConfig &&
    (await createAuth(authConfig, {
      driver,
      logger,
      ...(opts.externalURL !== undefined && { externalURL: opts.externalURL }),
    }));
  const app = createApp({
    registry,
    logger,
    ...(opts.responseHeaders && { responseHeaders: opts.responseHeaders }),
    ...(opts.externalURL !== undefined && { externalURL: opts.externalURL }),
    ...(auth && { auth }),
  });
  const handle = app.callback();
  const server = createServer((req, res) => {
    void handle(req, res);
  });
  return { app, server, driver, registry };
}
