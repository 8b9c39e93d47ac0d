import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createInMemoryDriver } from './driver.js';
import { runDriverContractSuite } from '../testsuite/suite.js';
import { readAll } from '../testsuite/helpers.js';

runDriverContractSuite('inmemory', () => {
  const driver = createInMemoryDriver();
  return Promise.resolve({
    driver,
    teardown: async () => {
      assert.deepEqual(await driver.list('/'), [], 'nothing is left in the driver');
    },
  });
});

void test('inmemory: drivers do not share content', async () => {
  const a = createInMemoryDriver();
  const b = createInMemoryDriver();
  await a.putContent('/x', 'a');
  assert.deepEqual(await b.list('/'), []);
});

void test('inmemory: a reader streams the content as it was when opened', async () => {
  const d = createInMemoryDriver();
  await d.putContent('/f', 'before');
  const reader = await d.reader('/f');
  await d.putContent('/f', 'after, and longer');
  assert.equal((await readAll(reader)).toString(), 'before');
});
