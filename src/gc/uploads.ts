import type { FileInfo, StorageDriver, WalkOptions } from '../../storage-drivers/driver.js';
import { purgeUploads, type UploadPurgeResult } from '../registry/upload-purge.js';
import { REPOSITORIES_ROOT } from '../registry/paths.js';

/**
 * Upload purging as the server schedules it (`purgeUploads`), fed the directories GC's own walk already
 * found: on S3 every walk is a listing of the whole prefix, and a run lists storage once.
 */
export function purgeUploadsFromScan(
  driver: StorageDriver,
  repositoryDirs: readonly FileInfo[],
  options: { olderThan: Date; dryRun: boolean },
): Promise<UploadPurgeResult> {
  return purgeUploads(replayingWalk(driver, repositoryDirs), options);
}

/** The driver, except that a walk of `repositories/` replays `entries` instead of listing storage. */
function replayingWalk(driver: StorageDriver, entries: readonly FileInfo[]): StorageDriver {
  const walk = async (path: string, options: WalkOptions): Promise<void> => {
    if (path !== REPOSITORIES_ROOT) return driver.walk(path, options);
    let skipped: string | undefined;
    for (const info of entries) {
      if (skipped !== undefined && info.path.startsWith(`${skipped}/`)) continue;
      skipped = (await options.onEntry(info)) === 'skip' ? info.path : undefined;
    }
  };
  return {
    name: driver.name,
    getContent: (p) => driver.getContent(p),
    putContent: (p, c) => driver.putContent(p, c),
    putContentIfAbsent: (p, c) => driver.putContentIfAbsent(p, c),
    reader: (p, o) => driver.reader(p, o),
    writer: (p, a) => driver.writer(p, a),
    stat: (p) => driver.stat(p),
    statFile: (p) => driver.statFile(p),
    list: (p) => driver.list(p),
    move: (s, d) => driver.move(s, d),
    delete: (p) => driver.delete(p),
    walk,
    redirectURL: (p, m) => driver.redirectURL(p, m),
  };
}
