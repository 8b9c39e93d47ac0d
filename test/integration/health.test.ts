// /healthz and /readyz as a Kubernetes probe sees them: through the assembled app, with auth on,
// with a storage that fails or hangs, and while the server drains for shutdown.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import supertest from 'supertest';
import { parseConfig } from '../../config/load.js';
import type { ConfigInput } from '../../config/schema.js';
import { StorageDriverError, type StorageDriver } from '../../storage-drivers/driver.js';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { createAuth } from '../../src/auth/auth.js';
import { createApp } from '../../src/http/app.js';
import { createServerMetrics } from '../../src/metrics/metrics.js';
import { startOperations, type Operations } from '../../src/metrics/operations.js';
import { createRegistry } from '../../src/registry/registry.js';
import { basicAuth, fixtureDir, randomPassword, writeHtpasswd } from '../helpers/auth.js';

const logger = pino({ level: process.env.WHARF_TEST_LOG_LEVEL ?? 'silent' });

/** The app wired as src/main.ts wires it: metrics middleware outside, health and metrics routes open. */
async function assemble(
  opts: { driver?: StorageDriver; config?: NonNullable<ConfigInput> } = {},
): Promise<{ client: ReturnType<typeof supertest>; operations: Operations }> {
  const metrics = createServerMetrics({ processMetrics: false });
  const driver = opts.driver ?? createInMemoryDriver(metrics.storageHooks);
  const { config } = parseConfig(opts.config ?? {});
  const registry = createRegistry(driver, {
    deleteEnabled: true,
    manifestMaxSize: config.validation.manifests.maxsize,
    cacheObserver: metrics.cacheObserver,
  });
  const auth = config.auth && (await createAuth(config.auth, { driver, logger }));
  const operations = await startOperations({ config, logger, driver, metrics, clustered: false });
  const app = createApp({
    registry,
    logger,
    ...(auth && { auth }),
    hooks: { outer: [metrics.middleware], routes: operations.routes },
  });
  return { client: supertest(app.callback()), operations };
}

/** An in-memory driver whose `stat` fails, or never answers. */
function brokenDriver(how: 'fails' | 'hangs'): StorageDriver {
  const inner = createInMemoryDriver();
  return {
    ...inner,
    name: inner.name,
    stat: (path) =>
      how === 'fails'
        ? Promise.reject(new StorageDriverError(`stat ${path}: connection refused`, inner.name))
        : new Promise(() => undefined),
  };
}

describe('/healthz', () => {
  test('answers 200 {"status":"ok"} as JSON, also to HEAD', async () => {
    const { client } = await assemble();
    const res = await client.get('/healthz').expect(200);
    assert.match(res.get('Content-Type') ?? '', /^application\/json/);
    assert.deepEqual(res.body, { status: 'ok' });
    assert.equal(res.get('Cache-Control'), 'no-store');
    await client.head('/healthz').expect(200);
  });

  test('stays 200 when the storage is down: the process is alive, a restart would not help', async () => {
    const { client } = await assemble({ driver: brokenDriver('fails') });
    await client.get('/healthz').expect(200);
  });
});

describe('/readyz', () => {
  test('200 when the storage answers, even before anything was stored', async () => {
    const { client } = await assemble();
    const res = await client.get('/readyz').expect(200);
    assert.deepEqual(res.body, { status: 'ok' });
  });

  test('503 with the reason when the storage fails', async () => {
    const { client } = await assemble({ driver: brokenDriver('fails') });
    const body = (await client.get('/readyz').expect(503)).body as Record<string, unknown>;
    assert.equal(body.status, 'unavailable');
    assert.match(String(body.reason), /storage inmemory: .*connection refused/);
  });

  test('503 when the storage does not answer within the timeout', async () => {
    const { client } = await assemble({ driver: brokenDriver('hangs') });
    const started = Date.now();
    const body = (await client.get('/readyz').expect(503)).body as Record<string, unknown>;
    assert.match(String(body.reason), /did not answer within 2000 ms/);
    assert.ok(Date.now() - started < 10_000, 'the probe is answered within its timeout, not hung');
  });

  test('503 once the server drains for shutdown', async () => {
    const { client, operations } = await assemble();
    await client.get('/readyz').expect(200);
    operations.health.drain();
    const res = await client.get('/readyz').expect(503);
    assert.deepEqual(res.body, { status: 'unavailable', reason: 'shutting down' });
    // Liveness does not change: the process is still doing its work.
    await client.get('/healthz').expect(200);
  });
});

describe('/debug/health (Distribution format)', () => {
  test('{} when healthy; the failing check by name when not', async () => {
    const ok = await assemble();
    assert.deepEqual((await ok.client.get('/debug/health').expect(200)).body, {});
    const down = await assemble({ driver: brokenDriver('fails') });
    const res = await down.client.get('/debug/health').expect(503);
    assert.deepEqual(Object.keys(res.body as object), ['storagedriver_inmemory']);
  });
});

describe('with auth on', () => {
  const users = { alice: randomPassword() };
  let dir: Awaited<ReturnType<typeof fixtureDir>>;
  before(async () => {
    dir = await fixtureDir();
    await writeHtpasswd(dir.path('htpasswd'), users);
  });
  after(async () => {
    await dir.cleanup();
  });

  test('probes and the metrics scrape need no credentials; the registry still does', async () => {
    const { client } = await assemble({
      config: { auth: { htpasswd: { realm: 'wharf-test', path: dir.path('htpasswd') } } },
    });
    await client.get('/v2/').expect(401);
    await client.get('/healthz').expect(200);
    await client.get('/readyz').expect(200);
    const metrics = await client.get('/metrics').expect(200);
    assert.match(metrics.text, /^# HELP /m);
    // Credentials, wrong ones included, change nothing for them.
    await client.get('/healthz').set('Authorization', basicAuth('alice', 'wrong')).expect(200);
    await client.get('/v2/').set('Authorization', basicAuth('alice', users.alice)).expect(200);
  });
});
