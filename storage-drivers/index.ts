// Picks and builds the storage driver named in the `storage` section of the config.
import type { StorageDriver } from './driver.js';
import type { WrapOptions } from './base.js';
import { createFilesystemDriver, type FilesystemDriverParameters } from './filesystem/driver.js';
import { createInMemoryDriver } from './inmemory/driver.js';
import { createS3Driver, parseS3Parameters } from './s3/driver.js';

export * from './driver.js';
export type { DriverOperation, WrapOptions } from './base.js';
export { wrapDriver, isValidPath } from './base.js';
export { createFilesystemDriver, type FilesystemDriverParameters } from './filesystem/driver.js';
export { createInMemoryDriver } from './inmemory/driver.js';
export { createS3Driver, type S3DriverOptions, type S3DriverParameters } from './s3/driver.js';

/**
 * The `storage` section, as in Distribution's config.yml: exactly one driver key. Other keys
 * (`delete`, `redirect`, `maintenance`, ...) belong to the registry and are ignored here.
 */
export interface StorageConfig {
  readonly filesystem?: FilesystemDriverParameters;
  readonly inmemory?: object | null;
  readonly s3?: unknown;
  readonly [key: string]: unknown;
}

const DRIVER_KEYS = ['filesystem', 'inmemory', 's3'] as const;

export function createDriver(storage: StorageConfig, options?: WrapOptions): StorageDriver {
  const chosen = DRIVER_KEYS.filter((key) => storage[key] !== undefined);
  if (chosen.length !== 1) {
    const found = chosen.length === 0 ? 'none' : chosen.join(', ');
    throw new Error(`storage: configure exactly one driver (${DRIVER_KEYS.join(', ')}); found ${found}`);
  }
  if (storage.s3 !== undefined) {
    // As in Distribution: blob GETs redirect to presigned URLs unless `storage.redirect.disable` is set.
    const section = storage.redirect;
    const disabled =
      typeof section === 'object' && section !== null && 'disable' in section && section.disable === true;
    return createS3Driver(parseS3Parameters(storage.s3), { ...options, redirect: !disabled });
  }
  if (storage.inmemory !== undefined) return createInMemoryDriver(options);
  const rootdirectory = storage.filesystem?.rootdirectory;
  if (typeof rootdirectory !== 'string' || rootdirectory === '') {
    throw new Error('storage.filesystem.rootdirectory must be a non-empty string');
  }
  return createFilesystemDriver({ rootdirectory }, options);
}
