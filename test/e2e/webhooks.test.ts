// Webhook delivery with the real server (`wharf serve` from source, filesystem storage) and a receiver
// on 127.0.0.1: a receiver that is down and then failing still gets every event, events queued when the
// registry is SIGKILLed are delivered after it starts again on the same storage, and a receiver that
// holds its requests does not hold up pushes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { Event } from '../../src/notifications/event.js';
import { MT, descriptorOf, ociManifest, sha256 } from '../helpers/oci.js';
import { freePort, printOutput, startWharf, wharfS3Env, type RunningServer } from '../helpers/processes.js';
import { createTestBucket, s3TestSettingsOrReport } from '../s3/env.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Mode = 'down' | 'error' | 'ok' | 'hold';

/** A receiver on a fixed loopback port, so that it can be down (nothing listening) and come back. */
class Receiver {
  readonly events: Event[] = [];
  /** Requests answered 500 or still held, for the record. */
  failedOrHeld = 0;
  /** Deliveries being answered at once, at most, and a pause before each 200 to make overlaps visible. */
  maxActive = 0;
  okDelayMs = 0;
  private active = 0;
  private readonly held: ServerResponse[] = [];
  private server: Server | undefined;
  private mode: Mode = 'down';

  private constructor(readonly port: number) {}

  static async create(): Promise<Receiver> {
    return new Receiver(await freePort());
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/events`;
  }

  get holding(): number {
    return this.held.length;
  }

  async set(mode: Mode): Promise<void> {
    if (mode !== 'hold') this.release();
    this.mode = mode;
    if (mode === 'down') {
      await this.close();
      return;
    }
    if (this.server) return;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (this.mode === 'error') {
          this.failedOrHeld++;
          res.statusCode = 500;
          res.end();
          return;
        }
        const events = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { events: Event[] }).events;
        if (this.mode === 'hold') {
          this.failedOrHeld++;
          // Counted as received only once answered.
          res.on('finish', () => this.events.push(...events));
          this.held.push(res);
          return;
        }
        this.active++;
        this.maxActive = Math.max(this.maxActive, this.active);
        setTimeout(() => {
          this.active--;
          this.events.push(...events);
          res.end();
        }, this.okDelayMs);
      });
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', resolve);
    });
  }

  /** Answers every held request with 200. */
  release(): void {
    for (const res of this.held.splice(0)) res.end();
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }

  async waitFor(what: string, check: (events: Event[]) => boolean, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check(this.events)) {
      if (Date.now() > deadline) {
        assert.fail(`timed out waiting for ${what}; received ${this.events.length} events`);
      }
      await sleep(50);
    }
  }
}

interface Pushed {
  /** The digests whose push events must arrive: config, layer, manifest. */
  digests: string[];
}

async function expectStatus(res: Response, status: number, what: string): Promise<void> {
  if (res.status !== status) assert.fail(`${what}: want ${status}, got ${res.status}: ${await res.text()}`);
}

async function pushBlob(server: RunningServer, repo: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const res = await fetch(`${server.url}/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(digest)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: data,
  });
  await expectStatus(res, 201, `push blob to ${repo}`);
  return digest;
}

/** A small image (config, one layer, manifest by tag), over plain HTTP. */
async function pushImage(server: RunningServer, repo: string, tag: string): Promise<Pushed> {
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', n: randomBytes(8).toString('hex') }),
  );
  const layer = randomBytes(2048);
  const configDigest = await pushBlob(server, repo, config);
  const layerDigest = await pushBlob(server, repo, layer);
  const manifest = ociManifest({
    config: descriptorOf(MT.ociConfig, config),
    layers: [descriptorOf(MT.ociLayer, layer)],
  });
  const res = await fetch(`${server.url}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: { 'content-type': manifest.mediaType },
    body: manifest.bytes,
  });
  await expectStatus(res, 201, `push manifest ${repo}:${tag}`);
  return { digests: [configDigest, layerDigest, manifest.digest] };
}

const pushesOf = (events: Event[]): Set<string> =>
  new Set(events.filter((e) => e.action === 'push').map((e) => e.target.digest));
const hasAll = (events: Event[], digests: string[]): boolean => {
  const seen = pushesOf(events);
  return digests.every((d) => seen.has(d));
};

const dirs: string[] = [];
const servers: { server: RunningServer; label: string }[] = [];
const receivers: Receiver[] = [];
after(async () => {
  for (const { server, label } of servers) {
    printOutput(server, label);
    await server.stop();
  }
  for (const receiver of receivers) await receiver.close();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function newReceiver(): Promise<Receiver> {
  const receiver = await Receiver.create();
  receivers.push(receiver);
  return receiver;
}

/** A config file with one endpoint, retrying fast. */
async function configFile(endpoint: string, receiver: Receiver, extra: string[] = []): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'wharf-e2e-webhooks-'));
  dirs.push(dir);
  const path = join(dir, 'config.yml');
  await writeFile(
    path,
    [
      'version: 0.1',
      'notifications:',
      '  endpoints:',
      `    - name: ${endpoint}`,
      `      url: ${receiver.url}`,
      '      threshold: 2',
      '      backoff: 100ms',
      '      maxbackoff: 500ms',
      ...extra.map((line) => `      ${line}`),
      '',
    ].join('\n'),
  );
  return path;
}

async function start(
  label: string,
  config: string,
  root?: string,
  s3Env?: Record<string, string>,
): Promise<RunningServer> {
  const server = await startWharf({
    config,
    ...(root !== undefined && { root }),
    ...(s3Env !== undefined && { storage: 's3', env: s3Env }),
  });
  servers.push({ server, label });
  return server;
}

async function queueFiles(root: string, endpoint: string): Promise<string[]> {
  try {
    return await readdir(join(root, 'wharf/notifications', endpoint, 'queue'));
  } catch {
    return [];
  }
}

describe('webhooks', () => {
  test('a receiver that is down, then failing, then up gets every event', async () => {
    const receiver = await newReceiver();
    const server = await start('wharf (outage)', await configFile('outage', receiver));
    const digests: string[] = [];
    // Down: connection refused.
    for (let i = 0; i < 3; i++)
      digests.push(...(await pushImage(server, 'e2e/webhooks/outage', `down${i}`)).digests);
    await sleep(500);
    // Failing: 500 for every attempt.
    await receiver.set('error');
    for (let i = 0; i < 3; i++)
      digests.push(...(await pushImage(server, 'e2e/webhooks/outage', `error${i}`)).digests);
    await receiver.waitFor('failed attempts', () => receiver.failedOrHeld >= 2);
    assert.equal(receiver.events.length, 0);
    await receiver.set('ok');
    await receiver.waitFor('every push event', (events) => hasAll(events, digests));
    const ids = receiver.events.map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, 'no event was delivered twice');
    // An entry goes once its delivery's answer is in, which may be just after the receiver counted it.
    const deadline = Date.now() + 5000;
    let left = await queueFiles(server.root, 'outage');
    while (left.length > 0 && Date.now() < deadline) {
      await sleep(50);
      left = await queueFiles(server.root, 'outage');
    }
    assert.deepEqual(left, [], 'delivered entries are deleted');
  });

  test('events queued when the registry is killed are delivered after it starts again', async () => {
    const receiver = await newReceiver();
    await receiver.set('error');
    const config = await configFile('restart', receiver);
    const root = await mkdtemp(join(tmpdir(), 'wharf-e2e-webhooks-root-'));
    dirs.push(root);
    const first = await start('wharf (before the kill)', config, root);
    const pushed = await pushImage(first, 'e2e/webhooks/restart', 'v1');
    // Events are durable once stored, a moment after the response: wait for all three in the queue.
    const queued = async (): Promise<number> =>
      (await queueFiles(root, 'restart')).reduce(
        (sum, f) => sum + Number(/\.(\d+)\.json$/.exec(f)?.[1] ?? 0),
        0,
      );
    const deadline = Date.now() + 10_000;
    while ((await queued()) < pushed.digests.length && Date.now() < deadline) await sleep(50);
    assert.equal(await queued(), pushed.digests.length, 'the events are in the queue in storage');
    await first.kill();
    assert.equal(receiver.events.length, 0);

    await receiver.set('ok');
    const second = await start('wharf (after the kill)', config, root);
    // The killed process's lease runs out first (10 s), then the new one delivers.
    await receiver.waitFor('the events queued before the kill', (events) => hasAll(events, pushed.digests));
    const later = await pushImage(second, 'e2e/webhooks/restart', 'v2');
    await receiver.waitFor('the events after the restart', (events) => hasAll(events, later.digests));
  });

  test('a receiver that holds its requests does not hold up pushes', async () => {
    const receiver = await newReceiver();
    await receiver.set('hold');
    const server = await start('wharf (slow receiver)', await configFile('slow', receiver, ['timeout: 60s']));
    const first = await pushImage(server, 'e2e/webhooks/slow', 'one');
    await receiver.waitFor('a delivery to be held', () => receiver.holding > 0);
    // The receiver holds a delivery; pushes go on regardless.
    const second = await pushImage(server, 'e2e/webhooks/slow', 'two');
    assert.ok(receiver.holding > 0, 'the receiver was still holding a delivery when the push completed');
    assert.ok(!hasAll(receiver.events, second.digests));
    await receiver.set('ok');
    await receiver.waitFor('every push event', (events) =>
      hasAll(events, [...first.digests, ...second.digests]),
    );
  });
});

const s3 = s3TestSettingsOrReport('webhooks: two replicas on one S3 bucket');
if (s3 !== undefined) {
  void describe('webhooks with two replicas on one S3 bucket', () => {
    test('every event is delivered, by one replica at a time, once', async () => {
      const bucket = await createTestBucket(s3, 'e2e-webhooks');
      try {
        const receiver = await newReceiver();
        await receiver.set('ok');
        receiver.okDelayMs = 20;
        const config = await configFile('replicas', receiver);
        const env = wharfS3Env({ ...bucket.params, regionendpoint: s3.endpoint });
        const [a, b] = await Promise.all([
          start('wharf replica 1', config, undefined, env),
          start('wharf replica 2', config, undefined, env),
        ]);
        // Both replicas take pushes at once; only the lease holder delivers, the other's events included.
        const pushed = await Promise.all(
          [a, b, a, b].map((server, i) => pushImage(server, 'e2e/webhooks/replicas', `r${i}`)),
        );
        const digests = pushed.flatMap((p) => p.digests);
        await receiver.waitFor('every push event from both replicas', (events) => hasAll(events, digests));
        assert.equal(receiver.maxActive, 1, 'never two deliveries at once');
        const ids = receiver.events.map((e) => e.id);
        assert.equal(new Set(ids).size, ids.length, 'no event was delivered twice');
        const sources = new Set(receiver.events.map((e) => e.source.instanceID));
        assert.equal(sources.size, 2, 'events came from both replicas');
        await Promise.all([a.stop(), b.stop()]);
      } finally {
        await bucket.destroy();
      }
    });
  });
}
