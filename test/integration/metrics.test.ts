// /metrics through the assembled app after real registry traffic: what a Prometheus scrape gets, and
// the debug listener (`http.debug.addr`) that takes the endpoint over, as in Distribution.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import supertest from 'supertest';
import { parseConfig } from '../../config/load.js';
import type { ConfigInput } from '../../config/schema.js';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { createApp } from '../../src/http/app.js';
import { createServerMetrics } from '../../src/metrics/metrics.js';
import { startOperations, type Operations } from '../../src/metrics/operations.js';
import { createRegistry } from '../../src/registry/registry.js';
import { getManifest, pushBlob, pushImage, randomBlob, type Client } from '../helpers/oci.js';

const logger = pino({ level: process.env.WHARF_TEST_LOG_LEVEL ?? 'silent' });

/** The app wired as src/main.ts wires it. */
async function assemble(
  config: NonNullable<ConfigInput> = {},
  storage?: StorageDriver,
): Promise<{ client: Client; operations: Operations }> {
  const metrics = createServerMetrics();
  const driver = storage ?? createInMemoryDriver(metrics.storageHooks);
  const registry = createRegistry(driver, {
    deleteEnabled: true,
    manifestMaxSize: 4 * 1024 * 1024,
    cacheObserver: metrics.cacheObserver,
  });
  const parsed = parseConfig(config).config;
  const operations = await startOperations({ config: parsed, logger, driver, metrics, clustered: false });
  const app = createApp({
    registry,
    logger,
    hooks: { outer: [metrics.middleware], routes: operations.routes },
  });
  return { client: supertest(app.callback()), operations };
}

/** `name{labels} value` lines of one metric whose labels include all of `labels`. */
function values(text: string, name: string, labels: Record<string, string> = {}): number[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .filter((line) => Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
    .map((line) => Number(line.slice(line.lastIndexOf(' ') + 1)));
}

const one = (text: string, name: string, labels: Record<string, string> = {}): number => {
  const found = values(text, name, labels);
  assert.equal(found.length, 1, `${name} ${JSON.stringify(labels)}: ${found.length} series`);
  return found[0]!;
};

describe('/metrics on the main listener', () => {
  test('after a push and pulls: requests by route, bytes, storage operations, cache hits', async () => {
    const { client } = await assemble();
    const blob = randomBlob(10_000);
    await pushBlob(client, 'team/app', blob);
    const image = await pushImage(client, 'team/app', 'v1');
    for (let i = 0; i < 3; i++) await getManifest(client, 'team/app', image.digest).expect(200);
    await getManifest(client, 'team/app', 'missing').expect(404);

    const res = await client.get('/metrics').expect(200);
    assert.match(res.get('Content-Type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = res.text;
    const manifests = { route: '/v2/*name/manifests/:reference' };
    assert.equal(one(text, 'wharf_http_requests_total', { ...manifests, method: 'GET', status: '200' }), 3);
    assert.equal(one(text, 'wharf_http_requests_total', { ...manifests, method: 'GET', status: '404' }), 1);
    assert.equal(one(text, 'wharf_http_requests_total', { ...manifests, method: 'PUT', status: '201' }), 1);
    // The PUT that completes each monolithic upload carries the blob: 10 000 bytes, a config, a layer.
    const uploadPut = { route: '/v2/*name/blobs/uploads/:id', method: 'PUT' };
    const bytesIn = values(text, 'wharf_http_request_body_bytes_total', uploadPut);
    assert.equal(bytesIn.length, 1, `one series for upload PUTs in:\n${text}`);
    assert.ok(bytesIn[0]! >= 10_000 + 512, `upload bytes counted: ${bytesIn[0]}`);
    assert.ok(
      one(text, 'wharf_http_response_body_bytes_total', { ...manifests, method: 'GET' }) >=
        3 * image.bytes.length,
    );
    // No raw repository name or digest in any label.
    assert.ok(
      !/team\/app|sha256:/.test(
        text
          .split('\n')
          .filter((l) => l.startsWith('wharf_'))
          .join('\n'),
      ),
    );
    // The storage driver reported its operations.
    assert.ok(
      one(text, 'wharf_storage_operation_duration_seconds_count', {
        driver: 'inmemory',
        operation: 'putContent',
      }) > 0,
    );
    assert.ok(
      values(text, 'wharf_storage_operation_errors_total', { driver: 'inmemory', error: 'not_found' })
        .length > 0,
    );
    // The manifest cache: the first GET by digest fills it, the next two hit it.
    assert.ok(one(text, 'wharf_cache_hits_total', { cache: 'manifests' }) >= 2);
    // The digest of each upload came from the running hash, not from re-reading storage.
    assert.equal(one(text, 'wharf_cache_hits_total', { cache: 'upload_hash' }), 3);
    assert.equal(values(text, 'wharf_cache_misses_total', { cache: 'upload_hash' }).length, 0);
    assert.equal(one(text, 'wharf_uploads_active'), 0);
    assert.ok(values(text, 'process_cpu_seconds_total').length === 1, 'process metrics are there');
  });

  test('an upload finished by another replica, without the hash state, counts as an upload_hash miss', async () => {
    const storage = createInMemoryDriver();
    const first = await assemble({}, storage);
    const second = await assemble({}, storage);
    const blob = randomBlob(2048);
    const post = await first.client.post('/v2/a/blobs/uploads/').expect(202);
    const patch = await first.client
      .patch(post.get('Location') ?? '')
      .set('Content-Type', 'application/octet-stream')
      .set('Content-Range', `0-${blob.length - 1}`)
      .send(blob)
      .expect(202);
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    await second.client
      .put(`${patch.get('Location') ?? ''}?digest=${encodeURIComponent(digest)}`)
      .expect(201);
    const text = (await second.client.get('/metrics').expect(200)).text;
    assert.equal(one(text, 'wharf_cache_misses_total', { cache: 'upload_hash' }), 1);
    assert.equal(values(text, 'wharf_cache_hits_total', { cache: 'upload_hash' }).length, 0);
  });
});

describe('http.debug', () => {
  test('with an address, metrics and probes are served there and /metrics leaves the main listener', async () => {
    const { client, operations } = await assemble({ http: { debug: { addr: '127.0.0.1:0' } } });
    try {
      assert.ok(operations.debugAddress);
      await client.get('/v2/').expect(200);
      await client.get('/metrics').expect(404);
      await client.get('/healthz').expect(200);
      const debug = `http://${operations.debugAddress}`;
      const scrape = await fetch(`${debug}/metrics`);
      assert.equal(scrape.status, 200);
      const text = await scrape.text();
      assert.equal(
        one(text, 'wharf_http_requests_total', { route: '/v2/', method: 'GET', status: '200' }),
        1,
      );
      assert.equal((await fetch(`${debug}/healthz`)).status, 200);
      assert.equal((await fetch(`${debug}/readyz`)).status, 200);
      assert.equal((await fetch(`${debug}/v2/`)).status, 404, 'the debug listener serves no registry');
    } finally {
      await operations.close();
    }
  });

  test('another path; and prometheus disabled means no endpoint at all', async () => {
    const moved = await assemble({ http: { debug: { prometheus: { path: '/internal/metrics' } } } });
    await moved.client.get('/internal/metrics').expect(200);
    await moved.client.get('/metrics').expect(404);
    const off = await assemble({ http: { debug: { prometheus: { enabled: false } } } });
    await off.client.get('/metrics').expect(404);
    await off.client.get('/healthz').expect(200);
  });
});
