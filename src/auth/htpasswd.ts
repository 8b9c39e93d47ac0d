import { createHmac, randomBytes } from 'node:crypto';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';

const BCRYPT_PREFIX = /^\$2[aby]\$\d\d\$/;
/** How often the file is checked for changes, at most. */
const RECHECK_MS = 1000;
/** How long a verified user/password pair is trusted without another bcrypt. */
const VERIFIED_TTL_MS = 5 * 60_000;

export interface ParsedHtpasswd {
  readonly entries: ReadonlyMap<string, string>;
  /** Users whose entries are not bcrypt (Distribution ignores those too). */
  readonly skipped: readonly string[];
}

export function parseHtpasswd(text: string): ParsedHtpasswd {
  const entries = new Map<string, string>();
  const skipped: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (BCRYPT_PREFIX.test(hash)) entries.set(user, hash);
    else skipped.push(user);
  }
  return { entries, skipped };
}

interface FileStamp {
  readonly mtimeMs: number;
  readonly size: number;
  readonly ino: number;
}

const sameStamp = (a: FileStamp, b: FileStamp) =>
  a.mtimeMs === b.mtimeMs && a.size === b.size && a.ino === b.ino;

/**
 * An htpasswd file of bcrypt entries, re-read when it changes (checked at most once a second, on use).
 * A verified user/password pair is remembered for a few minutes under an HMAC with a per-process key,
 * so a client that sends Basic credentials on every request pays for one bcrypt, not one per request;
 * a change to the file forgets them all. Unknown users cost a bcrypt too, so timing tells no names.
 */
export class Htpasswd {
  private entries: ReadonlyMap<string, string> = new Map();
  private stamp: FileStamp | undefined;
  private checkedAt = 0;
  private refreshing: Promise<void> | undefined;
  private readonly cacheKey = randomBytes(32);
  private readonly verified = new LRUCache<string, true>({ max: 10_000, ttl: VERIFIED_TTL_MS });
  private readonly inFlight = new Map<string, Promise<boolean>>();
  private dummyHash: Promise<string> | undefined;
  /** Bumped on every load, so a bcrypt that raced a reload does not vouch for the old file. */
  private generation = 0;

  private constructor(
    readonly path: string,
    private readonly logger: Logger,
  ) {}

  /** Reads the file; an unreadable file is a start-up error. */
  static async open(path: string, logger: Logger): Promise<Htpasswd> {
    const file = new Htpasswd(path, logger);
    try {
      await file.load();
    } catch (err) {
      throw new Error(`htpasswd file ${path} cannot be read: ${(err as Error).message}`, { cause: err });
    }
    return file;
  }

  get users(): number {
    return this.entries.size;
  }

  async verify(user: string, password: string): Promise<boolean> {
    await this.refresh();
    const key = createHmac('sha256', this.cacheKey)
      .update(user)
      .update('\0')
      .update(password)
      .digest('base64');
    if (this.verified.get(key) === true) return true;
    const generation = this.generation;
    let pending = this.inFlight.get(key);
    if (pending === undefined) {
      pending = this.compare(user, password).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    const ok = await pending;
    if (ok && generation === this.generation) this.verified.set(key, true);
    return ok;
  }

  private async compare(user: string, password: string): Promise<boolean> {
    const hash = this.entries.get(user);
    if (hash === undefined) {
      this.dummyHash ??= bcrypt.hash(randomBytes(16).toString('hex'), 10);
      await bcrypt.compare(password, await this.dummyHash);
      return false;
    }
    return bcrypt.compare(password, hash);
  }

  private async refresh(): Promise<void> {
    if (Date.now() - this.checkedAt < RECHECK_MS) return;
    this.refreshing ??= this.reloadIfChanged().finally(() => {
      this.refreshing = undefined;
    });
    await this.refreshing;
  }

  private async reloadIfChanged(): Promise<void> {
    this.checkedAt = Date.now();
    try {
      const s = await stat(this.path);
      const stamp = { mtimeMs: s.mtimeMs, size: s.size, ino: s.ino };
      if (this.stamp !== undefined && sameStamp(this.stamp, stamp)) return;
      await this.load();
    } catch (err) {
      // Keep serving the last good content: a file being replaced must not lock everyone out.
      this.logger.warn({ path: this.path, err: (err as Error).message }, 'htpasswd file cannot be re-read');
    }
  }

  private async load(): Promise<void> {
    const before = await stat(this.path);
    const parsed = parseHtpasswd(await readFile(this.path, 'utf8'));
    this.entries = parsed.entries;
    this.stamp = { mtimeMs: before.mtimeMs, size: before.size, ino: before.ino };
    this.checkedAt = Date.now();
    this.generation++;
    this.verified.clear();
    for (const user of parsed.skipped) {
      this.logger.warn({ path: this.path, user }, 'htpasswd entry is not bcrypt and is ignored');
    }
    this.logger.info({ path: this.path, users: parsed.entries.size }, 'htpasswd loaded');
  }
}

/**
 * Adds or replaces `user`'s entry with a bcrypt hash (`$2y$`, as `htpasswd -B` writes), keeping every
 * other line. The file is replaced atomically, so a running registry never reads half of it.
 */
export async function setHtpasswdEntry(
  path: string,
  user: string,
  password: string,
  cost = 10,
): Promise<'added' | 'updated'> {
  if (user === '' || user.includes(':') || /\s/.test(user)) {
    throw new Error('a user name must not be empty or contain ":" or whitespace');
  }
  let lines: string[] = [];
  // A new file is readable by its owner and group only; an existing one keeps its mode.
  let mode = 0o640;
  try {
    mode = (await stat(path)).mode & 0o777;
    lines = (await readFile(path, 'utf8')).split('\n').filter((line) => line.trim() !== '');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const hash = (await bcrypt.hash(password, cost)).replace(/^\$2b\$/, '$2y$');
  const entry = `${user}:${hash}`;
  const index = lines.findIndex((line) => line.slice(0, line.indexOf(':')) === user);
  if (index >= 0) lines[index] = entry;
  else lines.push(entry);
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}`);
  await writeFile(temp, `${lines.join('\n')}\n`, { mode });
  await rename(temp, path);
  return index >= 0 ? 'updated' : 'added';
}
