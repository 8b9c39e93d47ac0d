// Accepted jobs wait here until they are verified. A transient failure (engine or registry down) is
// retried with backoff for as long as it takes, as the job stays in the journal; a permanent one ends
// the job with its reason. Nothing leaves the queue without a log line saying how.
import type { Logger } from 'pino';
import type { Job } from './events.js';
import { jobKey } from './journal.js';

/** Bounds how many holders run at once; waiters are served in order. */
export class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(readonly limit: number) {}

  async use<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiters.push(resolve));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiters.shift();
      if (next) next();
      else this.active--;
    }
  }
}

/** How the handler's failure is treated. */
export type FailureKind =
  /** Will succeed later (engine or registry unreachable): retried without limit. */
  | 'transient'
  /** Cannot succeed (the manifest is gone, the registry refuses the verdict): given up. */
  | 'permanent'
  /** Not understood: retried a few times, then given up. */
  | 'unknown';

export interface WorkQueueOptions {
  /** Verifies one job; resolves when it is finished for good. */
  handle: (job: Job) => Promise<void>;
  /** Called when the handler throws. */
  classify: (err: unknown) => FailureKind;
  /** The job is finished for good (handled, or given up with `reason`). */
  finished: (job: Job, failure?: string) => Promise<void>;
  /** Jobs handled at once (index children and container runs have their own limits). */
  parallel: number;
  /** More pending jobs than this are refused, so the registry keeps them and retries. */
  maxPending: number;
  logger: Logger;
  /** First retry delay; doubles up to maxBackoffMs (defaults 1 s and 60 s). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Attempts for failures of kind 'unknown' (default 5). */
  unknownAttempts?: number;
}

export class WorkQueue {
  private readonly opts: Required<WorkQueueOptions>;
  /** Every job accepted and not finished: waiting, running or waiting for a retry. */
  private readonly pending = new Map<string, Job>();
  private readonly ready: { job: Job; attempt: number }[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private running = 0;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(opts: WorkQueueOptions) {
    this.opts = { backoffMs: 1000, maxBackoffMs: 60_000, unknownAttempts: 5, ...opts };
  }

  get size(): number {
    return this.pending.size;
  }

  /** True when the job is now pending (or already was); false when the queue is full. */
  enqueue(job: Job): boolean {
    const key = jobKey(job);
    if (this.pending.has(key)) return true;
    if (this.pending.size >= this.opts.maxPending) return false;
    this.pending.set(key, job);
    this.ready.push({ job, attempt: 1 });
    this.pump();
    return true;
  }

  /** Stops starting jobs; resolves when running ones finished or after `timeoutMs`. */
  async close(timeoutMs: number): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    if (this.running === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.idleWaiters.push(resolve)),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  private pump(): void {
    while (!this.closed && this.running < this.opts.parallel) {
      const next = this.ready.shift();
      if (next === undefined) return;
      this.running++;
      void this.attempt(next.job, next.attempt).finally(() => {
        this.running--;
        if (this.running === 0) for (const wake of this.idleWaiters.splice(0)) wake();
        this.pump();
      });
    }
  }

  private async attempt(job: Job, attempt: number): Promise<void> {
    const log = this.opts.logger.child({ repository: job.repository, digest: job.digest });
    try {
      await this.opts.handle(job);
      await this.finish(job);
      return;
    } catch (err) {
      const kind = this.opts.classify(err);
      const reason = err instanceof Error ? err.message : String(err);
      if (kind === 'permanent' || (kind === 'unknown' && attempt >= this.opts.unknownAttempts)) {
        log.error({ err, attempt, kind }, 'verification given up');
        await this.finish(job, reason);
        return;
      }
      const base = Math.min(this.opts.backoffMs * 2 ** (attempt - 1), this.opts.maxBackoffMs);
      const retryInMs = Math.round(base * (0.8 + Math.random() * 0.4));
      log.warn({ err, attempt, kind, retryInMs }, 'verification failed, will retry');
      if (this.closed) return; // the journal keeps it for the next start
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.ready.push({ job, attempt: attempt + 1 });
        this.pump();
      }, retryInMs);
      this.timers.add(timer);
    }
  }

  private async finish(job: Job, failure?: string): Promise<void> {
    try {
      await this.opts.finished(job, failure);
    } catch (err) {
      // The journal entry stays; the next start verifies it again and finds the verdict.
      this.opts.logger.error(
        { err, repository: job.repository, digest: job.digest },
        'journal update failed',
      );
    }
    this.pending.delete(jobKey(job));
  }
}
