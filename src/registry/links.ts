import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { parseDigest, type Digest } from './digest.js';

/** Reads a Distribution link file (`sha256:<hex>`); `undefined` when it does not exist or is garbage. */
export async function readLink(driver: StorageDriver, path: string): Promise<Digest | undefined> {
  try {
    return parseDigest((await driver.getContent(path)).toString('utf8').trim());
  } catch (err) {
    if (err instanceof PathNotFoundError) return undefined;
    throw err;
  }
}

export async function writeLink(driver: StorageDriver, path: string, digest: Digest): Promise<void> {
  await driver.putContent(path, digest.toString());
}

/** `true` when a file that reads would find is at the path (one HEAD on S3). */
export async function fileExists(driver: StorageDriver, path: string): Promise<boolean> {
  return (await driver.statFile(path)) !== undefined;
}

/** `true` when a file or directory is at the path (for files, `fileExists` is cheaper). */
export async function exists(driver: StorageDriver, path: string): Promise<boolean> {
  try {
    await driver.stat(path);
    return true;
  } catch (err) {
    if (err instanceof PathNotFoundError) return false;
    throw err;
  }
}

/** Deletes, treating "already gone" as success: deletes race with each other and with GC. */
export async function deleteIfExists(driver: StorageDriver, path: string): Promise<void> {
  try {
    await driver.delete(path);
  } catch (err) {
    if (!(err instanceof PathNotFoundError)) throw err;
  }
}
