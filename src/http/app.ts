import { randomUUID } from 'node:crypto';
import { Router } from '@koa/router';
import Koa, { type Middleware } from 'koa';
import type { Logger } from 'pino';
import type { Auth } from '../auth/auth.js';
import type { Registry } from '../registry/registry.js';
import { errorMiddleware } from './error-middleware.js';
import { baseRoutes } from './routes/base.js';
import { blobRoutes } from './routes/blobs.js';
import { catalogRoutes } from './routes/catalog.js';
import { manifestRoutes } from './routes/manifests.js';
import { referrerRoutes } from './routes/referrers.js';
import { tagRoutes } from './routes/tags.js';
import { uploadRoutes } from './routes/uploads.js';

export interface AppDeps {
  readonly registry: Registry;
  readonly logger: Logger;
  /** `http.headers`: added to every response. */
  readonly responseHeaders?: Record<string, string[]>;
  /** `http.host`: the registry's external URL; Location headers are made absolute with it. */
  readonly externalURL?: string;
  /** `auth`: authentication, access rules and the built-in token server; absent: an open registry. */
  readonly auth?: Auth;
  /**
   * Middleware from other parts of the server, by where it sits. `outer` runs first and sees every
   * request and, after `await next()`, its final status (metrics, webhook events). `guards` run after
   * auth and before the routes (quarantine). `routes` adds routes outside /v2 that need no auth
   * (health, metrics).
   */
  readonly hooks?: {
    readonly outer?: readonly Middleware<AppState>[];
    readonly guards?: readonly Middleware<AppState>[];
    readonly routes?: (router: Router<AppState>) => void;
  };
}

/** Per-request state: a child logger that carries the request id. */
export interface AppState {
  log: Logger;
  /** Set by auth on catalog requests: the repositories the caller may pull. */
  canPull?: (name: string) => boolean;
  /** Set by auth: who made the request (user, `robot:<id>`, a token's subject), for the access log. */
  user?: string;
}

export function createApp({
  registry,
  logger,
  responseHeaders = {},
  externalURL,
  auth,
  hooks,
}: AppDeps): Koa<AppState> {
  const app = new Koa<AppState>();
  // X-Forwarded-* is not trusted: anyone could set it and dodge the per-address login limit. Behind a
  // proxy, `http.host` gives the external URL.
  app.proxy = false;
  // koa's own error printing is off: errorMiddleware answers and logs everything.
  app.silent = true;

  const externalBase = externalURL?.replace(/\/+$/, '');
  const router = new Router();
  auth?.routes(router);
  baseRoutes(router);
  catalogRoutes(router, registry);
  // Upload routes first: `/blobs/uploads/<id>` would otherwise match `/blobs/<digest>`.
  uploadRoutes(router, registry);
  blobRoutes(router, registry);
  manifestRoutes(router, registry);
  tagRoutes(router, registry);
  referrerRoutes(router, registry);

  for (const middleware of hooks?.outer ?? []) app.use(middleware);
  app.use(async (ctx, next) => {
    const started = process.hrtime.bigint();
    const requestId = ctx.get('X-Request-Id') || randomUUID();
    ctx.state.log = logger.child({ reqId: requestId });
    ctx.set('X-Request-Id', requestId);
    ctx.set('Docker-Distribution-API-Version', 'registry/2.0');
    for (const [header, values] of Object.entries(responseHeaders)) ctx.set(header, values);
    await next();
    const location: unknown = ctx.response.get('Location');
    if (externalBase !== undefined && typeof location === 'string' && location.startsWith('/')) {
      ctx.set('Location', `${externalBase}${location}`);
    }
    ctx.state.log.info(
      {
        method: ctx.method,
        path: ctx.path,
        status: ctx.status,
        user: ctx.state.user,
        ms: Number(process.hrtime.bigint() - started) / 1e6,
      },
      'request',
    );
  });
  app.use(errorMiddleware());
  if (hooks?.routes) {
    // Before auth: probes and scrapers carry no registry credentials.
    const open = new Router<AppState>();
    hooks.routes(open);
    app.use(open.routes());
  }
  if (auth) app.use(auth.middleware(router));
  for (const middleware of hooks?.guards ?? []) app.use(middleware);
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}
