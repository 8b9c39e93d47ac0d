// `wharf serve` with WHARF_WORKERS=2 (as `--workers 2`): a push and pulls spread over both workers on
// one port, /metrics summed over the workers, one worker running the GC schedule, a killed worker
// replaced, and SIGTERM draining every worker before the primary exits.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { MT, descriptorOf, ociManifest, sha256 } from '../helpers/oci.js';
import { printOutput, startWharf, type RunningServer } from '../helpers/processes.js';

const repo = 'e2e/workers';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One request on a fresh connection, so that the primary hands each to the next worker. */
function call(
  url: string,
  method = 'GET',
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function expect(reply: Reply, status: number, what: string): Reply {
  assert.equal(reply.status, status, `${what}: ${reply.status} ${reply.body.toString('utf8').slice(0, 300)}`);
  return reply;
}

async function pushBlob(base: string, data: Buffer): Promise<string> {
  const post = expect(await call(`${base}/v2/${repo}/blobs/uploads/`, 'POST'), 202, 'POST upload');
  const location = new URL(String(post.headers.location), base);
  const digest = sha256(data);
  location.searchParams.set('digest', digest);
  const headers = { 'content-type': 'application/octet-stream' };
  expect(await call(location.toString(), 'PUT', headers, data), 201, 'PUT blob');
  return digest;
}

/** Log lines of the server's output (JSON) that carry `msg`. */
function logLines(server: RunningServer, msg: string): Record<string, unknown>[] {
  return server
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{') && line.includes(`"msg":"${msg}"`))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function until(
  what: string,
  timeoutMs: number,
  check: () => boolean | Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

/** Samples of a metric from a scrape whose labels include all of `labels`. */
function samples(text: string, name: string, labels: Record<string, string> = {}): number[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .filter((line) => Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
    .map((line) => Number(line.slice(line.lastIndexOf(' ') + 1)));
}

const single = (text: string, name: string, labels: Record<string, string> = {}): number => {
  const found = samples(text, name, labels);
  assert.equal(found.length, 1, `one ${name} ${JSON.stringify(labels)} in:\n${text}`);
  return found[0]!;
};

describe('serve --workers 2', () => {
  let server: RunningServer;
  let stopped = false;

  before(async () => {
    server = await startWharf({
      env: { WHARF_WORKERS: '2', WHARF_LOG_LEVEL: 'info', WHARF_GC_INTERVAL: '2s', WHARF_GC_GRACE: '1h' },
      timeoutMs: 60_000,
    });
    await until('both workers are ready', 60_000, () => logLines(server, 'workers ready').length > 0);
  });
  after(async () => {
    if (!stopped) {
      printOutput(server, 'wharf --workers 2');
      await server.kill();
    }
  });

  const workerPids = (): Set<number> => new Set(logLines(server, 'listening').map((l) => Number(l.pid)));

  test('a push and pulls go through both workers; /metrics counts every worker’s requests', async () => {
    const layer = randomBytes(256 * 1024);
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: [sha256(layer)] },
      }),
    );
    const layerDigest = await pushBlob(server.url, layer);
    await pushBlob(server.url, config);
    const manifest = ociManifest({
      config: descriptorOf(MT.ociConfig, config),
      layers: [descriptorOf(MT.ociLayer, layer)],
    });
    const put = await call(
      `${server.url}/v2/${repo}/manifests/v1`,
      'PUT',
      { 'content-type': manifest.mediaType },
      manifest.bytes,
    );
    expect(put, 201, 'PUT manifest');

    const pulls = 10;
    for (let i = 0; i < pulls; i++) {
      const got = expect(
        await call(`${server.url}/v2/${repo}/manifests/v1`, 'GET', { accept: manifest.mediaType }),
        200,
        'GET manifest',
      );
      assert.ok(got.body.equals(manifest.bytes));
      const blob = expect(await call(`${server.url}/v2/${repo}/blobs/${layerDigest}`), 200, 'GET blob');
      assert.equal(sha256(blob.body), layerDigest);
    }

    // Every worker served some of them: the access log lines come from two pids.
    const served = new Set(
      logLines(server, 'request')
        .filter((l) => String(l.path).startsWith(`/v2/${repo}/`))
        .map((l) => Number(l.pid)),
    );
    assert.equal(served.size, 2, `requests served by ${[...served].join(', ')}`);

    // Whichever worker answers the scrape, it reports the sum over both.
    for (let i = 0; i < 4; i++) {
      const text = expect(await call(`${server.url}/metrics`), 200, 'GET /metrics').body.toString('utf8');
      const manifests = { route: '/v2/*name/manifests/:reference' };
      assert.equal(
        single(text, 'wharf_http_requests_total', { ...manifests, method: 'GET', status: '200' }),
        pulls,
      );
      assert.equal(
        single(text, 'wharf_http_requests_total', { ...manifests, method: 'PUT', status: '201' }),
        1,
      );
      assert.equal(
        single(text, 'wharf_http_requests_total', {
          route: '/v2/*name/blobs/:digest',
          method: 'GET',
          status: '200',
        }),
        pulls,
      );
      assert.equal(single(text, 'wharf_cluster_workers'), 2);
    }
  });

  test('one worker runs the GC schedule for the group', async () => {
    await until('a scheduled GC run finished', 30_000, () => logLines(server, 'gc finished').length >= 2);
    const runners = new Set(logLines(server, 'gc finished').map((l) => Number(l.pid)));
    assert.equal(runners.size, 1, `gc ran in ${[...runners].join(', ')}`);
    const text = expect(await call(`${server.url}/metrics`), 200, 'GET /metrics').body.toString('utf8');
    assert.ok(single(text, 'wharf_gc_last_run_timestamp_seconds') > 0, 'the GC figures reach the aggregate');
  });

  test('a worker killed unexpectedly is replaced', async () => {
    const before = workerPids();
    const victim = [...before][0]!;
    process.kill(victim, 'SIGKILL');
    await until(
      'the primary restarts a worker',
      30_000,
      () => logLines(server, 'worker died, restarting').length > 0,
    );
    await until('a new worker listens', 60_000, () => workerPids().size > before.size);
    const died = logLines(server, 'worker died, restarting')[0]!;
    assert.equal(died.workerPid, victim);
    assert.equal(died.signal, 'SIGKILL');
    for (let i = 0; i < 6; i++) expect(await call(`${server.url}/v2/`), 200, 'GET /v2/ after the restart');
    await until('two workers serve again', 10_000, async () => {
      const text = (await call(`${server.url}/metrics`)).body.toString('utf8');
      return (
        samples(text, 'wharf_cluster_workers')[0] === 2 &&
        samples(text, 'wharf_cluster_worker_restarts_total')[0] === 1
      );
    });
  });

  test('SIGTERM drains every worker and the primary exits cleanly', async () => {
    await server.stop('SIGTERM');
    stopped = true;
    const out = server.output();
    assert.equal(logLines(server, 'shutting down').length, 1 + 2, `primary and both live workers:\n${out}`);
    const exits = logLines(server, 'worker exited');
    assert.equal(exits.length, 2);
    for (const exit of exits) assert.equal(exit.code, 0);
    const final = logLines(server, 'shut down').find((l) => l.code !== undefined);
    assert.equal(final?.code, 0, 'the primary exits 0');
    await assert.rejects(call(`${server.url}/v2/`), 'nothing listens any more');
  });
});
