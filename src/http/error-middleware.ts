import type { Middleware } from 'koa';
import { StorageDriverError } from '../../storage-drivers/driver.js';
import { RegistryError } from '../registry/errors.js';
import type { AppState } from './app.js';
import { writeError } from './errors.js';

/** Client hang-ups show up as stream errors; they are not server faults. */
function isClientAbort(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNABORTED';
}

// Network failures and overload of a storage backend (S3 after its retries): the client may retry later.
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
const OVERLOAD_NAMES = new Set(['TimeoutError', 'SlowDown', 'ServiceUnavailable', 'RequestTimeout']);

function isStorageUnavailable(err: unknown): err is StorageDriverError {
  if (!(err instanceof StorageDriverError)) return false;
  const cause = err.cause as
    { code?: unknown; name?: unknown; $metadata?: { httpStatusCode?: unknown } } | null | undefined;
  if (cause === null || typeof cause !== 'object') return false;
  if (typeof cause.code === 'string' && UNREACHABLE_CODES.has(cause.code)) return true;
  if (typeof cause.name === 'string' && OVERLOAD_NAMES.has(cause.name)) return true;
  const status = cause.$metadata?.httpStatusCode;
  return typeof status === 'number' && (status >= 500 || status === 429);
}

/**
 * The first middleware: every failure leaves as the OCI error envelope (koa's default answers in plain
 * text), and unexpected ones are logged once with the request's logger, never sent to the client.
 */
export function errorMiddleware(): Middleware<AppState> {
  return async (ctx, next) => {
    const logger = ctx.state.log;
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) writeError(ctx, 'ROUTE_UNKNOWN');
      else if (ctx.status === 405 && ctx.body === undefined) writeError(ctx, 'UNSUPPORTED');
    } catch (err) {
      if (ctx.headerSent) {
        if (!isClientAbort(err)) logger.error({ err }, 'error after response started');
        return;
      }
      if (err instanceof RegistryError) {
        writeError(ctx, err.kind, err.message || undefined, err.detail);
        return;
      }
      if (isClientAbort(err)) {
        // Nobody is listening any more; answer for the access log.
        ctx.status = 400;
        return;
      }
      const status = (err as { status?: unknown }).status;
      if (typeof status === 'number' && status === 413) {
        writeError(ctx, 'MANIFEST_TOO_LARGE');
        return;
      }
      if (isStorageUnavailable(err)) {
        logger.error({ err, driver: err.driver }, 'storage unavailable');
        writeError(ctx, 'UNAVAILABLE', 'storage is unavailable, retry later');
        return;
      }
      logger.error(
        { err, driver: err instanceof StorageDriverError ? err.driver : undefined },
        'request failed',
      );
      writeError(ctx, 'UNKNOWN');
    }
  };
}
