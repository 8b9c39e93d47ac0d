// The keys verdicts must be signed with: a JWKS file, or an http(s) URL such as the agent's
// /.well-known/jwks.json, fetched again every refresh interval and after an unknown key.
import { readFile } from 'node:fs/promises';
import type { JSONWebKeySet } from 'jose';
import type { Logger } from 'pino';
import type { KeyProvider } from './decide.js';

export const isURL = (location: string): boolean => /^https?:\/\//i.test(location);

/** Reads and checks a JWKS (file path or http(s) URL); errors name the location. */
export async function loadJwks(location: string, timeoutMs = 10_000): Promise<JSONWebKeySet> {
  let text: string;
  if (isURL(location)) {
    let res: Response;
    try {
      res = await fetch(location, {
        headers: { Accept: 'application/jwk-set+json, application/json' },
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new Error(`trusted keys ${location}: ${(err as Error).message}`, { cause: err });
    }
    if (res.status !== 200) {
      await res.arrayBuffer().catch(() => undefined);
      throw new Error(`trusted keys ${location}: HTTP ${res.status}`);
    }
    text = await res.text();
  } else {
    try {
      text = await readFile(location, 'utf8');
    } catch (err) {
      throw new Error(`trusted keys ${location}: ${(err as Error).message}`, { cause: err });
    }
  }
  let keys: unknown;
  try {
    keys = (JSON.parse(text) as { keys?: unknown } | null)?.keys;
  } catch {
    throw new Error(`trusted keys ${location}: not JSON`);
  }
  if (!Array.isArray(keys)) throw new Error(`trusted keys ${location}: not a JWKS (no "keys" list)`);
  return { keys: keys as JSONWebKeySet['keys'] };
}

export interface TrustedKeysOptions {
  /** How long fetched keys are used before they are fetched again. */
  readonly refreshMs: number;
  /** Least time between two fetches caused by unknown keys or failures. */
  readonly minRefetchMs?: number;
  readonly logger?: Logger;
}

/**
 * Cached trusted keys. A failed refresh keeps the keys already loaded (logged), so an agent restart
 * does not lock every pull out; with none loaded yet, `get` throws.
 */
export class TrustedKeys implements KeyProvider {
  private keys: JSONWebKeySet | undefined;
  private loadedAt = 0;
  private attemptedAt = 0;
  private inflight: Promise<JSONWebKeySet> | undefined;

  constructor(
    readonly location: string,
    private readonly opts: TrustedKeysOptions,
  ) {}

  async get(): Promise<JSONWebKeySet> {
    const now = Date.now();
    if (this.keys && now - this.loadedAt < this.opts.refreshMs) return this.keys;
    if (this.keys && now - this.attemptedAt < this.minRefetch()) return this.keys;
    return this.load();
  }

  /** Fetches again unless that happened a moment ago; undefined when nothing new could be had. */
  async refresh(): Promise<JSONWebKeySet | undefined> {
    if (Date.now() - this.attemptedAt < this.minRefetch()) return undefined;
    const before = this.keys;
    const after = await this.load().catch(() => undefined);
    return after !== before ? after : undefined;
  }

  private minRefetch(): number {
    return Math.min(this.opts.minRefetchMs ?? 10_000, this.opts.refreshMs);
  }

  private load(): Promise<JSONWebKeySet> {
    this.inflight ??= (async () => {
      this.attemptedAt = Date.now();
      try {
        const keys = await loadJwks(this.location);
        this.keys = keys;
        this.loadedAt = Date.now();
        this.opts.logger?.debug({ location: this.location, keys: keys.keys.length }, 'trusted keys loaded');
        return keys;
      } catch (err) {
        if (!this.keys) throw err;
        this.opts.logger?.warn(
          { err, location: this.location },
          'trusted keys refresh failed, keeping the old ones',
        );
        return this.keys;
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }
}
