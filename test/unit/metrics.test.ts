// The metrics of one server: what a Prometheus scrape gets (valid text format, names, labels), the
// per-server registry, the HTTP middleware's labels and byte counts, and the reporting interfaces
// (storage hook, cache observer, GC status, webhook observer).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { Router } from '@koa/router';
import Koa from 'koa';
import { AggregatorRegistry } from 'prom-client';
import supertest from 'supertest';
import { PathNotFoundError, StorageDriverError } from '../../storage-drivers/driver.js';
import type { GcStatus, GcSummary } from '../../src/gc/summary.js';
import { createServerMetrics, type ServerMetrics } from '../../src/metrics/metrics.js';
import { UNMATCHED_ROUTE } from '../../src/metrics/http.js';

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(?:,|$)/y;

/**
 * Parses the Prometheus text format (0.0.4) strictly: every sample belongs to a family declared by
 * `# HELP` and `# TYPE`, labels are well formed, values are numbers. Fails the test on any other line.
 */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const types = new Map<string, string>();
  const helped = new Set<string>();
  const samples: Sample[] = [];
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    // The format ignores empty lines; prom-client puts one between families.
    if (line === '') continue;
    const help = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/.exec(line);
    if (help) {
      helped.add(help[1]!);
      continue;
    }
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    const m = SAMPLE.exec(line);
    assert.ok(m, `not a valid exposition line: ${JSON.stringify(line)}`);
    const [, name = '', rawLabels, rawValue = ''] = m;
    const labels: Record<string, string> = {};
    if (rawLabels !== undefined && rawLabels !== '') {
      LABEL.lastIndex = 0;
      let consumed = 0;
      for (let l = LABEL.exec(rawLabels); l; l = LABEL.exec(rawLabels)) {
        labels[l[1]!] = l[2]!;
        consumed = LABEL.lastIndex;
      }
      assert.equal(consumed, rawLabels.length, `malformed labels in ${line}`);
    }
    const value = rawValue === '+Inf' ? Infinity : rawValue === '-Inf' ? -Infinity : Number(rawValue);
    // Prometheus parses values with Go's ParseFloat, which takes NaN in any case (prom-client writes Nan).
    assert.ok(/^nan$/i.test(rawValue) || !Number.isNaN(value), `not a number in ${line}`);
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count|total|created)$/, '');
    assert.ok(types.has(family), `sample ${name} has no # TYPE before it`);
    assert.ok(helped.has(family), `sample ${name} has no # HELP before it`);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

async function scrape(metrics: ServerMetrics): Promise<{ samples: Sample[]; types: Map<string, string> }> {
  const { contentType, body } = await metrics.exposition();
  assert.match(contentType, /^text\/plain; version=0\.0\.4/);
  return parseExposition(body);
}

function find(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
}

function value(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = find(samples, name, labels);
  assert.equal(found.length, 1, `one ${name} ${JSON.stringify(labels)}, found ${found.length}`);
  return found[0]!.value;
}

/** A tiny app with the middleware and routes shaped like the registry's. */
function appWith(metrics: ServerMetrics): Koa {
  const app = new Koa();
  app.use(metrics.middleware as Koa.Middleware);
  const router = new Router();
  router.get('/v2/*name/manifests/:reference', (ctx) => {
    ctx.body = Buffer.alloc(123);
  });
  router.put('/v2/*name/blobs/uploads/:id', async (ctx) => {
    let n = 0;
    for await (const chunk of ctx.req as AsyncIterable<Buffer>) n += chunk.length;
    ctx.status = 201;
    ctx.body = `got ${n}`;
  });
  app.use(router.routes());
  return app;
}

describe('exposition', () => {
  test('a scrape is valid Prometheus text with every family the server documents', async () => {
    const metrics = createServerMetrics();
    const { types } = await scrape(metrics);
    const expected: Record<string, string> = {
      wharf_http_requests_total: 'counter',
      wharf_http_request_duration_seconds: 'histogram',
      wharf_http_request_body_bytes_total: 'counter',
      wharf_http_response_body_bytes_total: 'counter',
      wharf_http_requests_in_flight: 'gauge',
      wharf_uploads_active: 'gauge',
      wharf_storage_operation_duration_seconds: 'histogram',
      wharf_storage_operation_errors_total: 'counter',
      wharf_cache_hits_total: 'counter',
      wharf_cache_misses_total: 'counter',
      wharf_gc_running: 'gauge',
      wharf_gc_last_run_timestamp_seconds: 'gauge',
      wharf_gc_last_run_duration_seconds: 'gauge',
      wharf_gc_last_run_blobs_removed: 'gauge',
      wharf_gc_last_run_bytes_removed: 'gauge',
      wharf_gc_last_run_manifests_removed: 'gauge',
      wharf_gc_last_failure_timestamp_seconds: 'gauge',
      wharf_notifications_queued_total: 'counter',
      wharf_notifications_delivered_total: 'counter',
      wharf_notifications_delivery_duration_seconds: 'histogram',
      wharf_notifications_failed_total: 'counter',
      wharf_notifications_pending: 'gauge',
      // Default process metrics.
      process_cpu_seconds_total: 'counter',
      process_resident_memory_bytes: 'gauge',
      nodejs_eventloop_lag_seconds: 'gauge',
    };
    for (const [name, type] of Object.entries(expected)) assert.equal(types.get(name), type, name);
  });

  test('each server has its own registry: two servers in one process do not share figures', async () => {
    const a = createServerMetrics({ processMetrics: false });
    const b = createServerMetrics({ processMetrics: false });
    a.cacheObserver('manifests', true);
    assert.equal(value((await scrape(a)).samples, 'wharf_cache_hits_total', { cache: 'manifests' }), 1);
    assert.deepEqual(find((await scrape(b)).samples, 'wharf_cache_hits_total'), []);
    assert.notEqual(a.registry, b.registry);
  });
});

describe('HTTP middleware', () => {
  test('labels requests by route pattern, method and status, never by raw path', async () => {
    const metrics = createServerMetrics({ processMetrics: false });
    const client = supertest(appWith(metrics).callback());
    await client.get('/v2/team/app/manifests/latest').expect(200);
    await client.get('/v2/other/deep/name/manifests/v1').expect(200);
    await client.get('/no/such/path/abc123').expect(404);
    const { samples } = await scrape(metrics);
    const route = '/v2/*name/manifests/:reference';
    assert.equal(value(samples, 'wharf_http_requests_total', { route, method: 'GET', status: '200' }), 2);
    assert.equal(
      value(samples, 'wharf_http_requests_total', { route: UNMATCHED_ROUTE, method: 'GET', status: '404' }),
      1,
    );
    for (const s of find(samples, 'wharf_http_requests_total')) {
      assert.ok(!/team|other|abc123/.test(s.labels.route ?? ''), `raw path in a label: ${s.labels.route}`);
    }
    const count = value(samples, 'wharf_http_request_duration_seconds_count', { route, method: 'GET' });
    assert.equal(count, 2);
    const inf = value(samples, 'wharf_http_request_duration_seconds_bucket', {
      route,
      method: 'GET',
      status: '200',
      le: '+Inf',
    });
    assert.equal(inf, 2);
    assert.equal(value(samples, 'wharf_http_response_body_bytes_total', { route, method: 'GET' }), 246);
    assert.equal(value(samples, 'wharf_http_requests_in_flight'), 0);
  });

  test('a method outside the HTTP set is labelled other', async () => {
    const metrics = createServerMetrics({ processMetrics: false });
    await supertest(appWith(metrics).callback()).propfind('/v2/x/manifests/y');
    const { samples } = await scrape(metrics);
    assert.equal(find(samples, 'wharf_http_requests_total', { method: 'other' }).length, 1);
    assert.equal(find(samples, 'wharf_http_requests_total', { method: 'PROPFIND' }).length, 0);
  });

  test('counts streamed request body bytes and uploads in flight while they last', async () => {
    const metrics = createServerMetrics({ processMetrics: false });
    const server = appWith(metrics).listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      const req = request({
        host: '127.0.0.1',
        port,
        method: 'PUT',
        path: '/v2/a/blobs/uploads/0f3b',
        headers: { 'transfer-encoding': 'chunked' },
      });
      const answered = new Promise<string>((resolve, reject) => {
        req.on('response', (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => {
            resolve(text);
          });
        });
        req.on('error', reject);
      });
      req.write(Buffer.alloc(4000));
      // The request is in the middleware now, its body half sent.
      for (let i = 0; i < 100; i++) {
        if (value((await scrape(metrics)).samples, 'wharf_uploads_active') === 1) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(value((await scrape(metrics)).samples, 'wharf_uploads_active'), 1);
      req.end(Buffer.alloc(1000));
      assert.equal(await answered, 'got 5000');
      // 'close' of the response may come just after the client saw the end.
      await new Promise((r) => setTimeout(r, 50));
      const { samples } = await scrape(metrics);
      const labels = { route: '/v2/*name/blobs/uploads/:id', method: 'PUT' };
      assert.equal(value(samples, 'wharf_http_request_body_bytes_total', labels), 5000);
      assert.equal(value(samples, 'wharf_http_response_body_bytes_total', labels), 'got 5000'.length);
      assert.equal(value(samples, 'wharf_uploads_active'), 0);
    } finally {
      server.close();
    }
  });
});

describe('reporting interfaces', () => {
  test('storage operations: latency by driver and operation, errors by kind', async () => {
    const metrics = createServerMetrics({ processMetrics: false });
    const hook = metrics.storageHooks.onOperation!;
    hook('stat', 'filesystem', 3, undefined);
    hook('stat', 'filesystem', 5, new PathNotFoundError('/x', 'filesystem'));
    hook('putContent', 's3', 40, new StorageDriverError('boom', 's3'));
    const { samples } = await scrape(metrics);
    const stat = { driver: 'filesystem', operation: 'stat' };
    assert.equal(value(samples, 'wharf_storage_operation_duration_seconds_count', stat), 2);
    assert.equal(value(samples, 'wharf_storage_operation_duration_seconds_sum', stat), 0.008);
    assert.equal(value(samples, 'wharf_storage_operation_errors_total', { ...stat, error: 'not_found' }), 1);
    assert.equal(
      value(samples, 'wharf_storage_operation_errors_total', {
        driver: 's3',
        operation: 'putContent',
        error: 'backend',
      }),
      1,
    );
  });

  test('cache hits and misses by cache', async () => {
    const metrics = createServerMetrics({ processMetrics: false });
    metrics.cacheObserver('manifests', true);
    metrics.cacheObserver('manifests', true);
    metrics.cacheObserver('manifests', false);
    metrics.cacheObserver('upload_hash', false);
    const { samples } = await scrape(metrics);
    assert.equal(value(samples, 'wharf_cache_hits_total', { cache: 'manifests' }), 2);
    assert.equal(value(samples, 'wharf_cache_misses_total', { cache: 'manifests' }), 1);
    assert.equal(value(samples, 'wharf_cache_misses_total', { cache: 'upload_hash' }), 1);
  });

  test('GC figures follow the status the schedule records', async () => {
    const metrics = createServerMetrics({ processMetrics: false });
    const status: GcStatus = { running: false };
    metrics.watchGc(status);
    let { samples } = await scrape(metrics);
    assert.equal(value(samples, 'wharf_gc_last_run_timestamp_seconds'), 0, 'no run yet');
    status.running = true;
    assert.equal(value((await scrape(metrics)).samples, 'wharf_gc_running'), 1);
    status.running = false;
    status.lastRun = {
      finishedAt: '2026-01-02T03:04:05.000Z',
      durationMs: 1500,
      blobs: { removed: 7, bytesRemoved: 123456 },
      manifests: { removed: 2 },
    } as unknown as GcSummary;
    status.lastError = { at: '2026-01-01T00:00:00.000Z', message: 'x' };
    ({ samples } = await scrape(metrics));
    assert.equal(value(samples, 'wharf_gc_running'), 0);
    assert.equal(
      value(samples, 'wharf_gc_last_run_timestamp_seconds'),
      Date.parse('2026-01-02T03:04:05Z') / 1000,
    );
    assert.equal(value(samples, 'wharf_gc_last_run_duration_seconds'), 1.5);
    assert.equal(value(samples, 'wharf_gc_last_run_blobs_removed'), 7);
    assert.equal(value(samples, 'wharf_gc_last_run_bytes_removed'), 123456);
    assert.equal(value(samples, 'wharf_gc_last_run_manifests_removed'), 2);
    assert.equal(
      value(samples, 'wharf_gc_last_failure_timestamp_seconds'),
      Date.parse('2026-01-01T00:00:00Z') / 1000,
    );
  });

  test('webhook delivery: queued, delivered, failed by reason, pending per endpoint', async () => {
    const metrics = createServerMetrics({ processMetrics: false });
    const observer = metrics.notificationObserver;
    observer.queued('ci');
    observer.queued('ci');
    observer.delivered('ci', 2, 0.03);
    observer.failed('ci', '503');
    observer.failed('ci', 'timeout');
    observer.pending('ci', 5);
    observer.pending('ci', 3);
    const { samples } = await scrape(metrics);
    const ci = { endpoint: 'ci' };
    assert.equal(value(samples, 'wharf_notifications_queued_total', ci), 2);
    assert.equal(value(samples, 'wharf_notifications_delivered_total', ci), 2);
    assert.equal(value(samples, 'wharf_notifications_delivery_duration_seconds_count', ci), 1);
    assert.equal(value(samples, 'wharf_notifications_failed_total', { ...ci, reason: '503' }), 1);
    assert.equal(value(samples, 'wharf_notifications_failed_total', { ...ci, reason: 'timeout' }), 1);
    assert.equal(value(samples, 'wharf_notifications_pending', ci), 3);
  });
});

describe('aggregation across workers', () => {
  test('counters and histograms add up; GC figures and the shared queue backlog take the maximum', async () => {
    const workers = [
      createServerMetrics({ processMetrics: false }),
      createServerMetrics({ processMetrics: false }),
    ];
    const [one, two] = workers as [ServerMetrics, ServerMetrics];
    await supertest(appWith(one).callback()).get('/v2/a/manifests/x').expect(200);
    await supertest(appWith(two).callback()).get('/v2/a/manifests/x').expect(200);
    await supertest(appWith(two).callback()).get('/v2/a/manifests/x').expect(200);
    // Only the first worker runs the GC schedule; both see the same queue in storage.
    one.watchGc({
      running: false,
      lastRun: {
        finishedAt: '2026-01-02T00:00:00Z',
        durationMs: 1,
        blobs: { removed: 4, bytesRemoved: 10 },
        manifests: { removed: 0 },
      } as unknown as GcSummary,
    });
    two.watchGc({ running: false });
    one.notificationObserver.pending('ci', 6);
    two.notificationObserver.pending('ci', 6);
    const json = await Promise.all(workers.map((w) => w.registry.getMetricsAsJSON()));
    const { samples } = parseExposition(await AggregatorRegistry.aggregate(json).metrics());
    const route = { route: '/v2/*name/manifests/:reference', method: 'GET', status: '200' };
    assert.equal(value(samples, 'wharf_http_requests_total', route), 3);
    assert.equal(value(samples, 'wharf_http_request_duration_seconds_count', route), 3);
    assert.equal(value(samples, 'wharf_gc_last_run_blobs_removed'), 4);
    assert.equal(value(samples, 'wharf_notifications_pending', { endpoint: 'ci' }), 6);
  });
});
