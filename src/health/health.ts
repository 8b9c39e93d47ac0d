// Probes for Kubernetes and load balancers. `/healthz`: the process answers (liveness). `/readyz`: it
// can serve, so its storage answers a cheap call in time and it is not shutting down (readiness).
// `/debug/health` answers as Distribution's does. They sit before auth: probes carry no credentials.
import type { Router } from '@koa/router';
import type { Logger } from 'pino';
import { PathNotFoundError, type StorageDriver } from '../../storage-drivers/driver.js';

export type Readiness = { readonly ready: true } | { readonly ready: false; readonly reason: string };

export interface Health {
  /** Adds GET /healthz, /readyz and /debug/health. */
  readonly routes: <S>(router: Router<S>) => void;
  /** From now on /readyz answers 503, so that load balancers stop sending: the server is draining. */
  drain(): void;
  /** Whether the server can serve now (one storage call at a time, shared by concurrent probes). */
  check(): Promise<Readiness>;
}

export interface HealthOptions {
  readonly logger: Logger;
  /** How long the storage may take to answer before the server counts as not ready (default 2 s). */
  readonly timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 2000;

export function createHealth(driver: StorageDriver, opts: HealthOptions): Health {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let draining = false;
  let inFlight: Promise<Readiness> | undefined;
  let lastReady = true;

  const probeStorage = async (): Promise<Readiness> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<Readiness>((resolve) => {
      timer = setTimeout(() => {
        resolve({ ready: false, reason: `storage ${driver.name} did not answer within ${timeoutMs} ms` });
      }, timeoutMs);
    });
    // The root may not exist yet on an empty storage; that still proves the storage answers.
    const stat = driver.stat('/').then(
      (): Readiness => ({ ready: true }),
      (err: unknown): Readiness =>
        err instanceof PathNotFoundError
          ? { ready: true }
          : {
              ready: false,
              reason: `storage ${driver.name}: ${err instanceof Error ? err.message : String(err)}`,
            },
    );
    try {
      return await Promise.race([stat, timeout]);
    } finally {
      clearTimeout(timer);
    }
  };

  const check = async (): Promise<Readiness> => {
    if (draining) return { ready: false, reason: 'shutting down' };
    inFlight ??= probeStorage().finally(() => {
      inFlight = undefined;
    });
    const result = await inFlight;
    // Logged on changes only: probes come every few seconds.
    if (result.ready !== lastReady) {
      lastReady = result.ready;
      if (result.ready) opts.logger.info('ready');
      else opts.logger.warn({ reason: result.reason }, 'not ready');
    }
    return result;
  };

  return {
    routes: (router) => {
      router.get('/healthz', (ctx) => {
        ctx.set('Cache-Control', 'no-store');
        ctx.body = { status: 'ok' };
      });
      router.get('/readyz', async (ctx) => {
        const readiness = await check();
        ctx.set('Cache-Control', 'no-store');
        ctx.status = readiness.ready ? 200 : 503;
        ctx.body = readiness.ready ? { status: 'ok' } : { status: 'unavailable', reason: readiness.reason };
      });
      // Distribution's format: `{}` when healthy, else each failing check by name with its error.
      router.get('/debug/health', async (ctx) => {
        const readiness = await check();
        ctx.set('Cache-Control', 'no-store');
        ctx.status = readiness.ready ? 200 : 503;
        const failing = draining ? 'shutdown' : `storagedriver_${driver.name}`;
        ctx.body = readiness.ready ? {} : { [failing]: readiness.reason };
      });
    },
    drain() {
      draining = true;
    },
    check,
  };
}
