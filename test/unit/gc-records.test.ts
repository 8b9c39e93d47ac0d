import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { GcRecords } from '../../src/gc/records.js';
import { digestOf } from '../../src/registry/digest.js';
import { parsePath } from '../../src/registry/paths.js';

/** Counts touch writes. */
function counting(): { driver: StorageDriver; touches: () => number } {
  const inner = createInMemoryDriver();
  const driver = Object.create(inner) as StorageDriver;
  let n = 0;
  driver.putContent = async (path, content) => {
    if (parsePath(path)?.kind === 'gcTouch') n++;
    await inner.putContent(path, content);
  };
  return { driver, touches: () => n };
}

describe('gc records', () => {
  test('a touch is one write per digest, skipped within the skip window', async () => {
    const { driver, touches } = counting();
    const records = new GcRecords(driver, { touchSkipMs: 200 });
    const a = digestOf('a');
    const b = digestOf('b');
    await records.touch([a, b, a]);
    assert.equal(touches(), 2);
    await records.touch([a]);
    assert.equal(touches(), 2, 'skipped: touched moments ago');
    assert.ok(records.touchedRecently(a));
    await new Promise((r) => setTimeout(r, 250));
    await records.touch([a]);
    assert.equal(touches(), 3);
    assert.ok(((await records.touchTime(a))?.getTime() ?? 0) > Date.now() - 1000);
    assert.equal(await records.touchTime(digestOf('never')), undefined);
  });

  test('a download touches in the background, at most once per background window', async () => {
    const { driver, touches } = counting();
    const records = new GcRecords(driver, { touchSkipMs: 50 });
    const a = digestOf('a');
    records.touchInBackground(a);
    while (!records.touchedRecently(a)) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(records.touchedRecently(a), false, 'out of the short window');
    records.touchInBackground(a);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(touches(), 1, 'still inside the background window');
  });

  test('lostAfterTouch: present and untombstoned is fine, missing is lost', async () => {
    const records = new GcRecords(createInMemoryDriver(), { tombstoneWaitMs: 100 });
    const a = digestOf('a');
    const b = digestOf('b');
    const lost = await records.lostAfterTouch([
      { digest: a, present: () => Promise.resolve(true) },
      { digest: b, present: () => Promise.resolve(false) },
    ]);
    assert.deepEqual(lost.map(String), [b.toString()]);
  });

  test('lostAfterTouch waits for a tombstone to go, then reads presence', async () => {
    const records = new GcRecords(createInMemoryDriver(), { tombstoneWaitMs: 2000 });
    const a = digestOf('a');
    await records.writeTombstone(a, 'sweep');
    let presentAsked = false;
    setTimeout(() => void records.removeTombstone(a), 100);
    const lost = await records.lostAfterTouch([
      {
        digest: a,
        present: async () => {
          presentAsked = true;
          return !(await records.isTombstoned(a));
        },
      },
    ]);
    assert.deepEqual(lost, []);
    assert.ok(presentAsked);
  });

  test('a tombstone that stays past the wait makes the digest lost', async () => {
    const records = new GcRecords(createInMemoryDriver(), { tombstoneWaitMs: 100 });
    const a = digestOf('a');
    await records.writeTombstone(a, 'crashed');
    const started = Date.now();
    const lost = await records.lostAfterTouch([{ digest: a, present: () => Promise.resolve(true) }]);
    assert.deepEqual(lost.map(String), [a.toString()]);
    assert.ok(Date.now() - started >= 100);
  });
});
