import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { deleteIfExists } from './links.js';
import { baseName, REPOSITORIES_ROOT } from './paths.js';

export interface UploadPurgeResult {
  readonly examined: number;
  readonly purged: string[];
}

/**
 * Deletes upload sessions started before `olderThan`: clients that gave up leave their partial data
 * behind. A session whose start time cannot be read is judged by its directory's modification time.
 */
export async function purgeUploads(
  driver: StorageDriver,
  options: { olderThan: Date; dryRun: boolean },
): Promise<UploadPurgeResult> {
  const stale: string[] = [];
  let examined = 0;
  const uploadDirs: string[] = [];
  try {
    await driver.walk(REPOSITORIES_ROOT, {
      onEntry: (info) => {
        if (!info.isDir) return;
        const base = baseName(info.path);
        if (base === '_uploads') uploadDirs.push(info.path);
        return base.startsWith('_') ? 'skip' : undefined;
      },
    });
  } catch (err) {
    if (err instanceof PathNotFoundError) return { examined, purged: [] };
    throw err;
  }
  for (const dir of uploadDirs) {
    for (const session of await listOrEmpty(driver, dir)) {
      examined++;
      if ((await startedAt(driver, session)) < options.olderThan) stale.push(session);
    }
  }
  if (!options.dryRun) for (const session of stale) await deleteIfExists(driver, session);
  return { examined, purged: stale };
}

async function listOrEmpty(driver: StorageDriver, path: string): Promise<string[]> {
  try {
    return await driver.list(path);
  } catch (err) {
    if (err instanceof PathNotFoundError) return [];
    throw err;
  }
}

async function startedAt(driver: StorageDriver, session: string): Promise<Date> {
  try {
    const text = (await driver.getContent(`${session}/startedat`)).toString('utf8').trim();
    const time = new Date(text);
    if (!Number.isNaN(time.getTime())) return time;
  } catch (err) {
    if (!(err instanceof PathNotFoundError)) throw err;
  }
  try {
    return (await driver.stat(session)).modTime;
  } catch (err) {
    if (err instanceof PathNotFoundError) return new Date();
    throw err;
  }
}
