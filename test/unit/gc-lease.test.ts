import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { Lease, LeaseHeldError, LeaseLostError } from '../../src/gc/lease.js';
import { pathFor } from '../../src/registry/paths.js';

const leasePath = pathFor({ kind: 'gcLease' });

describe('gc lease', () => {
  test('only one of many racing acquirers wins', async () => {
    const driver = createInMemoryDriver();
    const leases = Array.from({ length: 8 }, (_, i) => new Lease(driver, `owner-${i}`));
    const results = await Promise.allSettled(leases.map((l) => l.acquire()));
    const won = results.filter((r) => r.status === 'fulfilled');
    assert.equal(won.length, 1);
    for (const r of results) {
      if (r.status === 'rejected') assert.ok(r.reason instanceof LeaseHeldError);
    }
    await Promise.all(leases.map((l) => l.release()));
  });

  test('released, it can be taken again; a release by a non-holder changes nothing', async () => {
    const driver = createInMemoryDriver();
    const a = new Lease(driver, 'a');
    const b = new Lease(driver, 'b');
    await a.acquire();
    await assert.rejects(b.acquire(), LeaseHeldError);
    await b.release();
    assert.match((await driver.getContent(leasePath)).toString(), /"owner":"a"/);
    await a.release();
    await b.acquire();
    b.assertHeld();
    await b.release();
  });

  test('an expired lease is taken over, and its old holder notices on renewal', async () => {
    const driver = createInMemoryDriver();
    const stale = new Lease(driver, 'stale', 50);
    await stale.acquire();
    await new Promise((r) => setTimeout(r, 120));
    // The holder stalled (no renewals got through): simulate by expiring the file it wrote.
    await driver.putContent(
      leasePath,
      JSON.stringify({
        owner: 'stale',
        acquiredAt: '',
        expiresAt: new Date(Date.now() - 1000).toISOString(),
      }),
    );
    const fresh = new Lease(driver, 'fresh');
    await fresh.acquire();
    await stale.renew();
    assert.throws(() => {
      stale.assertHeld();
    }, LeaseLostError);
    fresh.assertHeld();
    await stale.release();
    assert.match(
      (await driver.getContent(leasePath)).toString(),
      /"owner":"fresh"/,
      'not released by the loser',
    );
    await fresh.release();
  });

  test('a lease file that is not JSON counts as expired', async () => {
    const driver = createInMemoryDriver();
    await driver.putContent(leasePath, 'garbage');
    const lease = new Lease(driver, 'me');
    await lease.acquire();
    lease.assertHeld();
    await lease.release();
    await assert.rejects(driver.stat(leasePath));
  });

  test('renewal extends the expiry', async () => {
    const driver = createInMemoryDriver();
    const lease = new Lease(driver, 'me', 60_000);
    await lease.acquire();
    const before = JSON.parse((await driver.getContent(leasePath)).toString()) as { expiresAt: string };
    await new Promise((r) => setTimeout(r, 20));
    await lease.renew();
    const after = JSON.parse((await driver.getContent(leasePath)).toString()) as { expiresAt: string };
    assert.ok(Date.parse(after.expiresAt) > Date.parse(before.expiresAt));
    await lease.release();
  });
});
