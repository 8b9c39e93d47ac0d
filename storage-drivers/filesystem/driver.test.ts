import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidPathError, PathNotFoundError } from '../driver.js';
import { createFilesystemDriver } from './driver.js';
import { runDriverContractSuite } from '../testsuite/suite.js';
import { endWriter, readAll, writeChunks } from '../testsuite/helpers.js';

const MiB = 1 << 20;
const roots: string[] = [];

async function tempRoot(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'wharf-fs-driver-'));
  roots.push(root);
  return root;
}

after(async () => {
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

/** Names under `root`, with the temp directory's content listed separately. */
async function onDisk(root: string): Promise<{ top: string[]; temp: string[] }> {
  const top = (await readdir(root).catch(() => [])).filter((n) => n !== '.tmp');
  const temp = await readdir(join(root, '.tmp')).catch(() => []);
  return { top, temp };
}

runDriverContractSuite('filesystem', async () => {
  const root = await tempRoot();
  return {
    driver: createFilesystemDriver({ rootdirectory: root }),
    teardown: async () => {
      assert.deepEqual(await onDisk(root), { top: [], temp: [] }, 'nothing is left on disk');
    },
  };
});

void describe('filesystem driver', () => {
  void test('stores files where Distribution does: <root><path>', async () => {
    const root = await tempRoot();
    const d = createFilesystemDriver({ rootdirectory: root });
    const path = '/docker/registry/v2/repositories/lib/app/_layers/sha256/ab12/link';
    await d.putContent(path, 'sha256:ab12');
    assert.equal(await readFile(join(root, path), 'utf8'), 'sha256:ab12');
    // And reads what another program put there.
    await writeFile(join(root, 'docker/registry/v2/repositories/lib/app/_layers/sha256/ab12/other'), 'x');
    assert.equal((await d.getContent(path.replace(/link$/, 'other'))).toString(), 'x');
  });

  void test('works before the root directory exists', async () => {
    const root = join(await tempRoot(), 'not', 'yet');
    const d = createFilesystemDriver({ rootdirectory: root });
    assert.deepEqual(await d.list('/'), []);
    assert.equal((await d.stat('/')).isDir, true);
    await d.walk('/', { onEntry: () => assert.fail('nothing to visit') });
    await d.putContent('/a', 'x');
    assert.deepEqual(await d.list('/'), ['/a']);
  });

  void test('keeps its temp directory out of sight and leaves no temp files', async () => {
    const root = await tempRoot();
    const d = createFilesystemDriver({ rootdirectory: root });
    await d.putContent('/a/f', 'x');
    assert.equal(await d.putContentIfAbsent('/a/g', 'x'), true);
    assert.equal(await d.putContentIfAbsent('/a/g', 'y'), false);
    await d.putContent('/a/dir/inside', 'x');
    await assert.rejects(d.putContent('/a/dir', 'onto a directory'));
    assert.deepEqual(await onDisk(root), { top: ['a'], temp: [] });
    assert.deepEqual(await d.list('/'), ['/a']);
    const walked: string[] = [];
    await d.walk('/', { onEntry: (e) => void walked.push(e.path) });
    assert.ok(!walked.some((p) => p.startsWith('/.tmp')), walked.join(','));
    for (const path of ['/.tmp', '/.tmp/x']) {
      await assert.rejects(d.getContent(path), InvalidPathError);
      await assert.rejects(d.putContent(path, 'x'), InvalidPathError);
      await assert.rejects(d.list(path), InvalidPathError);
      await assert.rejects(d.delete(path), InvalidPathError);
    }
  });

  void test('resumes an upload after a restart (a new driver on the same root)', async () => {
    const root = await tempRoot();
    const first = createFilesystemDriver({ rootdirectory: root });
    const w1 = await first.writer('/_uploads/id/data', false);
    await writeChunks(w1, [Buffer.from('before restart,')]);
    await endWriter(w1);

    const second = createFilesystemDriver({ rootdirectory: root });
    const w2 = await second.writer('/_uploads/id/data', true);
    assert.equal(w2.size, 'before restart,'.length);
    await writeChunks(w2, [Buffer.from('after')]);
    await w2.commit();
    assert.equal((await second.getContent('/_uploads/id/data')).toString(), 'before restart,after');
  });

  void test('a writer signals backpressure instead of buffering without bound', async () => {
    const d = createFilesystemDriver({ rootdirectory: await tempRoot() });
    const w = await d.writer('/big', false);
    let accepted = 0;
    while (w.write(Buffer.alloc(256 * 1024))) accepted++;
    // The writer buffers up to 8 MiB (32 such chunks) before asking the producer to wait.
    assert.ok(accepted < 40, `write() said "go on" ${accepted} times`);
    await once(w, 'drain');
    await w.cancel();
  });

  void test('an open reader keeps streaming a file deleted under it', async () => {
    const d = createFilesystemDriver({ rootdirectory: await tempRoot() });
    const data = Buffer.alloc(3 * MiB, 'z');
    await d.putContent('/blob', data);
    const reader = await d.reader('/blob');
    await d.delete('/blob');
    assert.ok((await readAll(reader)).equals(data));
    await assert.rejects(d.reader('/blob'), PathNotFoundError);
  });

  void test('SIGKILL never leaves a partial file at a final path', async () => {
    const root = await tempRoot();
    const size = 8 * MiB;
    // The child rewrites two final paths in a loop: one with putContent, one by writer + commit + move.
    const child = `
      const { createFilesystemDriver } = await import(${JSON.stringify(new URL('./driver.ts', import.meta.url).href)});
      const d = createFilesystemDriver({ rootdirectory: ${JSON.stringify(root)} });
      const fill = (i) => Buffer.alloc(${size}, i % 2 ? 'a' : 'b');
      process.stdout.write('ready\\n');
      for (let i = 0; ; i++) {
        await d.putContent('/small/f', fill(i));
        const w = await d.writer('/_uploads/' + i + '/data', false);
        const chunk = Buffer.alloc(${MiB}, i % 2 ? 'a' : 'b');
        for (let j = 0; j < ${size / MiB}; j++) if (!w.write(chunk)) await new Promise((r) => w.once('drain', r));
        await w.commit();
        await d.move('/_uploads/' + i + '/data', '/blobs/data');
      }`;
    const whole = (data: Buffer): boolean =>
      data.length === size && (data.every((c) => c === 0x61) || data.every((c) => c === 0x62));

    for (const delay of [50, 150, 300, 450]) {
      const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      try {
        const [first] = (await once(proc.stdout, 'data')) as [Buffer];
        assert.equal(first.toString().trim(), 'ready');
        await sleep(delay);
      } finally {
        proc.kill('SIGKILL');
        if (proc.exitCode === null && proc.signalCode === null) await once(proc, 'exit');
      }
      const d = createFilesystemDriver({ rootdirectory: root });
      for (const path of ['/small/f', '/blobs/data']) {
        try {
          assert.ok(whole(await d.getContent(path)), `${path} after a kill at ${delay} ms is whole`);
        } catch (err) {
          if (!(err instanceof PathNotFoundError)) throw err;
        }
      }
      assert.ok(!(await d.list('/')).includes('/.tmp'));
    }
  });
});
