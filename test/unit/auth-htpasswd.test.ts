import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { pino } from 'pino';
import { Htpasswd, parseHtpasswd, setHtpasswdEntry } from '../../src/auth/htpasswd.js';
import { fixtureDir } from '../helpers/auth.js';

const silent = pino({ level: 'silent' });
let dir: Awaited<ReturnType<typeof fixtureDir>>;
before(async () => {
  dir = await fixtureDir();
});
after(async () => {
  await dir.cleanup();
});

void describe('htpasswd', () => {
  void test('parses bcrypt entries ($2y$, $2b$, $2a$) and skips others, comments and blanks', () => {
    const hash = bcrypt.hashSync('pw', 4);
    const text = [
      '# comment',
      '',
      `y:${hash.replace('$2b$', '$2y$')}`,
      `b:${hash}`,
      `a:${hash.replace('$2b$', '$2a$')}`,
      'sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=',
      'md5:$apr1$abc$def',
      'crypt:abJnggxhB/yWI',
      'nocolon',
    ].join('\n');
    const parsed = parseHtpasswd(text);
    assert.deepEqual([...parsed.entries.keys()], ['y', 'b', 'a']);
    assert.deepEqual(parsed.skipped, ['sha', 'md5', 'crypt']);
  });

  void test('verifies passwords; an unreadable file is a start-up error naming the path', async () => {
    const path = dir.path('verify');
    await setHtpasswdEntry(path, 'alice', 'secret', 4);
    const file = await Htpasswd.open(path, silent);
    assert.equal(await file.verify('alice', 'secret'), true);
    assert.equal(await file.verify('alice', 'Secret'), false);
    assert.equal(await file.verify('bob', 'secret'), false);
    assert.equal(await file.verify('alice', 'secret'), true, 'cached answer is the same');
    await assert.rejects(
      Htpasswd.open(dir.path('missing'), silent),
      /htpasswd file .*missing cannot be read: ENOENT/,
    );
  });

  void test('a verified password is not bcrypt-checked again (cache), and a file change clears the cache', async (t) => {
    const path = dir.path('cache');
    await setHtpasswdEntry(path, 'alice', 'secret', 4);
    const file = await Htpasswd.open(path, silent);
    const compare = t.mock.method(bcrypt, 'compare');
    // Parallel first requests (docker pushes layers in parallel) share one bcrypt.
    const first = await Promise.all([1, 2, 3].map(() => file.verify('alice', 'secret')));
    assert.deepEqual(first, [true, true, true]);
    for (let i = 0; i < 20; i++) assert.equal(await file.verify('alice', 'secret'), true);
    assert.equal(compare.mock.callCount(), 1);
    // Failures are not cached: each costs a bcrypt (the login limiter bounds them).
    assert.equal(await file.verify('alice', 'wrong'), false);
    assert.equal(await file.verify('alice', 'wrong'), false);
    assert.equal(compare.mock.callCount(), 3);

    await setHtpasswdEntry(path, 'alice', 'changed', 4);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(await file.verify('alice', 'secret'), false, 'the old password no longer works');
    assert.equal(await file.verify('alice', 'changed'), true);
  });

  void test('a file that disappears keeps the last good content', async () => {
    const path = dir.path('vanishing');
    await setHtpasswdEntry(path, 'alice', 'secret', 4);
    const file = await Htpasswd.open(path, silent);
    await writeFile(path, '');
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(await file.verify('alice', 'secret'), false, 'an emptied file is a real change');
    await setHtpasswdEntry(path, 'alice', 'secret', 4);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(await file.verify('alice', 'secret'), true);
    const { rm } = await import('node:fs/promises');
    await rm(path);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(await file.verify('alice', 'secret'), true, 'a missing file does not lock everyone out');
  });

  void test('setHtpasswdEntry adds, replaces and keeps other lines and the file mode', async () => {
    const path = dir.path('edit');
    assert.equal(await setHtpasswdEntry(path, 'alice', 'one', 4), 'added');
    assert.equal(await setHtpasswdEntry(path, 'bob', 'two', 4), 'added');
    assert.equal((await stat(path)).mode & 0o777, 0o640);
    assert.equal(await setHtpasswdEntry(path, 'alice', 'three', 4), 'updated');
    const lines = (await readFile(path, 'utf8')).trim().split('\n');
    assert.equal(lines.length, 2);
    assert.match(lines[0] ?? '', /^alice:\$2y\$04\$/);
    assert.ok(bcrypt.compareSync('three', (lines[0] ?? '').slice('alice:'.length)));
    assert.ok(bcrypt.compareSync('two', (lines[1] ?? '').slice('bob:'.length)));
    for (const bad of ['', 'a:b', 'a b'])
      await assert.rejects(setHtpasswdEntry(path, bad, 'x', 4), /user name/);
  });
});
