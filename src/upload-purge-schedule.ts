import type { Logger } from 'pino';
import type { StorageDriver } from '../storage-drivers/driver.js';
import { purgeUploads } from './registry/upload-purge.js';

export interface UploadPurgeSettings {
  readonly age: number;
  readonly interval: number;
  readonly dryrun: boolean;
}

/**
 * Runs upload purging every `interval`, as Distribution does. The first run waits a random part of a
 * minute so that replicas started together do not all walk storage at once. Returns a stop function.
 */
export function scheduleUploadPurge(
  driver: StorageDriver,
  settings: UploadPurgeSettings,
  logger: Logger,
): () => void {
  let timer: NodeJS.Timeout;
  const run = async (): Promise<void> => {
    try {
      const result = await purgeUploads(driver, {
        olderThan: new Date(Date.now() - settings.age),
        dryRun: settings.dryrun,
      });
      logger.info(
        { examined: result.examined, purged: result.purged.length, dryRun: settings.dryrun },
        'upload purge',
      );
    } catch (err) {
      logger.error({ err }, 'upload purge failed');
    }
    timer = setTimeout(() => void run(), settings.interval).unref();
  };
  timer = setTimeout(() => void run(), Math.random() * 60_000).unref();
  return () => {
    clearTimeout(timer);
  };
}
