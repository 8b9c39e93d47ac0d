// The journal (what survives a crash) and the work queue (limits, dedup, retries).
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { Job } from '../../src/agent/events.js';
import { Journal } from '../../src/agent/journal.js';
import { Semaphore, WorkQueue, type FailureKind } from '../../src/agent/queue.js';

const job = (n: number): Job => ({
  repository: `team/app${n}`,
  digest: `sha256:${String(n).padStart(64, '0')}`,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
});
const silent = pino({ level: 'silent' });
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-agent-unit-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('Journal', () => {
  test('add, re-add (one entry), pending, done', () =>
    withDir(async (dir) => {
      const journal = new Journal(dir);
      await journal.open();
      await journal.add(job(1));
      await journal.add(job(1));
      await journal.add(job(2));
      const files = await readdir(journal.pendingDir);
      assert.equal(files.length, 2);
      assert.equal((await stat(join(journal.pendingDir, files[0] ?? ''))).mode & 0o777, 0o600);
      // A new Journal on the same dir: what a restarted agent sees.
      const again = new Journal(dir);
      await again.open();
      const { jobs, broken } = await again.pending();
      assert.deepEqual(jobs.map((j) => j.repository).sort(), ['team/app1', 'team/app2']);
      assert.deepEqual(broken, []);
      await again.done(job(1));
      assert.deepEqual(
        (await again.pending()).jobs.map((j) => j.repository),
        ['team/app2'],
      );
    }));

  test('fail keeps the job and its reason in failed/', () =>
    withDir(async (dir) => {
      const journal = new Journal(dir);
      await journal.open();
      await journal.add(job(3));
      await journal.fail(job(3), 'manifest unknown');
      assert.deepEqual((await journal.pending()).jobs, []);
      const [file] = await readdir(journal.failedDir);
      const kept = JSON.parse(await readFile(join(journal.failedDir, file ?? ''), 'utf8')) as {
        reason: string;
        digest: string;
      };
      assert.equal(kept.reason, 'manifest unknown');
      assert.equal(kept.digest, job(3).digest);
    }));

  test('an unreadable entry moves to failed/ and is reported; a torn temp file is dropped', () =>
    withDir(async (dir) => {
      const journal = new Journal(dir);
      await journal.open();
      await writeFile(join(journal.pendingDir, 'x.json'), '{"repo');
      await writeFile(join(journal.pendingDir, 'y.json.abc.tmp'), '{');
      const { jobs, broken } = await journal.pending();
      assert.deepEqual(jobs, []);
      assert.equal(broken.length, 1);
      assert.deepEqual(await readdir(journal.pendingDir), []);
      assert.deepEqual(await readdir(journal.failedDir), ['x.json.broken']);
    }));
});

describe('Semaphore', () => {
  test('never more than the limit at once, all run', async () => {
    const sem = new Semaphore(2);
    let active = 0;
    let peak = 0;
    const done = await Promise.all(
      Array.from({ length: 7 }, (_, i) =>
        sem.use(async () => {
          active++;
          peak = Math.max(peak, active);
          await tick(3);
          active--;
          return i;
        }),
      ),
    );
    assert.equal(peak, 2);
    assert.deepEqual(done, [0, 1, 2, 3, 4, 5, 6]);
  });

  test('a throwing holder releases its slot', async () => {
    const sem = new Semaphore(1);
    await assert.rejects(
      sem.use(() => Promise.reject(new Error('boom'))),
      /boom/,
    );
    assert.equal(await sem.use(() => Promise.resolve('next')), 'next');
  });
});

describe('WorkQueue', () => {
  function queue(
    handle: (job: Job) => Promise<void>,
    classify: (err: unknown) => FailureKind,
    extra: Partial<ConstructorParameters<typeof WorkQueue>[0]> = {},
  ) {
    const finished: { job: Job; failure?: string }[] = [];
    const q = new WorkQueue({
      handle,
      classify,
      finished: (j, failure) => {
        finished.push({ job: j, ...(failure !== undefined && { failure }) });
        return Promise.resolve();
      },
      parallel: 2,
      maxPending: 3,
      logger: silent,
      backoffMs: 5,
      maxBackoffMs: 20,
      ...extra,
    });
    return { q, finished };
  }
  const until = async (cond: () => boolean, ms = 2000) => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      await tick();
    }
  };

  test('a job pending twice is handled once', async () => {
    let calls = 0;
    const { q, finished } = queue(
      async () => {
        calls++;
        await tick(10);
      },
      () => 'permanent',
    );
    assert.ok(q.enqueue(job(1)));
    assert.ok(q.enqueue(job(1)));
    await until(() => finished.length === 1);
    assert.equal(calls, 1);
    assert.equal(q.size, 0);
  });

  test('full: enqueue says no, so the caller answers 503', () => {
    const { q } = queue(
      () => new Promise(() => undefined),
      () => 'permanent',
    );
    for (const n of [1, 2, 3]) assert.ok(q.enqueue(job(n)));
    assert.equal(q.enqueue(job(4)), false);
    assert.equal(q.size, 3);
  });

  test('transient failures retry with backoff until they succeed', async () => {
    let calls = 0;
    const { q, finished } = queue(
      () => {
        calls++;
        return calls < 4 ? Promise.reject(new Error('engine down')) : Promise.resolve();
      },
      () => 'transient',
    );
    q.enqueue(job(1));
    await until(() => finished.length === 1);
    assert.equal(calls, 4);
    assert.equal(finished[0]?.failure, undefined);
  });

  test('a permanent failure ends the job with its reason', async () => {
    const { q, finished } = queue(
      () => Promise.reject(new Error('manifest unknown')),
      () => 'permanent',
    );
    q.enqueue(job(1));
    await until(() => finished.length === 1);
    assert.equal(finished[0]?.failure, 'manifest unknown');
  });

  test('an unknown failure is retried a few times, then given up', async () => {
    let calls = 0;
    const { q, finished } = queue(
      () => {
        calls++;
        return Promise.reject(new Error('odd'));
      },
      () => 'unknown',
      { unknownAttempts: 3 },
    );
    q.enqueue(job(1));
    await until(() => finished.length === 1);
    assert.equal(calls, 3);
    assert.equal(finished[0]?.failure, 'odd');
  });

  test('no more than `parallel` handlers at once, retries included', async () => {
    let active = 0;
    let peak = 0;
    const seen = new Map<string, number>();
    const { q, finished } = queue(
      async (j) => {
        active++;
        peak = Math.max(peak, active);
        await tick(5);
        active--;
        const n = (seen.get(j.repository) ?? 0) + 1;
        seen.set(j.repository, n);
        if (n < 2) throw new Error('again');
      },
      () => 'transient',
      { maxPending: 10 },
    );
    for (const n of [1, 2, 3, 4, 5]) q.enqueue(job(n));
    await until(() => finished.length === 5);
    assert.equal(peak, 2);
  });

  test('close stops retries; the job stays unfinished (the journal keeps it)', async () => {
    const { q, finished } = queue(
      () => Promise.reject(new Error('down')),
      () => 'transient',
      { backoffMs: 1000 },
    );
    q.enqueue(job(1));
    await tick(20);
    await q.close(100);
    await tick(20);
    assert.deepEqual(finished, []);
  });
});
