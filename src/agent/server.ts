// The agent's HTTP surface: event intake, its public keys, liveness and readiness.
import Router from '@koa/router';
import Koa, { type Context } from 'koa';
import type { Logger } from 'pino';
import type { JSONWebKeySet } from '../verify/verdict.js';
import { MalformedEventError, selectJobs, type Job } from './events.js';
import { isAuthorized, SIGNATURE_HEADER, type IntakeSecrets } from './intake-auth.js';

/** Event batches are small (Distribution sends a few events per request). */
export const MAX_EVENT_BODY = 1024 * 1024;

export interface AgentAppDeps {
  secrets: IntakeSecrets;
  jwks: JSONWebKeySet;
  /** Persists then queues each job; false when the queue is full. Throws when persisting fails. */
  accept: (jobs: Job[]) => Promise<boolean>;
  /** Resolves when the Docker engine answers; the reason otherwise. */
  ready: () => Promise<string | undefined>;
  logger: Logger;
}

class BodyTooLargeError extends Error {}

async function readBody(ctx: Context): Promise<Buffer> {
  if (Number(ctx.get('Content-Length') || 0) > MAX_EVENT_BODY) throw new BodyTooLargeError();
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > MAX_EVENT_BODY) {
      ctx.req.resume();
      throw new BodyTooLargeError();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

export function createAgentApp(deps: AgentAppDeps): Koa {
  const { logger } = deps;
  const app = new Koa();
  const router = new Router();

  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      ctx.status = 500;
      ctx.body = { error: 'internal error' };
      ctx.app.emit('error', err, ctx);
    }
  });

  router.post('/events', async (ctx) => {
    let body: Buffer;
    try {
      body = await readBody(ctx);
    } catch (err) {
      if (!(err instanceof BodyTooLargeError)) throw err;
      logger.warn({ limit: MAX_EVENT_BODY }, 'event body too large');
      ctx.status = 413;
      ctx.body = { error: `body larger than ${MAX_EVENT_BODY} bytes` };
      return;
    }
    const headers = {
      authorization: ctx.get('Authorization') || undefined,
      signature: ctx.get(SIGNATURE_HEADER) || undefined,
    };
    if (!isAuthorized(deps.secrets, headers, body)) {
      logger.warn(
        { remote: ctx.ip, hasToken: !!headers.authorization, hasSignature: !!headers.signature },
        'event refused: not authorized',
      );
      ctx.status = 401;
      ctx.set('WWW-Authenticate', 'Bearer realm="wharf-agent"');
      ctx.body = { error: 'a valid bearer token or X-Wharf-Signature-256 header is required' };
      return;
    }
    let selection;
    try {
      selection = selectJobs(body);
    } catch (err) {
      if (!(err instanceof MalformedEventError)) throw err;
      logger.warn({ reason: err.message }, 'malformed event refused');
      ctx.status = 400;
      ctx.body = { error: err.message };
      return;
    }
    for (const ignored of selection.ignored) logger.debug(ignored, 'event ignored');
    if (!(await deps.accept(selection.jobs))) {
      logger.warn({ jobs: selection.jobs.length }, 'event refused: queue full');
      ctx.status = 503;
      ctx.set('Retry-After', '30');
      ctx.body = { error: 'the verification queue is full; retry later' };
      return;
    }
    for (const job of selection.jobs) {
      logger.info({ repository: job.repository, digest: job.digest, event: job.eventId }, 'event accepted');
    }
    ctx.status = 202;
    ctx.body = { accepted: selection.jobs.length, ignored: selection.ignored.length };
  });

  router.get('/.well-known/jwks.json', (ctx) => {
    ctx.set('Cache-Control', 'max-age=300');
    ctx.body = deps.jwks;
  });

  router.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });

  router.get('/readyz', async (ctx) => {
    const problem = await deps.ready();
    ctx.status = problem === undefined ? 200 : 503;
    ctx.body = problem === undefined ? { status: 'ok' } : { status: 'unavailable', docker: problem };
  });

  app.use(router.routes());
  app.use(router.allowedMethods());
  app.on('error', (err: unknown) => {
    logger.error({ err }, 'request failed');
  });
  return app;
}
