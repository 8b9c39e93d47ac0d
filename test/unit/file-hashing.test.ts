// Upload digests on hashing threads that read the data file behind its writes (src/registry/file-hashing.ts).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FileHashing } from '../../src/registry/file-hashing.js';
import { sha256 } from '../helpers/oci.js';

void describe('file hashing on worker threads', () => {
  let dir: string;
  const hashing = new FileHashing(2);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wharf-file-hashing-'));
  });
  after(async () => {
    await hashing.close();
    await rm(dir, { recursive: true, force: true });
  });

  void test('digests what was written, at any point, and goes on after a digest', async () => {
    const path = join(dir, 'grow');
    await writeFile(path, '');
    const hash = hashing.start(path, 'sha256');
    const parts = [
      randomBytes(3 << 20),
      randomBytes(1),
      randomBytes(700_001),
      Buffer.alloc(0),
      randomBytes(5 << 20),
    ];
    let all = Buffer.alloc(0);
    for (const part of parts) {
      await appendFile(path, part);
      all = Buffer.concat([all, part]);
      hash.advance(all.length);
      assert.equal((await hash.digest(all.length)).toString(), sha256(all));
    }
    hash.dispose();
  });

  void test('a digest waits until its bytes are written', async () => {
    const path = join(dir, 'wait');
    const data = randomBytes(2 << 20);
    await writeFile(path, data.subarray(0, 1000));
    const hash = hashing.start(path, 'sha256');
    hash.advance(1000);
    let settled = false;
    const digest = hash.digest(data.length).then((d) => {
      settled = true;
      return d.toString();
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(settled, false, 'answered before the bytes were written');
    await appendFile(path, data.subarray(1000));
    hash.advance(data.length);
    assert.equal(await digest, sha256(data));
    hash.dispose();
  });

  void test('a failed write, a file shorter than said, and a disposed hash reject the digest', async () => {
    const path = join(dir, 'short');
    await writeFile(path, randomBytes(100));
    const failing = hashing.start(path, 'sha256');
    const pending = failing.digest(200);
    failing.fail(new Error('disk full'));
    await assert.rejects(pending, /disk full/);
    failing.dispose();

    const short = hashing.start(path, 'sha256');
    short.advance(200);
    await assert.rejects(short.digest(200), /ends at 100/);
    short.dispose();

    const disposed = hashing.start(path, 'sha256');
    disposed.dispose();
    await assert.rejects(disposed.digest(0), /disposed/);
  });

  void test('hashes on a stopped thread reject, and new ones get a new thread', async () => {
    const own = new FileHashing(1);
    const path = join(dir, 'stop');
    const data = randomBytes(1 << 20);
    await writeFile(path, data);
    const before = own.start(path, 'sha256');
    before.advance(data.length);
    assert.equal((await before.digest(data.length)).toString(), sha256(data));
    await own.close();
    await assert.rejects(before.digest(data.length));
    const after = own.start(path, 'sha256');
    after.advance(data.length);
    assert.equal((await after.digest(data.length)).toString(), sha256(data));
    await own.close();
  });
});
