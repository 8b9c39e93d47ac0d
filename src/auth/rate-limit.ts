import { LRUCache } from 'lru-cache';

export interface LoginLimits {
  /** Failed logins allowed per user name within `windowMs`. */
  readonly perUser: number;
  /** Failed logins allowed per client address within `windowMs`. */
  readonly perAddress: number;
  readonly windowMs: number;
}

interface Window {
  failures: number;
  endsAt: number;
}

/**
 * Counts failed logins per user and per client address in fixed windows. Once either count reaches
 * its limit, logins for that user (or from that address) are refused until the window ends, whether
 * the password is right or not: that is what stops guessing, and it spares the bcrypt work too.
 * Counters live in this process; each replica limits on its own.
 */
export class LoginLimiter {
  private readonly users: LRUCache<string, Window>;
  private readonly addresses: LRUCache<string, Window>;

  constructor(
    private readonly limits: LoginLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.users = new LRUCache({ max: 100_000 });
    this.addresses = new LRUCache({ max: 100_000 });
  }

  /** Milliseconds until a login for `user` from `address` may be tried, or 0 when it may now. */
  retryAfter(user: string, address: string): number {
    return Math.max(
      this.blockedFor(this.users, user, this.limits.perUser),
      this.blockedFor(this.addresses, address, this.limits.perAddress),
    );
  }

  failure(user: string, address: string): void {
    this.count(this.users, user);
    this.count(this.addresses, address);
  }

  /** A successful login clears the user's failures (an address keeps its count until its window ends). */
  success(user: string): void {
    this.users.delete(user);
  }

  private blockedFor(table: LRUCache<string, Window>, key: string, limit: number): number {
    const window = table.get(key);
    if (window === undefined) return 0;
    const left = window.endsAt - this.now();
    if (left <= 0) {
      table.delete(key);
      return 0;
    }
    return window.failures >= limit ? left : 0;
  }

  private count(table: LRUCache<string, Window>, key: string): void {
    const now = this.now();
    const window = table.get(key);
    if (window === undefined || window.endsAt <= now) {
      table.set(key, { failures: 1, endsAt: now + this.limits.windowMs });
    } else {
      window.failures++;
    }
  }
}
