// `serve --workers`: the worker count and the config of the workers that leave the schedules to one.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig } from '../../config/load.js';
import { parseWorkerCount, withoutSchedules } from '../../src/cluster.js';

describe('parseWorkerCount', () => {
  const cases: { text: string; cpus?: number; want: number | RegExp }[] = [
    { text: '2', want: 2 },
    { text: ' 4 ', want: 4 },
    { text: '1', want: 1 },
    { text: '0', cpus: 6, want: 6 },
    { text: 'auto', cpus: 3, want: 3 },
    { text: 'AUTO', cpus: 2, want: 2 },
    { text: 'auto', cpus: 0, want: 1 },
    { text: '-1', want: /expected a number of workers/ },
    { text: '2.5', want: /expected a number of workers/ },
    { text: 'many', want: /got "many"/ },
    { text: '', want: /expected a number of workers/ },
    { text: '100000', want: /1-256/ },
  ];
  for (const { text, cpus, want } of cases) {
    test(`${JSON.stringify(text)}${cpus === undefined ? '' : ` on ${cpus} CPUs`}`, () => {
      if (want instanceof RegExp) assert.throws(() => parseWorkerCount(text, cpus), want);
      else assert.equal(parseWorkerCount(text, cpus), want);
    });
  }
});

test('withoutSchedules turns off scheduled GC and upload purging and keeps everything else', () => {
  const { config } = parseConfig({
    http: { addr: ':5001' },
    gc: { interval: '1h', grace: '10m', deleteuntagged: true },
    storage: {
      inmemory: {},
      maintenance: { uploadpurging: { enabled: true, age: '2h', interval: '30m', dryrun: false } },
    },
  });
  const quiet = withoutSchedules(config);
  assert.equal(quiet.gc?.interval, undefined);
  assert.equal(quiet.gc?.grace, config.gc?.grace);
  assert.equal(quiet.gc?.deleteuntagged, true);
  assert.equal(quiet.storage.maintenance.uploadpurging.enabled, false);
  assert.equal(quiet.storage.maintenance.uploadpurging.age, config.storage.maintenance.uploadpurging.age);
  assert.equal(quiet.http.addr, ':5001');
  assert.deepEqual(quiet.storage.inmemory, config.storage.inmemory);
  // The original is left as it was (the primary's copy is not changed under it).
  assert.equal(config.storage.maintenance.uploadpurging.enabled, true);
  assert.ok(config.gc?.interval);
  // No gc section: none is added.
  assert.equal(withoutSchedules(parseConfig({}).config).gc, undefined);
});
