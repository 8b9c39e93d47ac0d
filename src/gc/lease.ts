import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { deleteIfExists } from '../registry/links.js';
import { pathFor } from '../registry/paths.js';

export const LEASE_TTL_MS = 60_000;

/** What the lease file holds. */
export interface LeaseRecord {
  readonly owner: string;
  readonly acquiredAt: string;
  readonly expiresAt: string;
}

/** Another GC holds the lease and it has not expired. */
export class LeaseHeldError extends Error {
  constructor(readonly holder: LeaseRecord) {
    super(`another garbage collection is running (${holder.owner}, lease until ${holder.expiresAt})`);
    this.name = 'LeaseHeldError';
  }
}

/** This GC's lease was taken over or removed: it must stop deleting. */
export class LeaseLostError extends Error {
  constructor(owner: string) {
    super(`garbage collection lease of ${owner} was lost; stopping`);
    this.name = 'LeaseLostError';
  }
}

/** A unique owner id for logs and the lease file: host, pid and a random part. */
export function newOwnerId(): string {
  return `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
}

/**
 * One GC at a time across replicas sharing storage: a lease file created with `putContentIfAbsent`,
 * renewed while the run lasts and deleted at the end. A lease past its expiry (its holder died) is taken
 * over by deleting it only if it still holds what was read, then creating it again.
 *
 * The object store gives no compare-and-delete, so two takers of one stale lease could in theory both
 * win; the holder re-reads the lease on every renewal and stops when it is not its own. Exclusivity is
 * about wasted work, not safety: the per-digest protocol in src/gc/collect.ts is safe with two GCs.
 */
export class Lease {
  private record: LeaseRecord | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lost = false;
  private renewing: Promise<void> = Promise.resolve();

  constructor(
    private readonly driver: StorageDriver,
    readonly owner: string,
    private readonly ttlMs = LEASE_TTL_MS,
  ) {}

  private get path(): string {
    return pathFor({ kind: 'gcLease' });
  }

  /** Takes the lease (renewed in the background until `release`); `LeaseHeldError` when another holds it. */
  async acquire(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const mine = this.newRecord();
      if (await this.driver.putContentIfAbsent(this.path, JSON.stringify(mine))) {
        this.record = mine;
        this.lost = false;
        this.timer = setInterval(
          () => {
            this.renewing = this.renew();
          },
          Math.max(10, Math.floor(this.ttlMs / 3)),
        );
        this.timer.unref();
        return;
      }
      const seen = await this.read();
      if (seen === undefined) continue; // released meanwhile
      if (!isExpired(seen.record)) throw new LeaseHeldError(seen.record);
      // Stale: delete it only if it is still the record we judged, then race for it again.
      const again = await this.read();
      if (again?.raw === seen.raw) await deleteIfExists(this.driver, this.path);
    }
    const holder = await this.read();
    throw new LeaseHeldError(
      holder?.record ?? { owner: 'unknown', acquiredAt: '', expiresAt: new Date().toISOString() },
    );
  }

  /**
   * Throws `LeaseLostError` once a renewal found the lease in other hands, or when our own expiry has
   * passed (a process that stalled past it may have been taken over). Call before destructive steps.
   */
  assertHeld(): void {
    if (this.lost || !this.record || isExpired(this.record)) throw new LeaseLostError(this.owner);
  }

  /** Extends the expiry if the lease is still ours; marks it lost otherwise. */
  async renew(): Promise<void> {
    if (!this.record || this.lost) return;
    try {
      const seen = await this.read();
      if (seen?.record.owner !== this.owner) {
        this.lost = true;
        return;
      }
      const next = { ...this.record, expiresAt: new Date(Date.now() + this.ttlMs).toISOString() };
      await this.driver.putContent(this.path, JSON.stringify(next));
      this.record = next;
    } catch {
      // Storage trouble: keep going while the current expiry lasts; the next renewal retries.
      if (isExpired(this.record)) this.lost = true;
    }
  }

  /** Stops renewing and deletes the lease if it is still ours. */
  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.renewing;
    const seen = await this.read();
    if (seen?.record.owner === this.owner) await deleteIfExists(this.driver, this.path);
    this.record = undefined;
  }

  private newRecord(): LeaseRecord {
    const now = Date.now();
    return {
      owner: this.owner,
      acquiredAt: new Date(now).toISOString(),
      expiresAt: new Date(now + this.ttlMs).toISOString(),
    };
  }

  private async read(): Promise<{ raw: string; record: LeaseRecord } | undefined> {
    let raw: string;
    try {
      raw = (await this.driver.getContent(this.path)).toString('utf8');
    } catch (err) {
      if (err instanceof PathNotFoundError) return undefined;
      throw err;
    }
    return { raw, record: parseLease(raw) };
  }
}

/** An unreadable lease file counts as expired long ago, so a broken write cannot block GC forever. */
function parseLease(raw: string): LeaseRecord {
  try {
    const value = JSON.parse(raw) as Partial<LeaseRecord>;
    if (typeof value.owner === 'string' && typeof value.expiresAt === 'string') {
      return { owner: value.owner, acquiredAt: value.acquiredAt ?? '', expiresAt: value.expiresAt };
    }
  } catch {
    // fall through
  }
  return { owner: 'unreadable lease', acquiredAt: '', expiresAt: new Date(0).toISOString() };
}

function isExpired(record: LeaseRecord): boolean {
  const expires = Date.parse(record.expiresAt);
  return Number.isNaN(expires) || expires < Date.now();
}
