// The agent's promise to the registry: an event answered 202 is on disk first, so a crash loses nothing.
// One file per manifest (pending/<sha256 of repo@digest>.json): a re-delivered event rewrites the same
// file, a finished one is deleted, one that can never finish moves to failed/ with its reason.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Job } from './events.js';

export interface JournalEntry extends Job {
  /** When the agent first accepted it (ISO time). */
  accepted: string;
}

export const jobKey = (job: Pick<Job, 'repository' | 'digest'>): string => `${job.repository}@${job.digest}`;

const fileOf = (job: Pick<Job, 'repository' | 'digest'>): string =>
  `${createHash('sha256').update(jobKey(job)).digest('hex')}.json`;

function isJob(value: unknown): value is JournalEntry {
  const v = value as Partial<JournalEntry> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.repository === 'string' &&
    typeof v.digest === 'string' &&
    typeof v.mediaType === 'string' &&
    typeof v.accepted === 'string'
  );
}

export class Journal {
  readonly pendingDir: string;
  readonly failedDir: string;

  constructor(statedir: string) {
    this.pendingDir = join(statedir, 'pending');
    this.failedDir = join(statedir, 'failed');
  }

  async open(): Promise<void> {
    await mkdir(this.pendingDir, { recursive: true, mode: 0o700 });
    await mkdir(this.failedDir, { recursive: true, mode: 0o700 });
  }

  /** Writes the job durably (temp file, fsync, rename, fsync of the directory). */
  async add(job: Job): Promise<void> {
    const entry: JournalEntry = { ...job, accepted: new Date().toISOString() };
    const final = join(this.pendingDir, fileOf(job));
    const temp = `${final}.${randomBytes(6).toString('hex')}.tmp`;
    const handle = await open(temp, 'w', 0o600);
    try {
      await handle.writeFile(`${JSON.stringify(entry)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, final);
    await syncDir(this.pendingDir);
  }

  /** The job is finished (a verdict exists, or there is nothing to verify). */
  async done(job: Job): Promise<void> {
    await rm(join(this.pendingDir, fileOf(job)), { force: true });
  }

  /** The job can never finish (e.g. the manifest is gone): kept in failed/ with the reason. */
  async fail(job: Job, reason: string): Promise<void> {
    const name = fileOf(job);
    await writeFile(
      join(this.failedDir, name),
      `${JSON.stringify({ ...job, failed: new Date().toISOString(), reason })}\n`,
      { mode: 0o600 },
    );
    await rm(join(this.pendingDir, name), { force: true });
  }

  /** Jobs accepted but not finished, oldest first; unreadable files move to failed/ and are reported. */
  async pending(): Promise<{ jobs: JournalEntry[]; broken: { file: string; reason: string }[] }> {
    const jobs: JournalEntry[] = [];
    const broken: { file: string; reason: string }[] = [];
    for (const name of await readdir(this.pendingDir)) {
      const path = join(this.pendingDir, name);
      if (name.endsWith('.tmp')) {
        // A write the crash interrupted before its rename: the event was never answered 202.
        await rm(path, { force: true });
        continue;
      }
      try {
        const entry: unknown = JSON.parse(await readFile(path, 'utf8'));
        if (!isJob(entry)) throw new Error('not a journal entry');
        jobs.push(entry);
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        broken.push({ file: name, reason });
        await rename(path, join(this.failedDir, `${name}.broken`));
      }
    }
    jobs.sort((a, b) => a.accepted.localeCompare(b.accepted));
    return { jobs, broken };
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
