import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { GcRecords } from '../../src/gc/records.js';
import { scheduleGc } from '../../src/gc/schedule.js';
import { newGcStatus } from '../../src/gc/summary.js';
import { pathFor } from '../../src/registry/paths.js';

const logger = pino({ level: 'silent' });

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('scheduled gc', () => {
  test('runs every interval, records the last run, and replicas space their runs by it', async () => {
    const inner = createInMemoryDriver();
    const driver = Object.create(inner) as StorageDriver;
    let runs = 0;
    driver.putContent = async (path, content) => {
      if (path === pathFor({ kind: 'gcLastRun' })) runs++;
      await inner.putContent(path, content);
    };
    const settings = { interval: 300, grace: 0, deleteUntagged: false };
    const statuses = [newGcStatus(), newGcStatus()];
    const stops = statuses.map((status) =>
      scheduleGc(driver, settings, { logger, status, records: new GcRecords(driver) }),
    );
    const started = Date.now();
    await until(() => statuses.some((s) => s.lastRun !== undefined));
    const record = JSON.parse((await driver.getContent(pathFor({ kind: 'gcLastRun' }))).toString()) as {
      finishedAt: string;
      removed?: unknown;
    };
    assert.ok(Date.parse(record.finishedAt) >= started);
    assert.equal(record.removed, undefined, 'the record leaves out the lists');
    // Two replicas with a 300 ms interval share one schedule: over 1.5 s about five runs, not ten.
    await new Promise((r) => setTimeout(r, 1500 - (Date.now() - started)));
    await Promise.all(stops.map((stop) => stop()));
    assert.ok(runs >= 2 && runs <= 7, `runs: ${runs}`);
    assert.equal(
      statuses.every((s) => !s.running),
      true,
    );
    assert.equal(
      statuses.some((s) => s.lastError !== undefined),
      false,
    );
  });

  test('stop ends the schedule before the first run', async () => {
    const driver = createInMemoryDriver();
    const status = newGcStatus();
    const stop = scheduleGc(
      driver,
      { interval: 60_000, grace: 0, deleteUntagged: false },
      {
        logger,
        status,
        records: new GcRecords(driver),
      },
    );
    await stop();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(status.lastRun, undefined);
  });
});
