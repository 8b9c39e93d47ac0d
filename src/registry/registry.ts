import type { StorageDriver } from '../../storage-drivers/driver.js';
import { BlobStore } from './blobs.js';
import { Catalog } from './catalog.js';
import { ManifestStore } from './manifests.js';
import { ReferrerStore } from './referrers.js';
import { TagStore } from './tags.js';
import { UploadStore } from './uploads.js';

export interface RegistryOptions {
  /** Largest manifest accepted, in bytes. */
  readonly manifestMaxSize: number;
  /** Whether DELETE of blobs and manifests is allowed (`storage.delete.enabled`). */
  readonly deleteEnabled: boolean;
  /** Told of every lookup in the core's in-memory caches (metrics); the core knows no metrics library. */
  readonly cacheObserver?: CacheObserver;
}

/** `cache` names the cache (`manifests`, `upload_hash`); `hit` whether the lookup found what it needed. */
export type CacheObserver = (cache: string, hit: boolean) => void;

/** The registry core: every store over one storage driver. No HTTP in here. */
export interface Registry {
  readonly options: RegistryOptions;
  readonly driver: StorageDriver;
  readonly blobs: BlobStore;
  readonly uploads: UploadStore;
  readonly manifests: ManifestStore;
  readonly tags: TagStore;
  readonly referrers: ReferrerStore;
  readonly catalog: Catalog;
}

export function createRegistry(driver: StorageDriver, options: RegistryOptions): Registry {
  const blobs = new BlobStore(driver);
  const observe = options.cacheObserver;
  const manifests = new ManifestStore(driver, blobs, {
    maxSize: options.manifestMaxSize,
    ...(observe && { cacheObserver: observe }),
  });
  return {
    options,
    driver,
    blobs,
    uploads: new UploadStore(driver, blobs, observe),
    manifests,
    tags: new TagStore(driver),
    referrers: new ReferrerStore(driver, manifests),
    catalog: new Catalog(driver),
  };
}
