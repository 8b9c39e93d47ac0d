import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import { EVENTS_MEDIA_TYPE } from './event.js';
import type { StorageLease } from '../registry/storage-lease.js';
import type { NotificationObserver } from './observer.js';
import type { DurableQueue, QueueEntry } from './queue.js';

/** The header that carries the HMAC of the body when the endpoint has a `secret`. */
export const SIGNATURE_HEADER = 'X-Wharf-Signature-256';

export interface EndpointSettings {
  readonly name: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, readonly string[]>>;
  readonly timeoutMs: number;
  /** Consecutive failures retried at the `backoffMs` pace before the wait starts doubling. */
  readonly threshold: number;
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
  readonly secret?: string;
}

export interface RetrySchedule {
  readonly threshold: number;
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
}

/**
 * The wait after `failures` consecutive failed deliveries. Distribution's breaker retries at once until
 * `threshold` failures and then waits `backoff` between attempts; hammering a receiver that is down is
 * pointless, so here the first `threshold - 1` retries wait `backoff`, and from the `threshold`-th on the
 * wait doubles, up to `maxBackoff`.
 */
export function retryDelay(failures: number, schedule: RetrySchedule): number {
  if (failures <= 0) return 0;
  const { threshold, backoffMs, maxBackoffMs } = schedule;
  const doublings = Math.max(0, failures - threshold + 1);
  // Capped before multiplying, so that a long outage cannot overflow to Infinity.
  const delay = backoffMs * 2 ** Math.min(doublings, 40);
  return Math.min(Math.max(maxBackoffMs, backoffMs), delay);
}

/** `sha256=<hex>`: HMAC-SHA256 of the exact body with the endpoint's secret. */
export function signBody(secret: string, body: Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export type PostResult =
  | { readonly ok: true; readonly status: number }
  | { readonly ok: false; readonly reason: string; readonly detail: string };

/** One attempt. `reason` is the HTTP status as text, `timeout`, `network` or `aborted`. */
export async function postEnvelope(
  endpoint: EndpointSettings,
  body: Buffer,
  stop: AbortSignal,
): Promise<PostResult> {
  const headers = new Headers();
  for (const [name, values] of Object.entries(endpoint.headers)) {
    for (const value of values) headers.append(name, value);
  }
  if (!headers.has('Content-Type')) headers.set('Content-Type', EVENTS_MEDIA_TYPE);
  if (endpoint.secret !== undefined) headers.set(SIGNATURE_HEADER, signBody(endpoint.secret, body));
  const timeout = AbortSignal.timeout(endpoint.timeoutMs);
  try {
    const res = await fetch(endpoint.url, {
      method: 'POST',
      headers,
      body,
      signal: AbortSignal.any([timeout, stop]),
    });
    // Read the answer whole (within the timeout) so the connection can be reused.
    await res.arrayBuffer();
    if (res.status >= 200 && res.status < 300) return { ok: true, status: res.status };
    return { ok: false, reason: String(res.status), detail: `response status ${res.status}` };
  } catch (err) {
    if (stop.aborted) return { ok: false, reason: 'aborted', detail: 'shutting down' };
    if (timeout.aborted)
      return { ok: false, reason: 'timeout', detail: `no answer in ${endpoint.timeoutMs} ms` };
    return { ok: false, reason: 'network', detail: describeError(err) };
  }
}

/** fetch hides the useful part (ECONNREFUSED ...) in `cause`. */
function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause: unknown = err.cause;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code !== undefined ? `${code}: ${cause.message}` : cause.message;
  }
  return err.message;
}

export interface DeliveryTiming {
  /** How often the delivering replica looks for entries written by other replicas. */
  readonly pollMs: number;
  /** How often a replica without the lease tries to take it. */
  readonly leaseRetryMs: number;
}

/**
 * Delivers one endpoint's queue in order, one stored batch per POST, while this replica holds the
 * endpoint's lease. An entry is deleted only after a 2xx; a failure is retried (see `retryDelay`) until
 * it succeeds, so delivery is at least once: a crash between the answer and the delete re-sends the batch.
 */
export class DeliveryLoop {
  private stopped = false;
  private readonly stopController = new AbortController();
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private running: Promise<void> | undefined;
  private failures = 0;
  private pending = 0;

  constructor(
    private readonly queue: DurableQueue,
    private readonly lease: StorageLease,
    private readonly endpoint: EndpointSettings,
    private readonly timing: DeliveryTiming,
    private readonly logger: Logger,
    private readonly observer?: NotificationObserver,
  ) {}

  start(): void {
    this.running ??= this.run().catch((err: unknown) => {
      // run() handles its own errors; reaching here is a bug, and delivery would stop silently.
      this.logger.error({ endpoint: this.endpoint.name, err }, 'notification delivery stopped');
    });
  }

  /** New entries were stored: look now instead of at the next poll. */
  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Stops after the current step; an attempt in flight is abandoned (its entry stays queued). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopController.abort();
    this.wakeUp?.();
    await this.running;
  }

  private async run(): Promise<void> {
    const log = this.logger.child({ endpoint: this.endpoint.name });
    try {
      while (!this.stopped) {
        if (!(await this.acquire(log))) {
          // Another replica delivers; the backlog gauge still reads the shared queue, so it is right
          // on every replica (and a value from when this one delivered does not linger).
          if (this.observer) {
            const entries = await this.queue.list().catch(() => undefined);
            if (entries)
              this.observer.pending(
                this.endpoint.name,
                entries.reduce((n, e) => n + e.events, 0),
              );
          }
          await this.sleep(this.timing.leaseRetryMs, false);
          continue;
        }
        this.woken = false;
        let entries: QueueEntry[];
        try {
          entries = await this.queue.list();
        } catch (err) {
          log.warn({ err }, 'notification queue list failed');
          await this.sleep(this.timing.pollMs, false);
          continue;
        }
        this.pending = entries.reduce((sum, e) => sum + e.events, 0);
        this.observer?.pending(this.endpoint.name, this.pending);
        if (entries.length === 0) {
          await this.sleep(this.timing.pollMs, true);
          continue;
        }
        for (const entry of entries) {
          if (!this.mayDeliver() || !(await this.deliver(entry, log))) break;
        }
      }
    } finally {
      await this.lease.release().catch((err: unknown) => {
        log.warn({ err }, 'notification lease release failed');
      });
    }
  }

  private async acquire(log: Logger): Promise<boolean> {
    try {
      return await this.lease.tryAcquire();
    } catch (err) {
      log.warn({ err }, 'notification lease check failed');
      return false;
    }
  }

  /** `true` when the entry is done with (delivered, or gone); `false` to list the queue again. */
  private async deliver(entry: QueueEntry, log: Logger): Promise<boolean> {
    let body: Buffer | undefined;
    try {
      body = await this.queue.read(entry);
    } catch (err) {
      log.warn({ err, entry: entry.path }, 'notification queue read failed');
      await this.sleep(this.timing.pollMs, false);
      return false;
    }
    if (body === undefined) return true;
    for (;;) {
      if (!this.mayDeliver()) return false;
      const started = process.hrtime.bigint();
      const result = await postEnvelope(this.endpoint, body, this.stopController.signal);
      if (result.ok) {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        if (this.failures > 0) log.info({ failures: this.failures }, 'notification endpoint recovered');
        this.failures = 0;
        this.observer?.delivered(this.endpoint.name, entry.events, seconds);
        this.pending = Math.max(0, this.pending - entry.events);
        this.observer?.pending(this.endpoint.name, this.pending);
        try {
          await this.queue.remove(entry);
        } catch (err) {
          // It will be delivered again: at least once.
          log.warn({ err, entry: entry.path }, 'notification queue delete failed');
        }
        return true;
      }
      if (result.reason === 'aborted') return false;
      this.failures++;
      this.observer?.failed(this.endpoint.name, result.reason);
      const retryInMs = retryDelay(this.failures, this.endpoint);
      log.warn(
        {
          url: redactURL(this.endpoint.url),
          reason: result.reason,
          detail: result.detail,
          events: entry.events,
          failures: this.failures,
          retryInMs,
        },
        'notification delivery failed',
      );
      await this.sleep(retryInMs, false);
    }
  }

  private mayDeliver(): boolean {
    return !this.stopped && this.lease.isHeld();
  }

  /** Resolves after `ms`, at `stop()`, and, when `wakeable`, at `wake()`. */
  private sleep(ms: number, wakeable: boolean): Promise<void> {
    if (this.stopped || (wakeable && this.woken)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeUp = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeUp = wakeable
        ? done
        : () => {
            if (this.stopped) done();
          };
    });
  }
}

/** A URL for logs: credentials in it (`https://user:pass@host`) and its query are left out. */
export function redactURL(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '[invalid url]';
  }
}
