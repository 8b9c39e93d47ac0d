import { createHash, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { PathNotFoundError, type StorageDriver } from '../../storage-drivers/driver.js';
import { pathFor, ROBOTS_ROOT } from '../registry/paths.js';
import type { AccessAction, Subject } from './access.js';
import { safeEqual } from './credentials.js';

const PREFIX = 'wrt_';
const ID_LENGTH = 16;
const TOKEN_PATTERN = new RegExp(`^${PREFIX}([0-9a-f]{${ID_LENGTH}})_([A-Za-z0-9_-]{43})$`);
/** How long a replica trusts what it read about a robot; a revocation takes effect within this. */
const RECORD_TTL_MS = 30_000;

const RobotRecordSchema = z.object({
  id: z.string().regex(/^[0-9a-f]{16}$/),
  name: z.string().min(1),
  repositories: z.array(z.string().min(1)).min(1),
  actions: z.array(z.enum(['pull', 'push', 'delete'])).min(1),
  createdAt: z.string(),
  expiresAt: z.string(),
  /** `sha256:<hex>` of the secret part: storage never holds a usable credential. */
  secret: z.string().regex(/^sha256:[0-9a-f]{64}$/),
});
export type RobotRecord = z.infer<typeof RobotRecordSchema>;

export interface NewRobot {
  readonly name?: string;
  readonly repositories: readonly string[];
  readonly actions: readonly AccessAction[];
  readonly expiresInMs: number;
}

/** Whether a password is a robot token rather than a user's password. */
export function isRobotToken(password: string): boolean {
  return password.startsWith(PREFIX);
}

const secretDigest = (secret: string) => `sha256:${createHash('sha256').update(secret).digest('hex')}`;

/**
 * Robot tokens for CI: long random secrets with their own repository globs and actions, used as a Basic
 * password (user name: the robot's name). They live in the registry's storage under `/wharf/auth/robots`,
 * which Distribution never reads, so every replica on shared storage sees the same set and `wharf token`
 * works wherever the storage is reachable; only a hash of each secret is stored.
 */
export class RobotStore {
  private readonly records = new LRUCache<string, RobotRecord | false>({ max: 10_000, ttl: RECORD_TTL_MS });
  // One Subject per cached record, so access checks can memoise per subject.
  private readonly subjects = new WeakMap<RobotRecord, Subject>();

  constructor(private readonly driver: StorageDriver) {}

  async create(robot: NewRobot, now = new Date()): Promise<{ record: RobotRecord; token: string }> {
    const id = randomBytes(ID_LENGTH / 2).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const record: RobotRecord = {
      id,
      name: robot.name ?? `robot-${id.slice(0, 8)}`,
      repositories: [...robot.repositories],
      actions: [...robot.actions],
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + robot.expiresInMs).toISOString(),
      secret: secretDigest(secret),
    };
    await this.driver.putContent(pathFor({ kind: 'robotToken', id }), JSON.stringify(record, null, 2));
    return { record, token: `${PREFIX}${id}_${secret}` };
  }

  async list(): Promise<RobotRecord[]> {
    let paths: string[];
    try {
      paths = await this.driver.list(ROBOTS_ROOT);
    } catch (err) {
      if (err instanceof PathNotFoundError) return [];
      throw err;
    }
    const records: RobotRecord[] = [];
    for (const path of paths.sort()) {
      const id = /([0-9a-f]{16})\.json$/.exec(path)?.[1];
      const record = id === undefined ? undefined : await this.read(id);
      if (record) records.push(record);
    }
    return records;
  }

  /** Deletes a robot token; false when there was none with this id. */
  async revoke(id: string): Promise<boolean> {
    if (!/^[0-9a-f]{16}$/.test(id)) return false;
    try {
      await this.driver.delete(pathFor({ kind: 'robotToken', id }));
    } catch (err) {
      if (err instanceof PathNotFoundError) return false;
      throw err;
    }
    this.records.delete(id);
    return true;
  }

  /** The robot a user name and token stand for, or undefined when they are not valid now. */
  async authenticate(username: string, token: string, now = Date.now()): Promise<Subject | undefined> {
    const m = TOKEN_PATTERN.exec(token);
    if (!m?.[1] || m[2] === undefined) return undefined;
    const record = await this.cached(m[1]);
    if (!record) return undefined;
    const secretOk = safeEqual(secretDigest(m[2]), record.secret);
    const nameOk = safeEqual(username, record.name);
    if (!secretOk || !nameOk || Date.parse(record.expiresAt) <= now) return undefined;
    return this.subjectOf(record);
  }

  /** The robot behind a token subject `robot:<id>`, for decisions made after the token was issued. */
  async subject(id: string, now = Date.now()): Promise<Subject | undefined> {
    const record = await this.cached(id);
    if (!record || Date.parse(record.expiresAt) <= now) return undefined;
    return this.subjectOf(record);
  }

  private subjectOf(record: RobotRecord): Subject {
    let subject = this.subjects.get(record);
    if (subject === undefined) {
      const { id, name, repositories, actions } = record;
      subject = { kind: 'robot', id, name, repositories, actions };
      this.subjects.set(record, subject);
    }
    return subject;
  }

  private async cached(id: string): Promise<RobotRecord | false> {
    const hit = this.records.get(id);
    if (hit !== undefined) return hit;
    const record = (await this.read(id)) ?? false;
    this.records.set(id, record);
    return record;
  }

  private async read(id: string): Promise<RobotRecord | undefined> {
    let content: Buffer;
    try {
      content = await this.driver.getContent(pathFor({ kind: 'robotToken', id }));
    } catch (err) {
      if (err instanceof PathNotFoundError) return undefined;
      throw err;
    }
    let json: unknown;
    try {
      json = JSON.parse(content.toString('utf8'));
    } catch {
      return undefined;
    }
    const parsed = RobotRecordSchema.safeParse(json);
    return parsed.success && parsed.data.id === id ? parsed.data : undefined;
  }
}
