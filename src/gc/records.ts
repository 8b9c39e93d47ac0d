import { LRUCache } from 'lru-cache';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import type { Digest } from '../registry/digest.js';
import { deleteIfExists, fileExists } from '../registry/links.js';
import { pathFor } from '../registry/paths.js';

/**
 * A process skips re-touching a digest it touched this recently. The GC protocol (src/gc/collect.ts)
 * needs the grace period to exceed it; it is kept short so the argument holds even for a 2 s grace.
 */
export const TOUCH_SKIP_MS = 1000;
/** Downloads touch in the background and only to keep unreferenced blobs a little longer: rarely. */
export const BACKGROUND_TOUCH_SKIP_MS = 30_000;
/** How long a request waits for a sweep to decide a tombstoned digest before giving up on it. */
export const TOMBSTONE_WAIT_MS = 3000;
const TOMBSTONE_POLL_MS = 25;

export interface GcRecordsOptions {
  readonly touchSkipMs?: number;
  readonly tombstoneWaitMs?: number;
}

/**
 * The records the registry core and GC share through storage: a touch per digest (its modTime says
 * when the digest was last made referenced) and a tombstone per digest a sweep is deciding on.
 * Requests touch and read tombstones; GC writes tombstones and reads touches.
 */
export class GcRecords {
  /** digest → when this process last touched it (performance.now()). */
  private readonly recent: LRUCache<string, number>;
  private readonly touchSkipMs: number;
  /** How long a request waits for a sweep to decide; tests shorten it. */
  tombstoneWaitMs: number;

  constructor(
    private readonly driver: StorageDriver,
    options: GcRecordsOptions = {},
  ) {
    this.touchSkipMs = options.touchSkipMs ?? TOUCH_SKIP_MS;
    this.recent = new LRUCache({ max: 10_000, ttl: Math.max(this.touchSkipMs, BACKGROUND_TOUCH_SKIP_MS) });
    this.tombstoneWaitMs = options.tombstoneWaitMs ?? TOMBSTONE_WAIT_MS;
  }

  /** True when this process touched the digest within the skip window, so a new touch would add nothing. */
  touchedRecently(digest: Digest, windowMs = this.touchSkipMs): boolean {
    const at = this.recent.get(digest.toString());
    return at !== undefined && performance.now() - at < windowMs;
  }

  /** A touch for a download: not waited for, and at most once per BACKGROUND_TOUCH_SKIP_MS per digest. */
  touchInBackground(digest: Digest): void {
    if (this.touchedRecently(digest, BACKGROUND_TOUCH_SKIP_MS)) return;
    // A lost touch only shortens how long an unreferenced blob is kept.
    this.touch([digest]).catch(() => undefined);
  }

  /**
   * Records that the digests are in use now: one small write each, skipped for digests this process
   * touched within the skip window. Resolves once every touch is durable.
   */
  async touch(digests: readonly Digest[]): Promise<void> {
    const due = unique(digests).filter((d) => !this.touchedRecently(d));
    await Promise.all(
      due.map(async (digest) => {
        await this.driver.putContent(pathFor({ kind: 'gcTouch', digest }), new Date().toISOString());
        // Only after the write: a later operation that skips its own touch relies on this one.
        this.recent.set(digest.toString(), performance.now());
      }),
    );
  }

  /** When the digest was last touched (the touch file's modTime); `undefined` if never. */
  async touchTime(digest: Digest): Promise<Date | undefined> {
    try {
      return (await this.driver.stat(pathFor({ kind: 'gcTouch', digest }))).modTime;
    } catch (err) {
      if (err instanceof PathNotFoundError) return undefined;
      throw err;
    }
  }

  isTombstoned(digest: Digest): Promise<boolean> {
    return fileExists(this.driver, pathFor({ kind: 'gcTombstone', digest }));
  }

  /**
   * Waits while a sweep decides on the digest (it holds a tombstone for milliseconds): `none` when there
   * was no tombstone, `lifted` when it went during the wait (the caller must look again whether the
   * digest is still there: the sweep deletes before it lifts), `stuck` when it stayed (treat as gone).
   */
  async awaitTombstone(digest: Digest, seen?: boolean): Promise<'none' | 'lifted' | 'stuck'> {
    if (!(seen ?? (await this.isTombstoned(digest)))) return 'none';
    const deadline = Date.now() + this.tombstoneWaitMs;
    do {
      if (Date.now() >= deadline) return 'stuck';
      await new Promise((resolve) => setTimeout(resolve, TOMBSTONE_POLL_MS));
    } while (await this.isTombstoned(digest));
    return 'lifted';
  }

  async writeTombstone(digest: Digest, owner: string): Promise<void> {
    await this.driver.putContent(pathFor({ kind: 'gcTombstone', digest }), owner);
  }

  async removeTombstone(digest: Digest): Promise<void> {
    await deleteIfExists(this.driver, pathFor({ kind: 'gcTombstone', digest }));
  }

  async removeTouch(digest: Digest): Promise<void> {
    this.recent.delete(digest.toString());
    await deleteIfExists(this.driver, pathFor({ kind: 'gcTouch', digest }));
  }

  /**
   * The check after a write (see src/gc/collect.ts): the digests were touched, so each is usable if no
   * sweep holds it and `present` still finds it, read in that order. Returns the digests that are not.
   */
  async lostAfterTouch(
    entries: readonly { digest: Digest; present: () => Promise<boolean> }[],
  ): Promise<Digest[]> {
    const lost = await Promise.all(
      entries.map(async ({ digest, present }) => {
        // The tombstone is read before presence: a sweep deletes first and removes its tombstone last.
        if ((await this.awaitTombstone(digest)) === 'stuck') return digest;
        return (await present()) ? undefined : digest;
      }),
    );
    return lost.filter((d) => d !== undefined);
  }
}

function unique(digests: readonly Digest[]): Digest[] {
  const seen = new Map<string, Digest>();
  for (const d of digests) seen.set(d.toString(), d);
  return [...seen.values()];
}
