/**
 * The driver contract suite: every promise `driver.ts` makes, checked against a real driver. A driver
 * binds it in a few lines:
 *
 *     runDriverContractSuite('filesystem', async () => ({ driver, teardown }));
 *
 * It works below one random prefix (`/contract-<random>`), so it can run against a shared bucket, and
 * assumes nothing about local disk. Each test deletes what it wrote and then checks that nothing of it is
 * left; the suite checks at the end that its prefix is gone, before `teardown` runs.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { PathNotFoundError, type FileInfo, type StorageDriver } from '../driver.js';
import { isValidPath } from '../base.js';
import {
  deleteIfExists,
  endWriter,
  isInvalidOffset,
  isInvalidPath,
  isNotFound,
  isStorageError,
  randomBytes,
  randomChunks,
  randomName,
  readAll,
  sha256,
  writeChunks,
} from './helpers.js';

export interface DriverSetup {
  readonly driver: StorageDriver;
  /** Releases what `setup` made (a temp dir, a bucket); may assert that nothing is left. */
  readonly teardown: () => Promise<void>;
}

const MiB = 1 << 20;

export function runDriverContractSuite(name: string, setup: () => Promise<DriverSetup>): void {
  void describe(`storage driver contract: ${name}`, () => {
    const suiteRoot = `/contract-${randomName(12)}`;
    let fixture: DriverSetup | undefined;
    const driver = (): StorageDriver => {
      assert.ok(fixture, 'setup did not run');
      return fixture.driver;
    };

    before(async () => {
      fixture = await setup();
    });

    after(async () => {
      if (!fixture) return;
      try {
        const d = fixture.driver;
        await assert.rejects(d.list(suiteRoot), isNotFound(d, suiteRoot), 'the suite left files behind');
        assert.ok(!(await d.list('/')).includes(suiteRoot), 'the suite prefix is still listed');
      } finally {
        await fixture.teardown();
      }
    });

    /** A test with its own empty prefix `p`; afterwards `p` is deleted and must be gone entirely. */
    function it(title: string, body: (p: string, d: StorageDriver) => Promise<void>): void {
      void test(title, async () => {
        const d = driver();
        const p = `${suiteRoot}/${randomName(8)}`;
        try {
          await body(p, d);
        } finally {
          await deleteIfExists(d, p);
        }
        await assert.rejects(d.list(p), isNotFound(d, p), `files left behind under ${p}`);
      });
    }

    void describe('paths', () => {
      const validNames = [
        '/a',
        '/2',
        '/aa',
        '/a.a',
        '/0-9/abcdefg',
        '/abcdefg/z.75',
        '/abc/1.2.3.4.5-6_zyx/123.z/4',
        '/docker/docker-registry',
        '/Docker/docker-registry',
        '/Abc/Cba',
        '/123.abc',
        '/abc./abc',
        '/.abc',
        '/a--b',
        '/a-.b',
        '/_.abc',
        '/a..b',
        '/...',
        '/sha256:0123abcd',
        '/-',
      ];

      it('accepts every path PATH_PATTERN allows, and stores each apart', async (p, d) => {
        const contents = new Map(validNames.map((n) => [p + n, randomBytes(16)] as const));
        for (const [path, content] of contents) await d.putContent(path, content);
        for (const [path, content] of contents) assert.deepEqual(await d.getContent(path), content, path);
      });

      const invalidPaths = (p: string): string[] => [
        '',
        'abc',
        'abc/def',
        '//',
        '//abc',
        '/abc//def',
        '/abc/',
        '/.',
        '/..',
        '/abc/.',
        '/abc/..',
        '/abc/./def',
        '/abc/../def',
        '/a b',
        '/a\tb',
        '/a\nb',
        '/abc\n',
        '/a\0b',
        '/ä',
        '/a\\b',
        '/a?b',
        '/a*b',
        '/a#b',
        '/a%2fb',
        '/a+b',
        '/a@b',
        '/~',
        ' /abc',
        `${p}/`,
        `${p}//x`,
        `${p}/x/../y`,
        `${p}/./x`,
        `${p}/..`,
      ];

      it('rejects malformed paths with InvalidPathError in every method', async (p, d) => {
        const existing = `${p}/existing`;
        await d.putContent(existing, 'x');
        for (const path of [...invalidPaths(p), '/']) {
          const bad = isInvalidPath(d, path);
          await assert.rejects(d.getContent(path), bad);
          await assert.rejects(d.putContent(path, 'x'), bad);
          await assert.rejects(d.putContentIfAbsent(path, 'x'), bad);
          await assert.rejects(d.reader(path), bad);
          await assert.rejects(d.writer(path, false), bad);
          await assert.rejects(d.writer(path, true), bad);
          await assert.rejects(d.move(path, `${p}/dest`), bad);
          await assert.rejects(d.move(existing, path), bad);
          await assert.rejects(d.delete(path), bad);
          await assert.rejects(d.redirectURL(path, 'GET'), bad);
          if (path === '/') continue;
          await assert.rejects(d.stat(path), bad);
          await assert.rejects(d.list(path), bad);
          await assert.rejects(
            d.walk(path, { onEntry: () => assert.fail('walk must not visit anything') }),
            bad,
          );
        }
        // Nothing was written, moved or deleted by any of the calls above.
        assert.deepEqual(await d.list(p), [existing]);
        assert.deepEqual(await d.getContent(existing), Buffer.from('x'));
      });

      it('lets "/" name the root for list, stat and walk', async (p, d) => {
        await d.putContent(`${p}/file`, 'x');
        const info = await d.stat('/');
        assert.equal(info.isDir, true);
        assert.equal(info.size, 0);
        const root = await d.list('/');
        assert.ok(root.includes(suiteRoot), 'the root listing shows the suite prefix');
        for (const entry of root) assert.ok(isValidPath(entry), `root entry ${entry} is a valid path`);
        const seen: FileInfo[] = [];
        await d.walk('/', {
          onEntry: (e) => {
            seen.push(e);
            // Stay inside our own prefix: the store may hold much else.
            return e.isDir && e.path !== suiteRoot && e.path !== p ? 'skip' : undefined;
          },
        });
        for (const e of seen) assert.ok(isValidPath(e.path), `walked entry ${e.path} is a valid path`);
        assert.ok(seen.some((e) => e.path === suiteRoot && e.isDir));
        assert.ok(seen.some((e) => e.path === `${p}/file` && !e.isDir && e.size === 1));
      });
    });

    void describe('getContent and putContent', () => {
      const random = randomBytes(MiB);
      const cases: [string, Buffer | string, Buffer][] = [
        ['empty', Buffer.alloc(0), Buffer.alloc(0)],
        ['one byte', 'a', Buffer.from('a')],
        ['a string, stored as UTF-8', 'ß日本 ✓', Buffer.from('ß日本 ✓', 'utf8')],
        [
          'bytes that are not UTF-8',
          Buffer.from([0x80, 0xff, 0x00, 0xfe, 0xc3]),
          Buffer.from([0x80, 0xff, 0x00, 0xfe, 0xc3]),
        ],
        ['1 MiB of random bytes', random, random],
      ];

      for (const [title, content, expected] of cases) {
        it(`round-trips ${title}`, async (p, d) => {
          await d.putContent(`${p}/f`, content);
          assert.deepEqual(await d.getContent(`${p}/f`), expected);
          assert.equal((await d.stat(`${p}/f`)).size, expected.length);
        });
      }

      it('overwrites whole, shorter content truncating longer', async (p, d) => {
        const path = `${p}/f`;
        await d.putContent(path, randomBytes(MiB));
        const small = randomBytes(1024);
        await d.putContent(path, small);
        assert.deepEqual(await d.getContent(path), small);
        await d.putContent(path, '');
        assert.deepEqual(await d.getContent(path), Buffer.alloc(0));
        assert.equal((await d.stat(path)).size, 0);
      });

      it('keeps no reference to the caller’s buffers', async (p, d) => {
        const path = `${p}/f`;
        const input = Buffer.from('original');
        await d.putContent(path, input);
        input.fill(0);
        const output = await d.getContent(path);
        assert.equal(output.toString(), 'original');
        output.fill(0);
        assert.equal((await d.getContent(path)).toString(), 'original');
      });

      it('creates parent directories implicitly', async (p, d) => {
        await d.putContent(`${p}/a/b/c/d`, 'x');
        assert.equal((await d.stat(`${p}/a/b`)).isDir, true);
        assert.deepEqual(await d.list(`${p}/a/b`), [`${p}/a/b/c`]);
      });

      it('fails with PathNotFoundError for a missing file, a directory or a name prefix', async (p, d) => {
        await d.putContent(`${p}/dir/abc`, 'x');
        for (const path of [`${p}/missing`, `${p}/dir`, `${p}/dir/ab`, `${p}/dir/abc/x`, `${p}/nodir/x`]) {
          await assert.rejects(d.getContent(path), isNotFound(d, path));
        }
      });
    });

    void describe('putContentIfAbsent', () => {
      it('writes only when no file is there', async (p, d) => {
        const path = `${p}/lease`;
        assert.equal(await d.putContentIfAbsent(path, 'first'), true);
        assert.equal(await d.putContentIfAbsent(path, 'second'), false);
        assert.equal((await d.getContent(path)).toString(), 'first');
        await d.delete(path);
        assert.equal(await d.putContentIfAbsent(path, ''), true);
        assert.deepEqual(await d.getContent(path), Buffer.alloc(0));
        assert.equal(await d.putContentIfAbsent(path, 'third'), false);
      });

      it('lets exactly one of 20 racing callers win', async (p, d) => {
        const path = `${p}/deep/race`;
        const contents = Array.from({ length: 20 }, () => randomBytes(4096));
        const results = await Promise.all(contents.map((c) => d.putContentIfAbsent(path, c)));
        const winners = results.flatMap((won, i) => (won ? [i] : []));
        assert.equal(winners.length, 1, `winners: ${winners.join(',')}`);
        assert.deepEqual(await d.getContent(path), contents[winners[0]!]);
      });

      it('decides races on different paths independently', async (p, d) => {
        const paths = Array.from({ length: 8 }, (_, i) => `${p}/shared/${i}`);
        const results = await Promise.all(
          paths.flatMap((path) => Array.from({ length: 4 }, (_, j) => d.putContentIfAbsent(path, `${j}`))),
        );
        for (let i = 0; i < paths.length; i++) {
          assert.equal(results.slice(i * 4, i * 4 + 4).filter(Boolean).length, 1, paths[i]);
        }
      });
    });

    void describe('reader', () => {
      const content = randomBytes(100);

      const ranges: [string, { offset?: number; length?: number }, Buffer][] = [
        ['no options', {}, content],
        ['offset 0', { offset: 0 }, content],
        ['offset 32', { offset: 32 }, content.subarray(32)],
        ['offset size-1', { offset: 99 }, content.subarray(99)],
        ['offset == size (empty)', { offset: 100 }, Buffer.alloc(0)],
        ['offset and length', { offset: 10, length: 20 }, content.subarray(10, 30)],
        ['length past the end', { offset: 90, length: 50 }, content.subarray(90)],
        ['length 0', { offset: 0, length: 0 }, Buffer.alloc(0)],
        ['length only', { length: 7 }, content.subarray(0, 7)],
        ['offset == size with length', { offset: 100, length: 5 }, Buffer.alloc(0)],
      ];

      it('streams the requested range', async (p, d) => {
        const path = `${p}/f`;
        await d.putContent(path, content);
        for (const [title, options, expected] of ranges) {
          assert.deepEqual(await readAll(await d.reader(path, options)), expected, title);
        }
      });

      it('rejects an offset past the end, negative or fractional with InvalidOffsetError', async (p, d) => {
        const path = `${p}/f`;
        await d.putContent(path, content);
        for (const offset of [101, 1 << 30, -1, 1.5]) {
          await assert.rejects(d.reader(path, { offset }), isInvalidOffset(d, path, offset));
        }
        await d.putContent(`${p}/empty`, '');
        assert.deepEqual(await readAll(await d.reader(`${p}/empty`)), Buffer.alloc(0));
        await assert.rejects(d.reader(`${p}/empty`, { offset: 1 }), isInvalidOffset(d, `${p}/empty`, 1));
      });

      it('fails up front with PathNotFoundError for a missing file or a directory', async (p, d) => {
        await d.putContent(`${p}/dir/f`, 'x');
        for (const path of [`${p}/missing`, `${p}/dir`, `${p}/dir/f/g`]) {
          await assert.rejects(d.reader(path), isNotFound(d, path));
          await assert.rejects(d.reader(path, { offset: 64 }), isNotFound(d, path));
        }
      });

      it('serves concurrent readers at different offsets', async (p, d) => {
        const big = randomBytes(4 * MiB);
        await d.putContent(`${p}/big`, big);
        const offsets = [0, 1, MiB - 1, MiB, 2 * MiB + 17, 4 * MiB - 1, 4 * MiB, 3 * MiB];
        const reads = await Promise.all(
          offsets.map(async (offset) => readAll(await d.reader(`${p}/big`, { offset }))),
        );
        reads.forEach((data, i) => {
          assert.ok(data.equals(big.subarray(offsets[i])), `offset ${offsets[i]}`);
        });
      });
    });

    void describe('writer', () => {
      it('writes, commits, and tracks size', async (p, d) => {
        const path = `${p}/w/f`;
        const chunks = [randomBytes(10), randomBytes(0), randomBytes(1000), randomBytes(64 * 1024)];
        const writer = await d.writer(path, false);
        assert.equal(writer.size, 0);
        await writeChunks(writer, chunks);
        await writer.commit();
        const all = Buffer.concat(chunks);
        assert.equal(writer.size, all.length);
        assert.deepEqual(await d.getContent(path), all);
        assert.equal((await d.stat(path)).size, all.length);
      });

      it('commits after the writer was ended by a pipeline', async (p, d) => {
        const path = `${p}/f`;
        const data = randomBytes(300 * 1024);
        const writer = await d.writer(path, false);
        await pipeline(Readable.from(randomChunks(data, 64 * 1024)), writer);
        assert.equal(writer.size, data.length);
        await writer.commit();
        assert.deepEqual(await d.getContent(path), data);
      });

      it('commits an empty file', async (p, d) => {
        const writer = await d.writer(`${p}/empty`, false);
        await writer.commit();
        assert.equal(writer.size, 0);
        assert.deepEqual(await d.getContent(`${p}/empty`), Buffer.alloc(0));
        const info = await d.stat(`${p}/empty`);
        assert.equal(info.size, 0);
        assert.equal(info.isDir, false);
      });

      it('keeps no reference to written buffers once their write completed', async (p, d) => {
        const writer = await d.writer(`${p}/f`, false);
        const chunk = Buffer.from('written');
        await new Promise<void>((resolve, reject) => {
          writer.write(chunk, (err) => {
            if (err) reject(err);
            else resolve();
          });
        });
        chunk.fill(0);
        await writer.commit();
        assert.equal((await d.getContent(`${p}/f`)).toString(), 'written');
      });

      it('resumes with append after end(), across writers', async (p, d) => {
        const path = `${p}/upload/data`;
        const [c1, c2, c3] = [randomBytes(32), randomBytes(70 * 1024), randomBytes(5)];
        const w1 = await d.writer(path, false);
        await writeChunks(w1, [c1]);
        await endWriter(w1);
        assert.equal(w1.size, c1.length);

        const w2 = await d.writer(path, true);
        assert.equal(w2.size, c1.length);
        await writeChunks(w2, [c2]);
        await endWriter(w2);
        assert.equal(w2.size, c1.length + c2.length);
        assert.equal((await d.stat(path)).size, c1.length + c2.length, 'end() flushed what was written');

        const w3 = await d.writer(path, true);
        assert.equal(w3.size, c1.length + c2.length);
        await writeChunks(w3, [c3]);
        await w3.commit();
        assert.equal(w3.size, c1.length + c2.length + c3.length);
        assert.deepEqual(await d.getContent(path), Buffer.concat([c1, c2, c3]));
      });

      it('fails with PathNotFoundError when appending to nothing', async (p, d) => {
        await assert.rejects(d.writer(`${p}/missing`, true), isNotFound(d, `${p}/missing`));
      });

      it('starts empty without append, replacing uncommitted content', async (p, d) => {
        const path = `${p}/f`;
        const w1 = await d.writer(path, false);
        await writeChunks(w1, [randomBytes(1000)]);
        await endWriter(w1);
        const w2 = await d.writer(path, false);
        assert.equal(w2.size, 0);
        await writeChunks(w2, [Buffer.from('fresh')]);
        await w2.commit();
        assert.equal((await d.getContent(path)).toString(), 'fresh');
      });

      it('cancel() leaves nothing behind, including parent directories', async (p, d) => {
        const path = `${p}/a/b/data`;
        const w = await d.writer(path, false);
        await writeChunks(w, [randomBytes(5000)]);
        await w.cancel();
        await assert.rejects(d.stat(path), isNotFound(d, path));
        await assert.rejects(d.list(p), isNotFound(d, p));

        const empty = await d.writer(path, false);
        await empty.cancel();
        await assert.rejects(d.stat(path), isNotFound(d, path));
      });

      it('cancel() also discards content appended by earlier writers', async (p, d) => {
        const path = `${p}/data`;
        const w1 = await d.writer(path, false);
        await writeChunks(w1, [randomBytes(100)]);
        await endWriter(w1);
        const w2 = await d.writer(path, true);
        await writeChunks(w2, [randomBytes(100)]);
        await endWriter(w2);
        await w2.cancel();
        await assert.rejects(d.getContent(path), isNotFound(d, path));
        await assert.rejects(d.list(p), isNotFound(d, p));
      });

      it('streams 32 MiB in random chunk sizes with backpressure, whole after commit', async (p, d) => {
        const path = `${p}/large`;
        const data = randomBytes(32 * MiB);
        const writer = await d.writer(path, false);
        await writeChunks(writer, randomChunks(data, MiB));
        await writer.commit();
        assert.equal(writer.size, data.length);
        assert.equal((await d.stat(path)).size, data.length);
        assert.equal(sha256(await readAll(await d.reader(path))), sha256(data));
        const tail = await readAll(await d.reader(path, { offset: 31 * MiB + 3 }));
        assert.ok(tail.equals(data.subarray(31 * MiB + 3)));
      });

      it('keeps concurrent writers to different paths apart', async (p, d) => {
        const datas = Array.from({ length: 8 }, () => randomBytes(MiB));
        const writers = await Promise.all(datas.map((_, i) => d.writer(`${p}/w${i}/data`, false)));
        // Interleave: every writer gets its next 64 KiB before any gets another.
        for (let pos = 0; pos < MiB; pos += 64 * 1024) {
          await Promise.all(
            writers.map((w, i) => writeChunks(w, [datas[i]!.subarray(pos, pos + 64 * 1024)])),
          );
        }
        await Promise.all(writers.map((w) => w.commit()));
        for (let i = 0; i < datas.length; i++) {
          assert.ok((await d.getContent(`${p}/w${i}/data`)).equals(datas[i]!), `writer ${i}`);
        }
      });
    });

    void describe('stat', () => {
      it('describes a file', async (p, d) => {
        const path = `${p}/dir/file`;
        const before = Date.now();
        await d.putContent(path, randomBytes(4096));
        const info = await d.stat(path);
        assert.equal(info.path, path);
        assert.equal(info.size, 4096);
        assert.equal(info.isDir, false);
        assert.ok(info.modTime instanceof Date && !Number.isNaN(info.modTime.getTime()));
        // Generous bounds: a remote store's clock may differ a little from ours.
        assert.ok(
          Math.abs(info.modTime.getTime() - before) < 5 * 60_000,
          `modTime ${info.modTime.toISOString()}`,
        );

        await d.putContent(path, 'xy');
        const again = await d.stat(path);
        assert.equal(again.size, 2);
        assert.ok(again.modTime.getTime() >= info.modTime.getTime() - 1000, 'modTime does not go backwards');
      });

      it('describes a directory', async (p, d) => {
        await d.putContent(`${p}/dir/sub/file`, 'x');
        for (const path of [p, `${p}/dir`, `${p}/dir/sub`]) {
          const info = await d.stat(path);
          assert.equal(info.path, path);
          assert.equal(info.isDir, true);
          assert.equal(info.size, 0);
        }
      });

      it('fails with PathNotFoundError for what does not exist', async (p, d) => {
        await d.putContent(`${p}/dir/abc`, 'x');
        for (const path of [`${p}/missing`, `${p}/dir/ab`, `${p}/di`, `${p}/dir/abc/x`, `${p}/missing/x`]) {
          await assert.rejects(d.stat(path), isNotFound(d, path));
        }
      });
    });

    void describe('statFile', () => {
      it('describes a file as stat does; a directory, a missing path or a deleted file is undefined', async (p, d) => {
        await d.putContent(`${p}/dir/abc`, randomBytes(1000));
        const info = await d.statFile(`${p}/dir/abc`);
        const stat = await d.stat(`${p}/dir/abc`);
        assert.deepEqual(info && { ...info, modTime: Math.floor(info.modTime.getTime() / 1000) }, {
          ...stat,
          modTime: Math.floor(stat.modTime.getTime() / 1000),
        });
        for (const path of [`${p}/dir`, p, `${p}/missing`, `${p}/dir/ab`, `${p}/di`, `${p}/dir/abc/x`]) {
          assert.equal(await d.statFile(path), undefined, path);
        }
        await d.delete(`${p}/dir/abc`);
        assert.equal(await d.statFile(`${p}/dir/abc`), undefined, 'deleted');
      });

      it('sees a file an ended writer left exactly when reads do, and a committed one always', async (p, d) => {
        const path = `${p}/upload/data`;
        const w1 = await d.writer(path, false);
        await writeChunks(w1, [randomBytes(1024)]);
        await endWriter(w1);
        const readable = await d.getContent(path).then(
          () => true,
          (err: unknown) => {
            if (err instanceof PathNotFoundError) return false;
            throw err;
          },
        );
        assert.equal((await d.statFile(path)) !== undefined, readable);
        const w2 = await d.writer(path, true);
        await writeChunks(w2, [randomBytes(10)]);
        await w2.commit();
        assert.equal((await d.statFile(path))?.size, 1034);
      });
    });

    void describe('list', () => {
      it('returns direct children as full paths, sorted', async (p, d) => {
        const dir = `${p}/dir`;
        for (const name of ['b', 'a-b', 'a.b', 'A', '0', '_x', 'a/deep/file', 'a/other']) {
          await d.putContent(`${dir}/${name}`, name);
        }
        const expected = ['0', 'A', '_x', 'a', 'a-b', 'a.b', 'b'].map((n) => `${dir}/${n}`);
        assert.deepEqual(await d.list(dir), expected);
        assert.deepEqual(await d.list(`${dir}/a`), [`${dir}/a/deep`, `${dir}/a/other`]);
        assert.deepEqual(await d.list(p), [dir]);
      });

      it('lists 50 children', async (p, d) => {
        const names = Array.from({ length: 50 }, () => randomName(8 + Math.floor(Math.random() * 8)));
        await Promise.all(names.map((n) => d.putContent(`${p}/many/${n}`, n)));
        const expected = [...new Set(names)].map((n) => `${p}/many/${n}`).sort();
        assert.deepEqual(await d.list(`${p}/many`), expected);
      });

      it('fails with PathNotFoundError for a missing directory, a file or a name prefix', async (p, d) => {
        await d.putContent(`${p}/dir/abc/file`, 'x');
        for (const path of [`${p}/missing`, `${p}/dir/abc/file`, `${p}/dir/ab`, `${p}/di`]) {
          await assert.rejects(d.list(path), isNotFound(d, path));
        }
      });
    });

    void describe('move', () => {
      it('moves a file: whole at the destination, gone at the source, empty source directories gone', async (p, d) => {
        const content = randomBytes(32);
        await d.putContent(`${p}/src/deep/file`, content);
        await d.putContent(`${p}/keep`, 'k');
        await d.move(`${p}/src/deep/file`, `${p}/dst/new/deeper/file`);
        assert.deepEqual(await d.getContent(`${p}/dst/new/deeper/file`), content);
        await assert.rejects(d.getContent(`${p}/src/deep/file`), isNotFound(d, `${p}/src/deep/file`));
        await assert.rejects(d.list(`${p}/src`), isNotFound(d, `${p}/src`));
        assert.deepEqual(await d.list(p), [`${p}/dst`, `${p}/keep`]);
      });

      it('replaces a file at the destination', async (p, d) => {
        const source = randomBytes(32);
        await d.putContent(`${p}/a`, source);
        await d.putContent(`${p}/b`, randomBytes(4096));
        await d.move(`${p}/a`, `${p}/b`);
        assert.deepEqual(await d.getContent(`${p}/b`), source);
        await assert.rejects(d.stat(`${p}/a`), isNotFound(d, `${p}/a`));
      });

      it('fails with PathNotFoundError for a missing source, leaving the destination alone', async (p, d) => {
        await d.putContent(`${p}/dest`, 'keep me');
        await d.putContent(`${p}/dir/file`, 'x');
        for (const source of [`${p}/missing`, `${p}/dir`, `${p}/dir/file/below`]) {
          await assert.rejects(d.move(source, `${p}/dest`), isNotFound(d, source));
        }
        assert.equal((await d.getContent(`${p}/dest`)).toString(), 'keep me');
        assert.deepEqual(await d.getContent(`${p}/dir/file`), Buffer.from('x'));
      });

      it('fails when a file is in the way of the destination', async (p, d) => {
        await d.putContent(`${p}/notadir`, 'x');
        await d.putContent(`${p}/src`, 'y');
        await assert.rejects(d.move(`${p}/notadir/foo`, `${p}/notadir/bar`), isStorageError);
      });

      it('publishes a committed upload (writer, commit, move)', async (p, d) => {
        const data = randomBytes(3 * MiB + 5);
        const writer = await d.writer(`${p}/_uploads/id/data`, false);
        await writeChunks(writer, randomChunks(data, 256 * 1024));
        await writer.commit();
        await d.move(`${p}/_uploads/id/data`, `${p}/blobs/ab/abcdef/data`);
        assert.equal(sha256(await readAll(await d.reader(`${p}/blobs/ab/abcdef/data`))), sha256(data));
        await assert.rejects(d.list(`${p}/_uploads`), isNotFound(d, `${p}/_uploads`));
      });
    });

    void describe('delete', () => {
      it('deletes a file and leaves its siblings', async (p, d) => {
        await d.putContent(`${p}/a`, 'a');
        await d.putContent(`${p}/b`, 'b');
        await d.delete(`${p}/a`);
        await assert.rejects(d.getContent(`${p}/a`), isNotFound(d, `${p}/a`));
        assert.equal((await d.getContent(`${p}/b`)).toString(), 'b');
        assert.deepEqual(await d.list(p), [`${p}/b`]);
      });

      it('deletes a directory and everything below it', async (p, d) => {
        const files = [`${p}/dir/a`, `${p}/dir/sub/b`, `${p}/dir/sub/deeper/c`];
        for (const f of files) await d.putContent(f, 'x');
        await d.putContent(`${p}/other`, 'o');
        await d.delete(`${p}/dir`);
        for (const f of files) await assert.rejects(d.getContent(f), isNotFound(d, f));
        await assert.rejects(d.list(`${p}/dir`), isNotFound(d, `${p}/dir`));
        assert.deepEqual(await d.list(p), [`${p}/other`]);
      });

      it('makes directories left empty vanish', async (p, d) => {
        await d.putContent(`${p}/a/b/c/file`, 'x');
        await d.putContent(`${p}/keep`, 'k');
        await d.delete(`${p}/a/b/c/file`);
        for (const dir of [`${p}/a/b/c`, `${p}/a/b`, `${p}/a`]) {
          await assert.rejects(d.stat(dir), isNotFound(d, dir));
        }
        assert.deepEqual(await d.list(p), [`${p}/keep`]);
      });

      it('deletes only the path and what is below it, not names it prefixes', async (p, d) => {
        for (const f of ['a/f', 'ab', 'a-x/f', 'a/x', 'a/xy', 'a/x.y/z']) await d.putContent(`${p}/${f}`, f);
        await d.delete(`${p}/a/x`);
        assert.deepEqual(await d.list(`${p}/a`), [`${p}/a/f`, `${p}/a/x.y`, `${p}/a/xy`]);
        await d.delete(`${p}/a`);
        assert.deepEqual(await d.list(p), [`${p}/a-x`, `${p}/ab`]);
      });

      it('fails with PathNotFoundError for what does not exist', async (p, d) => {
        await d.putContent(`${p}/file`, 'x');
        for (const path of [`${p}/missing`, `${p}/fil`, `${p}/file/below`]) {
          await assert.rejects(d.delete(path), isNotFound(d, path));
        }
      });
    });

    void describe('walk', () => {
      const tree: Record<string, number> = { 'a/x': 3, 'a/y/z': 1, 'a-b': 2, b: 4, 'c/d/e': 5 };
      const write = async (d: StorageDriver, root: string): Promise<void> => {
        for (const [name, size] of Object.entries(tree))
          await d.putContent(`${root}/${name}`, randomBytes(size));
      };
      const collect = async (
        d: StorageDriver,
        root: string,
        skip: string[] = [],
      ): Promise<{ rel: string; isDir: boolean; size: number }[]> => {
        const seen: { rel: string; isDir: boolean; size: number }[] = [];
        await d.walk(root, {
          onEntry: (info) => {
            const rel = info.path.slice(root.length + 1);
            seen.push({ rel, isDir: info.isDir, size: info.size });
            return skip.includes(rel) ? 'skip' : undefined;
          },
        });
        return seen;
      };

      it('visits everything below, depth first, lexical, a directory before its children', async (p, d) => {
        await write(d, `${p}/w`);
        assert.deepEqual(await collect(d, `${p}/w`), [
          { rel: 'a', isDir: true, size: 0 },
          { rel: 'a/x', isDir: false, size: 3 },
          { rel: 'a/y', isDir: true, size: 0 },
          { rel: 'a/y/z', isDir: false, size: 1 },
          { rel: 'a-b', isDir: false, size: 2 },
          { rel: 'b', isDir: false, size: 4 },
          { rel: 'c', isDir: true, size: 0 },
          { rel: 'c/d', isDir: true, size: 0 },
          { rel: 'c/d/e', isDir: false, size: 5 },
        ]);
      });

      it('does not descend into a directory when told to skip', async (p, d) => {
        await write(d, `${p}/w`);
        const seen = await collect(d, `${p}/w`, ['a', 'c/d', 'b']);
        assert.deepEqual(
          seen.map((e) => e.rel),
          ['a', 'a-b', 'b', 'c', 'c/d'],
        );
      });

      it('awaits an async callback before going on', async (p, d) => {
        await write(d, `${p}/w`);
        let running = 0;
        const order: string[] = [];
        await d.walk(`${p}/w`, {
          onEntry: async (info) => {
            running++;
            assert.equal(running, 1, 'one callback at a time');
            await sleep(1);
            order.push(info.path.slice(p.length + 3));
            running--;
            return info.path.endsWith('/c') ? 'skip' : undefined;
          },
        });
        assert.deepEqual(order, ['a', 'a/x', 'a/y', 'a/y/z', 'a-b', 'b', 'c']);
      });

      it('passes an error thrown by the callback through unchanged', async (p, d) => {
        await write(d, `${p}/w`);
        const mine = new Error('stop here');
        await assert.rejects(
          d.walk(`${p}/w`, {
            onEntry: () => {
              throw mine;
            },
          }),
          (err) => err === mine,
        );
      });

      it('fails with PathNotFoundError for a missing directory or a file', async (p, d) => {
        await d.putContent(`${p}/file`, 'x');
        for (const path of [`${p}/missing`, `${p}/file`, `${p}/fil`]) {
          await assert.rejects(
            d.walk(path, { onEntry: () => assert.fail(`visited below ${path}`) }),
            isNotFound(d, path),
          );
        }
      });
    });

    void describe('redirectURL', () => {
      it('returns undefined or a URL that serves the content', async (p, d) => {
        const content = randomBytes(32);
        await d.putContent(`${p}/blob`, content);
        const get = await d.redirectURL(`${p}/blob`, 'GET');
        assert.ok(get === undefined || typeof get === 'string');
        if (get !== undefined) {
          const res = await fetch(get);
          assert.equal(res.status, 200);
          assert.ok(Buffer.from(await res.arrayBuffer()).equals(content));
        }
        const head = await d.redirectURL(`${p}/blob`, 'HEAD');
        assert.ok(head === undefined || typeof head === 'string');
        if (head !== undefined) {
          const res = await fetch(head, { method: 'HEAD' });
          assert.equal(res.status, 200);
          assert.equal(res.headers.get('content-length'), '32');
        }
      });
    });

    void describe('concurrency', () => {
      it('racing putContent calls leave one whole content', async (p, d) => {
        const contents = Array.from({ length: 10 }, () => randomBytes(64 * 1024));
        await Promise.all(contents.map((c) => d.putContent(`${p}/f`, c)));
        const final = await d.getContent(`${p}/f`);
        assert.ok(
          contents.some((c) => c.equals(final)),
          'the result is one of the written contents',
        );
      });

      it('readers see the old content or the new, never a mix', async (p, d) => {
        const path = `${p}/f`;
        const a = Buffer.alloc(256 * 1024, 'a');
        const b = Buffer.alloc(256 * 1024, 'b');
        await d.putContent(path, a);
        const writes = (async () => {
          for (let i = 0; i < 20; i++) await d.putContent(path, i % 2 ? a : b);
        })();
        const reads = (async () => {
          for (let i = 0; i < 40; i++) {
            const got = await d.getContent(path);
            assert.ok(got.equals(a) || got.equals(b), `read ${i} is whole`);
            const streamed = await readAll(await d.reader(path));
            assert.ok(streamed.equals(a) || streamed.equals(b), `streamed read ${i} is whole`);
          }
        })();
        await Promise.all([writes, reads]);
      });

      it('writes into a directory survive concurrent deletes emptying it', async (p, d) => {
        // Many callers each create a file in one directory and delete it again, so the directory keeps
        // vanishing (pruned) and coming back while other callers write into it.
        const dir = `${p}/d/e`;
        const write = async (path: string, how: number, content: string): Promise<void> => {
          switch (how % 4) {
            case 0:
              return d.putContent(path, content);
            case 1:
              assert.equal(await d.putContentIfAbsent(path, content), true);
              return;
            case 2: {
              const w = await d.writer(path, false);
              await writeChunks(w, [Buffer.from(content)]);
              return w.commit();
            }
            default:
              await d.putContent(`${p}/src/${content}`, content);
              return d.move(`${p}/src/${content}`, path);
          }
        };
        await Promise.all(
          Array.from({ length: 12 }, async (_, k) => {
            for (let i = 0; i < 16; i++) {
              const name = `${k}-${i}`;
              await write(`${dir}/${name}`, k + i, name);
              assert.equal((await d.getContent(`${dir}/${name}`)).toString(), name);
              await d.delete(`${dir}/${name}`);
            }
          }),
        );
        await assert.rejects(d.list(`${p}/d`), isNotFound(d, `${p}/d`));
      });
    });
  });
}
