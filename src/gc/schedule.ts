import type { Logger } from 'pino';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { pathFor } from '../registry/paths.js';
import { collectGarbage } from './collect.js';
import { LeaseHeldError, newOwnerId } from './lease.js';
import type { GcRecords } from './records.js';
import type { GcStatus } from './summary.js';

/** A run inside the server keeps few storage operations in flight, so that requests stay fast. */
const SERVER_CONCURRENCY = 4;

export interface GcScheduleSettings {
  readonly interval: number;
  readonly grace: number;
  readonly deleteUntagged: boolean;
}

/**
 * Runs GC every `interval` while the server serves. Replicas sharing storage coordinate through it:
 * a run starts only when the last recorded run (any replica's) finished at least `interval` ago, and the
 * lease keeps two from overlapping. The first check waits a random part of the interval (at most a
 * minute) so replicas started together do not race. Returns a stop function that aborts a run in progress.
 */
export function scheduleGc(
  driver: StorageDriver,
  settings: GcScheduleSettings,
  deps: { logger: Logger; status: GcStatus; records: GcRecords },
): () => Promise<void> {
  const { logger, status } = deps;
  const owner = newOwnerId();
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;

  const next = (delay: number): void => {
    if (abort.signal.aborted) return;
    timer = setTimeout(() => {
      running = tick().finally(() => {
        running = undefined;
      });
    }, delay);
    timer.unref();
  };

  const tick = async (): Promise<void> => {
    try {
      const sinceLast = Date.now() - (await lastFinished(driver));
      if (sinceLast < settings.interval) {
        // Another replica ran it recently (a clock ahead of ours counts as just now).
        next(Math.min(settings.interval, settings.interval - sinceLast));
        return;
      }
      status.running = true;
      const summary = await collectGarbage(driver, {
        graceMs: settings.grace,
        deleteUntagged: settings.deleteUntagged,
        records: deps.records,
        owner,
        logger,
        signal: abort.signal,
        concurrency: SERVER_CONCURRENCY,
      });
      status.lastRun = summary;
      logger.info(
        {
          durationMs: summary.durationMs,
          blobsRemoved: summary.blobs.removed,
          bytesRemoved: summary.blobs.bytesRemoved,
          manifestsRemoved: summary.manifests.removed,
          spared: summary.blobs.spared,
        },
        'gc finished',
      );
    } catch (err) {
      if (err instanceof LeaseHeldError) {
        logger.debug({ holder: err.holder.owner }, 'gc skipped, another replica runs it');
      } else if (!abort.signal.aborted) {
        status.lastError = { at: new Date().toISOString(), message: String(err) };
        logger.error({ err }, 'gc failed');
      }
    } finally {
      status.running = false;
    }
    next(settings.interval);
  };

  next(Math.random() * Math.min(settings.interval, 60_000));
  return async () => {
    abort.abort();
    clearTimeout(timer);
    await running;
  };
}

/** When the last run recorded in storage finished (epoch ms); 0 when none did or the record is unreadable. */
async function lastFinished(driver: StorageDriver): Promise<number> {
  try {
    const raw = (await driver.getContent(pathFor({ kind: 'gcLastRun' }))).toString('utf8');
    const finished = Date.parse((JSON.parse(raw) as { finishedAt?: string }).finishedAt ?? '');
    return Number.isNaN(finished) ? 0 : finished;
  } catch (err) {
    if (err instanceof PathNotFoundError || err instanceof SyntaxError) return 0;
    throw err;
  }
}
