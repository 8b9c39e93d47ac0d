// Webhook events from real requests through the assembled app (in-memory storage), delivered to a
// receiver on 127.0.0.1: which requests make which events, what the events say, filtering, and that
// the queue neither slows nor fails a request.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import supertest from 'supertest';
import { parseConfig } from '../../config/load.js';
import type { ConfigInput } from '../../config/schema.js';
import { createAuth } from '../../src/auth/auth.js';
import { createApp } from '../../src/http/app.js';
import type { Event } from '../../src/notifications/event.js';
import { createNotifications, type Notifications } from '../../src/notifications/notifications.js';
import { NOTIFICATIONS_ROOT } from '../../src/registry/paths.js';
import { createRegistry } from '../../src/registry/registry.js';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { basicAuth, fixtureDir, writeHtpasswd } from '../helpers/auth.js';
import {
  MT,
  expectStatus,
  getManifest,
  header,
  prepareImage,
  pushBlob,
  pushImage,
  pushManifest,
  randomBlob,
  sha256,
  withQuery,
  type Client,
} from '../helpers/oci.js';

const logger = pino({ level: process.env.WHARF_TEST_LOG_LEVEL ?? 'silent' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const SECRET = 'integration-secret';

interface Delivery {
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A webhook receiver on loopback; `status` decides its answer. */
class Receiver {
  readonly deliveries: Delivery[] = [];
  status = 200;
  url = '';
  private server: Server | undefined;

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (this.status < 300) this.deliveries.push({ headers: req.headers, body: Buffer.concat(chunks) });
        res.statusCode = this.status;
        res.end();
      });
    });
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/events`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }

  events(): Event[] {
    return this.deliveries.flatMap(
      (d) => (JSON.parse(d.body.toString('utf8')) as { events: Event[] }).events,
    );
  }

  /** Waits until an event matches, and returns it. */
  async find(what: string, match: (e: Event) => boolean, timeoutMs = 10_000): Promise<Event> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events().find(match);
      if (found) return found;
      if (Date.now() > deadline) {
        assert.fail(`no ${what} event; got:\n${JSON.stringify(this.events(), null, 2)}`);
      }
      await sleep(10);
    }
  }
}

type NotificationsSection = NonNullable<NonNullable<ConfigInput>['notifications']>;
type AuthSection = NonNullable<NonNullable<ConfigInput>['auth']>;

interface Setup {
  client: Client;
  driver: StorageDriver;
  notifications: Notifications;
}

const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

async function setup(
  section: NotificationsSection,
  opts: { auth?: AuthSection; driver?: StorageDriver; externalURL?: string } = {},
): Promise<Setup> {
  const driver = opts.driver ?? createInMemoryDriver();
  const registry = createRegistry(driver, { deleteEnabled: true, manifestMaxSize: 4 * 1024 * 1024 });
  const { config } = parseConfig({ notifications: section, ...(opts.auth && { auth: opts.auth }) });
  assert.ok(config.notifications);
  const notifications = createNotifications(config.notifications, {
    driver,
    registry,
    logger,
    port: 5000,
    timing: { pollMs: 20, leaseRetryMs: 20, leaseTtlMs: 5_000 },
    ...(opts.externalURL !== undefined && { externalURL: opts.externalURL }),
  });
  closers.push(() => notifications.close());
  const auth = config.auth && (await createAuth(config.auth, { driver, logger }));
  const app = createApp({
    registry,
    logger,
    ...(auth && { auth }),
    ...(opts.externalURL !== undefined && { externalURL: opts.externalURL }),
    hooks: { outer: [notifications.middleware] },
  });
  return { client: supertest(app.callback()), driver, notifications };
}

const receiver = new Receiver();
const filtered = new Receiver();
let r: Client;
before(async () => {
  await receiver.start();
  await filtered.start();
  ({ client: r } = await setup({
    events: { includereferences: true },
    endpoints: [
      { name: 'all', url: receiver.url, secret: SECRET, headers: { 'X-Token': ['t0k'] } },
      {
        name: 'manifests only',
        url: filtered.url,
        ignoredmediatypes: [MT.octet],
        ignore: { actions: ['pull'] },
      },
      { name: 'off', url: 'http://127.0.0.1:1/', disabled: true },
    ],
  }));
});
after(async () => {
  await receiver.stop();
  await filtered.stop();
});

describe('push', () => {
  test('a manifest PUT by tag: a push event with the manifest as target and its references', async () => {
    const name = 'events/push';
    const manifest = await prepareImage(r, name);
    const res = await pushManifest(r, name, 'v1', manifest);
    const requestId = header(res, 'X-Request-Id');
    assert.ok(requestId);

    const event = await receiver.find(
      'manifest push',
      (e) => e.action === 'push' && e.target.digest === manifest.digest,
    );
    assert.match(event.id, /^[0-9a-f-]{36}$/);
    assert.ok(!Number.isNaN(Date.parse(event.timestamp)));
    const doc = JSON.parse(manifest.bytes.toString()) as { config: unknown; layers: unknown[] };
    const host = event.request.host ?? '';
    assert.deepEqual(event.target, {
      mediaType: MT.ociManifest,
      digest: manifest.digest,
      size: manifest.bytes.length,
      length: manifest.bytes.length,
      repository: name,
      url: `http://${host}/v2/${name}/manifests/${manifest.digest}`,
      tag: 'v1',
      references: [doc.config, ...doc.layers],
    });
    assert.equal(event.request.id, requestId);
    assert.equal(event.request.method, 'PUT');
    assert.match(event.request.addr ?? '', /^127\.0\.0\.1:\d+$/);
    assert.match(host, /^127\.0\.0\.1:\d+$/);
    assert.equal(typeof event.request.useragent, 'string');
    assert.deepEqual(event.actor, {});
    assert.match(event.source.addr ?? '', /:5000$/);
    assert.match(event.source.instanceID ?? '', /^[0-9a-f-]{36}$/);
  });

  test('blob uploads: a push event per completed blob, with its size', async () => {
    const name = 'events/blobs';
    const blob = randomBlob(777);
    const { digest } = await pushBlob(r, name, blob);
    const event = await receiver.find('blob push', (e) => e.action === 'push' && e.target.digest === digest);
    assert.equal(event.target.mediaType, MT.octet);
    assert.equal(event.target.size, 777);
    assert.equal(event.target.length, 777);
    assert.equal(event.target.repository, name);
    assert.match(event.target.url ?? '', new RegExp(`/v2/${name}/blobs/${digest}$`));

    // Monolithic POST ?digest= as well.
    const mono = randomBlob(10);
    const res = await r
      .post(withQuery(`/v2/${name}/blobs/uploads/`, { digest: sha256(mono) }))
      .set('Content-Type', MT.octet)
      .send(mono);
    expectStatus(res, 201);
    const second = await receiver.find('monolithic push', (e) => e.target.digest === sha256(mono));
    assert.equal(second.action, 'push');
    assert.equal(second.target.size, 10);
  });

  test('the delivery is Distribution’s envelope, signed, with the configured headers', () => {
    const delivery = receiver.deliveries.at(-1);
    assert.ok(delivery, 'earlier tests delivered something');
    assert.equal(delivery.headers['content-type'], 'application/vnd.docker.distribution.events.v2+json');
    assert.equal(delivery.headers['x-token'], 't0k');
    const expected = createHmac('sha256', SECRET).update(delivery.body).digest('hex');
    assert.equal(delivery.headers['x-wharf-signature-256'], `sha256=${expected}`);
    const envelope = JSON.parse(delivery.body.toString()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(envelope), ['events']);
  });
});

describe('pull', () => {
  test('GET of a manifest by tag and of a blob are pulls; HEADs are not', async () => {
    const name = 'events/pull';
    const manifest = await pushImage(r, name, 'latest');
    const layer = (JSON.parse(manifest.bytes.toString()) as { layers: { digest: string; size: number }[] })
      .layers[0];
    assert.ok(layer);
    expectStatus(await r.head(`/v2/${name}/manifests/latest`).set('Accept', MT.ociManifest), 200);
    expectStatus(await r.head(`/v2/${name}/blobs/${layer.digest}`), 200);
    expectStatus(await getManifest(r, name, 'latest'), 200);
    expectStatus(await r.get(`/v2/${name}/blobs/${layer.digest}`), 200);

    const pull = await receiver.find(
      'manifest pull',
      (e) => e.action === 'pull' && e.target.repository === name && e.target.tag === 'latest',
    );
    assert.equal(pull.target.digest, manifest.digest);
    assert.equal(pull.target.mediaType, MT.ociManifest);
    assert.equal(pull.target.size, manifest.bytes.length);
    assert.equal(pull.target.references?.length, 2);
    assert.equal(pull.request.method, 'GET');
    const blobPull = await receiver.find(
      'blob pull',
      (e) => e.action === 'pull' && e.target.digest === layer.digest,
    );
    assert.equal(blobPull.target.size, layer.size);

    // A ranged GET is a pull too, with the whole blob's size.
    expectStatus(await r.get(`/v2/${name}/blobs/${layer.digest}`).set('Range', 'bytes=0-9'), 206);
    await until(
      'ranged pull',
      () =>
        receiver.events().filter((e) => e.action === 'pull' && e.target.digest === layer.digest).length === 2,
    );
    const ranged = receiver
      .events()
      .filter((e) => e.action === 'pull' && e.target.digest === layer.digest)[1];
    assert.equal(ranged?.target.size, layer.size);

    const heads = receiver.events().filter((e) => e.request.method === 'HEAD');
    assert.deepEqual(heads, []);
  });

  test('requests that fail make no event', async () => {
    const name = 'events/none';
    const before = receiver.events().length;
    expectStatus(await getManifest(r, name, 'missing'), 404);
    expectStatus(await r.get(`/v2/${name}/blobs/${sha256('nope')}`), 404);
    expectStatus(await r.delete(`/v2/${name}/manifests/${sha256('nope')}`), 404);
    // A request that does make an event, after them: once it arrived, the failures would have too.
    const { digest } = await pushBlob(r, name, randomBlob(5));
    await receiver.find('marker', (e) => e.target.digest === digest);
    assert.deepEqual(
      receiver
        .events()
        .slice(before)
        .filter((e) => e.target.repository === name)
        .map((e) => `${e.action} ${e.target.digest}`),
      [`push ${digest}`],
    );
  });
});

describe('delete', () => {
  test('manifest by digest, tag, and blob deletes', async () => {
    const name = 'events/delete';
    const manifest = await pushImage(r, name, 'v1');
    await pushManifest(r, name, 'v2', manifest);
    expectStatus(await r.delete(`/v2/${name}/manifests/v2`), 202);
    const tagDelete = await receiver.find(
      'tag delete',
      (e) => e.action === 'delete' && e.target.tag === 'v2',
    );
    assert.deepEqual(tagDelete.target, { mediaType: '', digest: '', size: 0, repository: name, tag: 'v2' });

    expectStatus(await r.delete(`/v2/${name}/manifests/${manifest.digest}`), 202);
    const manifestDelete = await receiver.find(
      'manifest delete',
      (e) => e.action === 'delete' && e.target.digest === manifest.digest,
    );
    assert.deepEqual(manifestDelete.target, {
      mediaType: '',
      digest: manifest.digest,
      size: 0,
      repository: name,
    });
    assert.equal(manifestDelete.request.method, 'DELETE');

    const { digest } = await pushBlob(r, name, randomBlob(9));
    expectStatus(await r.delete(`/v2/${name}/blobs/${digest}`), 202);
    const blobDelete = await receiver.find(
      'blob delete',
      (e) => e.action === 'delete' && e.target.digest === digest,
    );
    assert.deepEqual(blobDelete.target, { mediaType: '', digest, size: 0, repository: name });
  });
});

describe('mount', () => {
  test('a cross-repository mount is a mount event naming where it came from', async () => {
    const blob = randomBlob(321);
    const { digest } = await pushBlob(r, 'events/source', blob);
    const res = await r.post(
      withQuery('/v2/events/target/blobs/uploads/', { mount: digest, from: 'events/source' }),
    );
    expectStatus(res, 201);
    const event = await receiver.find('mount', (e) => e.action === 'mount' && e.target.digest === digest);
    assert.equal(event.target.repository, 'events/target');
    assert.equal(event.target.fromRepository, 'events/source');
    assert.equal(event.target.size, 321);
    assert.equal(event.target.mediaType, MT.octet);
  });

  test('a mount that cannot happen starts a session and makes no event', async () => {
    const missing = sha256('not stored anywhere');
    const res = await r.post(
      withQuery('/v2/events/target/blobs/uploads/', { mount: missing, from: 'events/source' }),
    );
    expectStatus(res, 202);
    const { digest } = await pushBlob(r, 'events/target', randomBlob(3));
    await receiver.find('marker', (e) => e.target.digest === digest);
    assert.equal(receiver.events().filter((e) => e.target.digest === missing).length, 0);
  });
});

describe('request and actor', () => {
  test('the client’s X-Request-Id is the event’s request id; the authenticated user is the actor', async () => {
    const dir = await fixtureDir();
    closers.push(() => dir.cleanup());
    await writeHtpasswd(dir.path('htpasswd'), { alice: 'wonderland1' });
    const own = new Receiver();
    await own.start();
    closers.push(() => own.stop());
    const { client } = await setup(
      { endpoints: [{ name: 'auth', url: own.url }] },
      {
        auth: {
          htpasswd: { realm: 'wharf', path: dir.path('htpasswd') },
          access: {
            rules: [{ repositories: ['**'], users: ['alice'], actions: ['pull', 'push', 'delete'] }],
          },
        },
        externalURL: 'https://registry.example.com/',
      },
    );
    const blob = randomBlob(4);
    const digest = sha256(blob);
    const res = await client
      .post(withQuery('/v2/events/actor/blobs/uploads/', { digest }))
      .set('Authorization', basicAuth('alice', 'wonderland1'))
      .set('X-Request-Id', 'my-request-42')
      .set('User-Agent', 'docker/27.0 go/go1.22')
      .set('Content-Type', MT.octet)
      .send(blob);
    expectStatus(res, 201);
    const event = await own.find('push', (e) => e.target.digest === digest);
    assert.deepEqual(event.actor, { name: 'alice' });
    assert.equal(event.request.id, 'my-request-42');
    assert.equal(event.request.useragent, 'docker/27.0 go/go1.22');
    assert.equal(event.target.url, `https://registry.example.com/v2/events/actor/blobs/${digest}`);

    // Refused requests make no event.
    const denied = await client
      .post(withQuery('/v2/events/actor/blobs/uploads/', { digest: sha256('x') }))
      .send('x');
    expectStatus(denied, 401);
  });
});

describe('filtering', () => {
  test('ignoredmediatypes and ignore.actions apply per endpoint; a disabled endpoint queues nothing', async () => {
    const name = 'events/filtered';
    const manifest = await pushImage(r, name, 'f1');
    expectStatus(await getManifest(r, name, 'f1'), 200);
    await receiver.find(
      'pull on the unfiltered endpoint',
      (e) => e.action === 'pull' && e.target.repository === name,
    );
    const push = await filtered.find('manifest push', (e) => e.target.digest === manifest.digest);
    assert.equal(push.action, 'push');
    // Both endpoints are fed by one writer per request, so the unfiltered pull having arrived means the
    // filtered endpoint had its chance as well.
    await sleep(100);
    const seen = filtered.events().filter((e) => e.target.repository === name);
    assert.deepEqual(
      seen.map((e) => `${e.action} ${e.target.mediaType}`),
      [`push ${MT.ociManifest}`],
    );
  });

  test('nothing is stored for the disabled endpoint', async () => {
    const { driver } = await setup({
      endpoints: [{ name: 'off', url: 'http://127.0.0.1:1/', disabled: true }],
    });
    await assert.rejects(driver.list(NOTIFICATIONS_ROOT));
  });
});

describe('durability', () => {
  test('the request does not fail or wait when the queue cannot be written; events follow later', async () => {
    const driver = createInMemoryDriver();
    let failing = true;
    const flaky = Object.create(driver) as StorageDriver;
    flaky.putContent = (path, content) =>
      failing && path.startsWith(NOTIFICATIONS_ROOT)
        ? Promise.reject(new Error('storage down'))
        : driver.putContent(path, content);
    const own = new Receiver();
    await own.start();
    closers.push(() => own.stop());
    const { client } = await setup({ endpoints: [{ name: 'flaky', url: own.url }] }, { driver: flaky });
    const { digest } = await pushBlob(client, 'events/flaky', randomBlob(8));
    await sleep(100);
    assert.equal(own.events().length, 0);
    failing = false;
    await own.find('push after storage came back', (e) => e.target.digest === digest);
  });

  test('close stores what is buffered; the next start on the same storage delivers it', async () => {
    const driver = createInMemoryDriver();
    const down = new Receiver();
    await down.start();
    closers.push(() => down.stop());
    down.status = 500;
    const first = await setup(
      { endpoints: [{ name: 'restart', url: down.url, backoff: '10ms' }] },
      { driver },
    );
    const digests: string[] = [];
    for (let i = 0; i < 3; i++)
      digests.push((await pushBlob(first.client, 'events/restart', randomBlob(6))).digest);
    await first.notifications.close();
    assert.ok((await driver.list(NOTIFICATIONS_ROOT)).length > 0, 'the queue is in storage');

    down.status = 200;
    await setup({ endpoints: [{ name: 'restart', url: down.url }] }, { driver });
    for (const digest of digests) await down.find(`push of ${digest}`, (e) => e.target.digest === digest);
  });
});

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
