import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { describe, test } from 'node:test';
import {
  InvalidOffsetError,
  InvalidPathError,
  PathNotFoundError,
  StorageDriverError,
  type FileInfo,
  type FileWriter,
  type StorageDriver,
} from './driver.js';
import { isValidPath, wrapDriver, type DriverOperation } from './base.js';
import { createDriver } from './index.js';

/** A raw driver that records what reached it and fails as told. */
function fakeDriver(fail?: Error): { raw: StorageDriver; calls: string[] } {
  const calls: string[] = [];
  const answer = <T>(op: string, value: T): Promise<T> => {
    calls.push(op);
    return fail === undefined ? Promise.resolve(value) : Promise.reject(fail);
  };
  const info: FileInfo = { path: '/x', size: 0, modTime: new Date(0), isDir: false };
  const writer = Object.assign(
    new Writable({
      write: (_c, _e, cb) => {
        cb();
      },
    }),
    {
      size: 0,
      commit: () => answer('commit', undefined),
      cancel: () => answer('cancel', undefined),
    },
  ) satisfies FileWriter;
  const raw: StorageDriver = {
    name: 'fake',
    getContent: () => answer('getContent', Buffer.alloc(0)),
    putContent: () => answer('putContent', undefined),
    putContentIfAbsent: () => answer('putContentIfAbsent', true),
    reader: (_p, o) => answer(`reader ${JSON.stringify(o)}`, Readable.from([])),
    writer: () => {
      calls.push('writer');
      return Promise.resolve(writer);
    },
    stat: () => answer('stat', info),
    statFile: () => answer('statFile', info),
    list: () => answer('list', []),
    move: () => answer('move', undefined),
    delete: () => answer('delete', undefined),
    walk: async (_p, o) => {
      calls.push('walk');
      await o.onEntry(info);
      if (fail !== undefined) throw fail;
    },
    redirectURL: () => answer('redirectURL', undefined),
  };
  return { raw, calls };
}

/** Every method, called with `path` wherever it takes one. */
function callsWith(d: StorageDriver, path: string): [string, () => Promise<unknown>][] {
  return [
    ['getContent', () => d.getContent(path)],
    ['putContent', () => d.putContent(path, 'x')],
    ['putContentIfAbsent', () => d.putContentIfAbsent(path, 'x')],
    ['reader', () => d.reader(path)],
    ['writer', () => d.writer(path, false)],
    ['stat', () => d.stat(path)],
    ['statFile', () => d.statFile(path)],
    ['list', () => d.list(path)],
    ['move from', () => d.move(path, '/ok')],
    ['move to', () => d.move('/ok', path)],
    ['delete', () => d.delete(path)],
    ['walk', () => d.walk(path, { onEntry: () => undefined })],
    ['redirectURL', () => d.redirectURL(path, 'GET')],
  ];
}

void describe('isValidPath', () => {
  const cases: [string, boolean, boolean?][] = [
    ['/a', true],
    ['/a/b.c/d_e-f:g', true],
    ['/.hidden', true],
    ['/a..b', true],
    ['/...', true],
    ['/', false],
    ['/', true, true],
    ['', false],
    ['a', false],
    ['/a/', false],
    ['//a', false],
    ['/a//b', false],
    ['/.', false],
    ['/..', false],
    ['/a/./b', false],
    ['/a/../b', false],
    ['/a/..', false],
    ['/a b', false],
    ['/a\n', false],
  ];
  for (const [path, valid, allowRoot] of cases) {
    void test(`${JSON.stringify(path)}${allowRoot ? ' (root allowed)' : ''} is ${valid ? 'valid' : 'invalid'}`, () => {
      assert.equal(isValidPath(path, allowRoot), valid);
    });
  }
});

void describe('wrapDriver', () => {
  void test('rejects invalid paths before the driver sees them', async () => {
    const { raw, calls } = fakeDriver();
    const d = wrapDriver(raw);
    for (const path of ['', 'x', '/x/', '/x/../y', '/x//y']) {
      for (const [op, call] of callsWith(d, path)) {
        await assert.rejects(call(), (err) => {
          assert.ok(err instanceof InvalidPathError, `${op} ${path}`);
          assert.equal(err.path, path);
          assert.equal(err.driver, 'fake');
          return true;
        });
      }
    }
    assert.deepEqual(calls, []);
  });

  void test('allows "/" only for list, stat and walk', async () => {
    const { raw, calls } = fakeDriver();
    const d = wrapDriver(raw);
    for (const [op, call] of callsWith(d, '/')) {
      if (op === 'list' || op === 'stat' || op === 'walk') await call();
      else await assert.rejects(call(), InvalidPathError, op);
    }
    assert.deepEqual(calls, ['stat', 'list', 'walk']);
  });

  void test('checks reader offsets and lengths', async () => {
    const { raw, calls } = fakeDriver();
    const d = wrapDriver(raw);
    for (const offset of [-1, 0.5, Number.NaN, Infinity, 2 ** 60]) {
      await assert.rejects(d.reader('/x', { offset }), (err) => {
        assert.ok(err instanceof InvalidOffsetError);
        assert.equal(err.offset, offset);
        return true;
      });
    }
    for (const length of [-1, 1.5]) {
      await assert.rejects(d.reader('/x', { length }), StorageDriverError);
    }
    await d.reader('/x');
    await d.reader('/x', { offset: 3, length: 4 });
    assert.deepEqual(calls, ['reader {"offset":0}', 'reader {"offset":3,"length":4}']);
  });

  void test('keeps typed errors as they are', async () => {
    const typed = new PathNotFoundError('/x', 'fake');
    const d = wrapDriver(fakeDriver(typed).raw);
    await assert.rejects(d.getContent('/x'), (err) => err === typed);
  });

  void test('wraps any other error in StorageDriverError, keeping it as the cause', async () => {
    const cause = Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
    const d = wrapDriver(fakeDriver(cause).raw);
    for (const [op, call] of callsWith(d, '/x')) {
      if (op === 'writer') continue;
      await assert.rejects(call(), (err) => {
        assert.ok(err instanceof StorageDriverError && !(err instanceof PathNotFoundError), op);
        assert.equal(err.cause, cause);
        assert.equal(err.driver, 'fake');
        assert.match(err.message, /EIO/);
        return true;
      });
    }
    const w = await d.writer('/x', false);
    await assert.rejects(w.commit(), (err) => err instanceof StorageDriverError && err.cause === cause);
    await assert.rejects(w.cancel(), (err) => err instanceof StorageDriverError && err.cause === cause);
  });

  void test('passes errors thrown by a walk callback through unchanged', async () => {
    const d = wrapDriver(fakeDriver().raw);
    const mine = new Error('mine');
    await assert.rejects(
      d.walk('/', {
        onEntry: () => {
          throw mine;
        },
      }),
      (err) => err === mine,
    );
  });

  void test('reports every operation to onOperation, with its error', async () => {
    const seen: [DriverOperation, string, number, unknown][] = [];
    const onOperation = (op: DriverOperation, name: string, ms: number, error?: unknown): void => {
      seen.push([op, name, ms, error]);
    };
    const ok = wrapDriver(fakeDriver().raw, { onOperation });
    await ok.stat('/x');
    const w = await ok.writer('/x', false);
    await w.commit();
    await assert.rejects(ok.getContent('bad'));
    assert.deepEqual(
      seen.map(([op, name]) => [op, name]),
      [
        ['stat', 'fake'],
        ['writer', 'fake'],
        ['writer.commit', 'fake'],
        ['getContent', 'fake'],
      ],
    );
    assert.ok(seen.every(([, , ms]) => ms >= 0));
    assert.equal(seen[0]![3], undefined);
    assert.ok(seen[3]![3] instanceof InvalidPathError);
  });

  void test('a throwing onOperation hook does not fail the operation', async () => {
    const d = wrapDriver(fakeDriver().raw, {
      onOperation: () => {
        throw new Error('metrics broke');
      },
    });
    assert.deepEqual(await d.list('/'), []);
  });
});

void describe('createDriver', () => {
  void test('builds the filesystem driver', async () => {
    const root = await mkdtemp(join(tmpdir(), 'wharf-create-driver-'));
    try {
      const d = createDriver({ filesystem: { rootdirectory: root }, delete: { enabled: true } });
      assert.equal(d.name, 'filesystem');
      await d.putContent('/a', 'x');
      await assert.rejects(d.getContent('/a/../a'), InvalidPathError);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  void test('builds the inmemory driver, also from an empty YAML key (null)', async () => {
    for (const inmemory of [{}, null]) {
      const d = createDriver({ inmemory });
      assert.equal(d.name, 'inmemory');
      await d.putContent('/a', 'x');
      assert.equal((await d.getContent('/a')).toString(), 'x');
    }
  });

  void test('explains what is wrong with the storage section', () => {
    assert.throws(() => createDriver({ s3: {} }), /storage\.s3: bucket/);
    assert.throws(() => createDriver({}), /exactly one driver.*found none/);
    assert.throws(
      () => createDriver({ inmemory: {}, filesystem: { rootdirectory: '/x' } }),
      /exactly one driver.*found filesystem, inmemory/,
    );
    assert.throws(() => createDriver({ filesystem: { rootdirectory: '' } }), /rootdirectory/);
  });
});
