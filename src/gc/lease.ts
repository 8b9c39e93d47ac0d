import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { pathFor } from '../registry/paths.js';
import { StorageLease } from '../registry/storage-lease.js';

export const LEASE_TTL_MS = 60_000;

/** Who holds the lease, as the lease file says. */
interface LeaseRecord {
  readonly owner: string;
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

/** One GC at a time across replicas sharing storage: the storage lease at GC's own path. */
export class Lease {
  private readonly lease: StorageLease;

  constructor(
    driver: StorageDriver,
    readonly owner: string,
    ttlMs = LEASE_TTL_MS,
  ) {
    this.lease = new StorageLease(driver, pathFor({ kind: 'gcLease' }), owner, ttlMs);
  }

  /** Takes the lease (renewed in the background until `release`); `LeaseHeldError` when another holds it. */
  async acquire(): Promise<void> {
    if (await this.lease.tryAcquire()) return;
    const holder = await this.lease.holder();
    throw new LeaseHeldError(holder ?? { owner: 'unknown', expiresAt: new Date().toISOString() });
  }

  /**
   * Throws `LeaseLostError` once a renewal found the lease in other hands, or when our own expiry has
   * passed (a process that stalled past it may have been taken over). Call before destructive steps.
   */
  assertHeld(): void {
    if (!this.lease.isHeld()) throw new LeaseLostError(this.owner);
  }

  renew(): Promise<void> {
    return this.lease.renew();
  }

  release(): Promise<void> {
    return this.lease.release();
  }
}
