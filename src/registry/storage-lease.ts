import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { deleteIfExists } from './links.js';

interface LeaseRecord {
  readonly owner: string;
  readonly expiresAt: string;
}

/**
 * One holder at a time among replicas sharing storage (GC runs: src/gc/lease.ts; webhook delivery per
 * endpoint): a lease object created with `putContentIfAbsent`, renewed in the background while held,
 * deleted on release. A lease past its expiry (its holder died) is taken over by deleting it only if it
 * still holds what was read, then creating it again.
 *
 * The object store gives no compare-and-delete, so two takers of one stale lease could in theory both
 * win; the holder re-reads the lease on every renewal and knows it lost when it is not its own. So a
 * lease saves duplicate work; callers must stay safe without it (GC's per-digest protocol, at-least-once
 * delivery).
 */
export class StorageLease {
  private record: LeaseRecord | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lost = false;
  private renewing: Promise<void> = Promise.resolve();

  constructor(
    private readonly driver: StorageDriver,
    private readonly path: string,
    readonly owner: string,
    private readonly ttlMs: number,
  ) {}

  /** Takes the lease if it is free or stale; `true` when this owner holds it afterwards. */
  async tryAcquire(): Promise<boolean> {
    if (this.isHeld()) return true;
    this.stopRenewing();
    for (let attempt = 0; attempt < 2; attempt++) {
      const mine = this.newRecord();
      if (await this.driver.putContentIfAbsent(this.path, JSON.stringify(mine))) {
        this.hold(mine);
        return true;
      }
      const seen = await this.read();
      if (seen === undefined) continue; // released meanwhile
      if (!isExpired(seen.record)) {
        if (seen.record.owner !== this.owner) return false;
        this.hold(seen.record); // ours still: a renewal read failed and judged it lost too early
        return true;
      }
      const again = await this.read();
      if (again?.raw === seen.raw) await deleteIfExists(this.driver, this.path);
    }
    return false;
  }

  /** Held, not taken over and not past its own expiry (a stalled process may have been replaced). */
  isHeld(): boolean {
    return !this.lost && this.record !== undefined && !isExpired(this.record) && this.timer !== undefined;
  }

  /** Stops renewing and deletes the lease if it is still ours. */
  async release(): Promise<void> {
    this.stopRenewing();
    await this.renewing;
    try {
      const seen = await this.read();
      if (seen?.record.owner === this.owner) await deleteIfExists(this.driver, this.path);
    } finally {
      this.record = undefined;
    }
  }

  private hold(record: LeaseRecord): void {
    this.record = record;
    this.lost = false;
    this.timer = setInterval(
      () => {
        this.renewing = this.renew();
      },
      Math.max(10, Math.floor(this.ttlMs / 3)),
    );
    this.timer.unref();
  }

  private stopRenewing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Who holds the lease now, if anyone (for a message naming them). */
  async holder(): Promise<{ owner: string; expiresAt: string } | undefined> {
    return (await this.read())?.record;
  }

  /** Extends the expiry if the lease is still ours; marks it lost otherwise. Runs in the background. */
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
      // Storage trouble: the current expiry still holds; the next renewal tries again.
    }
  }

  private newRecord(): LeaseRecord {
    return { owner: this.owner, expiresAt: new Date(Date.now() + this.ttlMs).toISOString() };
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

/** An unreadable lease counts as expired long ago, so a broken write cannot stop delivery forever. */
function parseLease(raw: string): LeaseRecord {
  try {
    const value = JSON.parse(raw) as Partial<LeaseRecord>;
    if (typeof value.owner === 'string' && typeof value.expiresAt === 'string') {
      return { owner: value.owner, expiresAt: value.expiresAt };
    }
  } catch {
    // fall through
  }
  return { owner: 'unreadable lease', expiresAt: new Date(0).toISOString() };
}

function isExpired(record: LeaseRecord): boolean {
  const expires = Date.parse(record.expiresAt);
  return Number.isNaN(expires) || expires < Date.now();
}
