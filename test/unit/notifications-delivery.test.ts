// The durable queue, the writer in front of it, the delivery lease, one POST, and the delivery loop,
// on the in-memory driver and against a receiver on 127.0.0.1.
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import {
  DeliveryLoop,
  postEnvelope,
  signBody,
  SIGNATURE_HEADER,
  type EndpointSettings,
} from '../../src/notifications/delivery.js';
import {
  encodeEnvelope,
  EVENTS_MEDIA_TYPE,
  newEvent,
  targetRecord,
  type Event,
} from '../../src/notifications/event.js';
import { StorageLease } from '../../src/registry/storage-lease.js';
import type { NotificationObserver } from '../../src/notifications/observer.js';
import { DurableQueue, QueueWriter } from '../../src/notifications/queue.js';
import { pathFor } from '../../src/registry/paths.js';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';

const logger = pino({ level: process.env.WHARF_TEST_LOG_LEVEL ?? 'silent' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function event(n: number): Event {
  return newEvent(
    'push',
    targetRecord({ digest: `sha256:${String(n).padStart(64, '0')}`, repository: 'r' }),
    {
      request: { id: `req-${n}`, method: 'PUT', useragent: 'test' },
      actor: {},
      source: {},
    },
  );
}

async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface Received {
  headers: IncomingHttpHeaders;
  body: Buffer;
  events: Event[];
}

/** A webhook receiver on loopback whose answer each test decides. */
class Receiver {
  readonly received: Received[] = [];
  status = 200;
  holdMs = 0;
  active = 0;
  maxActive = 0;
  private server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.active++;
        this.maxActive = Math.max(this.maxActive, this.active);
        const body = Buffer.concat(chunks);
        const answer = (): void => {
          this.active--;
          if (this.status >= 200 && this.status < 300) {
            this.received.push({
              headers: req.headers,
              body,
              events: (JSON.parse(body.toString()) as { events: Event[] }).events,
            });
          }
          res.statusCode = this.status;
          res.end();
        };
        if (this.holdMs > 0) setTimeout(answer, this.holdMs);
        else answer();
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
    return this.received.flatMap((r) => r.events);
  }
}

function settings(url: string, extra: Partial<EndpointSettings> = {}): EndpointSettings {
  return {
    name: 'ep',
    url,
    headers: {},
    timeoutMs: 2000,
    threshold: 2,
    backoffMs: 20,
    maxBackoffMs: 100,
    ...extra,
  };
}

class CountingObserver implements NotificationObserver {
  queuedCount = 0;
  deliveredEvents = 0;
  failures: string[] = [];
  lastPending = -1;
  queued(): void {
    this.queuedCount++;
  }
  delivered(_endpoint: string, events: number): void {
    this.deliveredEvents += events;
  }
  failed(_endpoint: string, reason: string): void {
    this.failures.push(reason);
  }
  pending(_endpoint: string, count: number): void {
    this.lastPending = count;
  }
}

/** A driver whose writes fail while `failing` is set. */
function flakyDriver(inner: StorageDriver): StorageDriver & { failing: boolean } {
  const d = Object.create(inner) as StorageDriver & { failing: boolean };
  d.failing = false;
  d.putContent = (path, content) =>
    d.failing ? Promise.reject(new Error('storage down')) : inner.putContent(path, content);
  return d;
}

describe('DurableQueue', () => {
  test('stores batches as envelopes, lists them oldest first, removes them', async () => {
    const driver = createInMemoryDriver();
    const queue = new DurableQueue(driver, 'ep');
    const first = await queue.append([event(1), event(2)]);
    const second = await queue.append([event(3)]);
    await driver.putContent(
      `${pathFor({ kind: 'notificationQueueDir', endpoint: 'ep' })}/README`,
      'not ours',
    );
    const entries = await queue.list();
    assert.deepEqual(entries, [first, second]);
    assert.deepEqual(
      entries.map((e) => e.events),
      [2, 1],
    );
    const body = await queue.read(first);
    assert.ok(body);
    assert.deepEqual(
      (JSON.parse(body.toString()) as { events: Event[] }).events.map((e) => e.request.id),
      ['req-1', 'req-2'],
    );
    await queue.remove(first);
    assert.equal(await queue.read(first), undefined);
    assert.deepEqual(await queue.list(), [second]);
  });

  test('an empty queue lists nothing', async () => {
    assert.deepEqual(await new DurableQueue(createInMemoryDriver(), 'none').list(), []);
  });
});

describe('QueueWriter', () => {
  test('stores events in the background, a request’s events in one batch', async () => {
    const queue = new DurableQueue(createInMemoryDriver(), 'ep');
    const observer = new CountingObserver();
    let stored = 0;
    const writer = new QueueWriter(queue, { logger, observer, onStored: () => stored++ });
    writer.add(event(1));
    writer.add(event(2));
    assert.equal(writer.buffered, 2, 'add() returns before anything is written');
    await until('stored', () => stored === 1);
    const entries = await queue.list();
    assert.deepEqual(
      entries.map((e) => e.events),
      [2],
    );
    assert.equal(observer.queuedCount, 2);
  });

  test('batches are bounded', async () => {
    const queue = new DurableQueue(createInMemoryDriver(), 'ep');
    const writer = new QueueWriter(queue, { logger, maxBatch: 3 });
    for (let i = 0; i < 7; i++) writer.add(event(i));
    await writer.close(Date.now() + 5000);
    assert.deepEqual(
      (await queue.list()).map((e) => e.events),
      [3, 3, 1],
    );
  });

  test('a storage outage keeps the events and retries; close waits for them', async () => {
    const driver = flakyDriver(createInMemoryDriver());
    const queue = new DurableQueue(driver, 'ep');
    const writer = new QueueWriter(queue, { logger });
    driver.failing = true;
    writer.add(event(1));
    await sleep(50);
    writer.add(event(2));
    assert.equal(writer.buffered, 2);
    driver.failing = false;
    await writer.close(Date.now() + 5000);
    const ids = [];
    for (const entry of await queue.list()) {
      const body = await queue.read(entry);
      ids.push(...(JSON.parse(String(body)) as { events: Event[] }).events.map((e) => e.request.id));
    }
    assert.deepEqual(ids, ['req-1', 'req-2']);
  });

  test('a full buffer drops new events instead of growing', async () => {
    const driver = flakyDriver(createInMemoryDriver());
    driver.failing = true;
    const writer = new QueueWriter(new DurableQueue(driver, 'ep'), { logger, maxBuffered: 5 });
    for (let i = 0; i < 20; i++) writer.add(event(i));
    assert.equal(writer.buffered, 5);
    await writer.close(Date.now() + 50);
  });
});

describe('StorageLease', () => {
  const path = pathFor({ kind: 'notificationLease', endpoint: 'ep' });

  test('one holder at a time; released, the other takes it', async () => {
    const driver = createInMemoryDriver();
    const a = new StorageLease(driver, path, 'a', 10_000);
    const b = new StorageLease(driver, path, 'b', 10_000);
    assert.equal(await a.tryAcquire(), true);
    assert.equal(await b.tryAcquire(), false);
    assert.equal(a.isHeld(), true);
    assert.equal(b.isHeld(), false);
    await a.release();
    assert.equal(await b.tryAcquire(), true);
    await b.release();
  });

  test('an expired lease (its holder died) is taken over, and the old holder sees it lost', async () => {
    const driver = createInMemoryDriver();
    await driver.putContent(
      path,
      JSON.stringify({ owner: 'dead', expiresAt: new Date(Date.now() - 1).toISOString() }),
    );
    const b = new StorageLease(driver, path, 'b', 10_000);
    assert.equal(await b.tryAcquire(), true);
    await b.release();

    const a = new StorageLease(driver, path, 'a', 60);
    assert.equal(await a.tryAcquire(), true);
    // `a` stalls: its record is overwritten by another owner; its next renewal notices.
    await driver.putContent(
      path,
      JSON.stringify({ owner: 'c', expiresAt: new Date(Date.now() + 10_000).toISOString() }),
    );
    await until('a loses the lease', () => !a.isHeld(), 2000);
    await a.release();
    assert.match(
      (await driver.getContent(path)).toString(),
      /"owner":"c"/,
      'release leaves another owner’s lease',
    );
  });

  test('an unreadable lease counts as expired', async () => {
    const driver = createInMemoryDriver();
    await driver.putContent(path, 'garbage');
    const a = new StorageLease(driver, path, 'a', 10_000);
    assert.equal(await a.tryAcquire(), true);
    await a.release();
  });
});

describe('postEnvelope', () => {
  const receiver = new Receiver();
  before(() => receiver.start());
  after(() => receiver.stop());

  test('sends the body as is, with the media type, the signature and the configured headers', async () => {
    receiver.status = 202;
    const body = encodeEnvelope([event(1)]);
    const result = await postEnvelope(
      settings(receiver.url, {
        secret: 'shh',
        headers: { Authorization: ['Bearer t'], 'X-Multi': ['a', 'b'] },
      }),
      body,
      new AbortController().signal,
    );
    assert.deepEqual(result, { ok: true, status: 202 });
    const got = receiver.received.at(-1);
    assert.ok(got);
    assert.deepEqual(got.body, body);
    assert.equal(got.headers['content-type'], EVENTS_MEDIA_TYPE);
    assert.equal(got.headers[SIGNATURE_HEADER.toLowerCase()], signBody('shh', body));
    assert.equal(got.headers.authorization, 'Bearer t');
    assert.equal(got.headers['x-multi'], 'a, b');
  });

  test('no secret, no signature header', async () => {
    receiver.status = 200;
    await postEnvelope(settings(receiver.url), encodeEnvelope([event(1)]), new AbortController().signal);
    assert.equal(receiver.received.at(-1)?.headers[SIGNATURE_HEADER.toLowerCase()], undefined);
  });

  const failures: { name: string; setup: () => string; reason: string; timeoutMs?: number }[] = [
    {
      name: 'a 500',
      setup: () => {
        receiver.status = 500;
        return receiver.url;
      },
      reason: '500',
    },
    {
      name: 'a 3xx is not delivered',
      setup: () => {
        receiver.status = 304;
        return receiver.url;
      },
      reason: '304',
    },
    {
      name: 'too slow',
      setup: () => {
        receiver.status = 200;
        receiver.holdMs = 500;
        return receiver.url;
      },
      reason: 'timeout',
      timeoutMs: 100,
    },
    { name: 'connection refused', setup: () => 'http://127.0.0.1:1/', reason: 'network' },
  ];
  for (const c of failures) {
    test(`fails with a reason: ${c.name}`, async () => {
      const url = c.setup();
      try {
        const result = await postEnvelope(
          settings(url, { timeoutMs: c.timeoutMs ?? 2000 }),
          encodeEnvelope([event(1)]),
          new AbortController().signal,
        );
        assert.equal(result.ok ? 'delivered' : result.reason, c.reason);
      } finally {
        receiver.holdMs = 0;
      }
    });
  }
});

describe('DeliveryLoop', () => {
  const timing = { pollMs: 20, leaseRetryMs: 20 };
  let receiver: Receiver;
  before(async () => {
    receiver = new Receiver();
    await receiver.start();
  });
  after(() => receiver.stop());

  function loop(driver: StorageDriver, owner: string, observer?: NotificationObserver, url = receiver.url) {
    const queue = new DurableQueue(driver, 'ep');
    const lease = new StorageLease(
      driver,
      pathFor({ kind: 'notificationLease', endpoint: 'ep' }),
      owner,
      5_000,
    );
    return { queue, loop: new DeliveryLoop(queue, lease, settings(url), timing, logger, observer) };
  }

  test('delivers in order, deletes after 2xx, and retries failures until the receiver answers', async () => {
    receiver.received.length = 0;
    receiver.status = 503;
    const driver = createInMemoryDriver();
    const observer = new CountingObserver();
    const { queue, loop: l } = loop(driver, 'a', observer);
    await queue.append([event(1), event(2)]);
    await queue.append([event(3)]);
    l.start();
    await until('some failures', () => observer.failures.length >= 3);
    assert.deepEqual([...new Set(observer.failures)], ['503']);
    assert.equal((await queue.list()).length, 2, 'nothing is deleted while the receiver fails');
    receiver.status = 200;
    await until('all delivered', async () => (await queue.list()).length === 0);
    await l.stop();
    assert.deepEqual(
      receiver.events().map((e) => e.request.id),
      ['req-1', 'req-2', 'req-3'],
    );
    assert.equal(observer.deliveredEvents, 3);
    assert.equal(observer.lastPending, 0);
    assert.equal(
      await driver.stat(pathFor({ kind: 'notificationLease', endpoint: 'ep' })).catch(() => 'gone'),
      'gone',
    );
  });

  test('wake() delivers a new entry without waiting for the poll', async () => {
    receiver.received.length = 0;
    receiver.status = 200;
    const driver = createInMemoryDriver();
    const queue = new DurableQueue(driver, 'ep');
    const lease = new StorageLease(
      driver,
      pathFor({ kind: 'notificationLease', endpoint: 'ep' }),
      'a',
      5_000,
    );
    const l = new DeliveryLoop(
      queue,
      lease,
      settings(receiver.url),
      { pollMs: 60_000, leaseRetryMs: 20 },
      logger,
    );
    l.start();
    await until('lease taken', () => lease.isHeld());
    await sleep(20);
    await queue.append([event(7)]);
    l.wake();
    await until('delivered', () => receiver.events().length === 1, 5_000);
    await l.stop();
  });

  test('two replicas on one storage: one delivers at a time, each event once', async () => {
    receiver.received.length = 0;
    receiver.status = 200;
    receiver.holdMs = 5;
    receiver.maxActive = 0;
    const driver = createInMemoryDriver();
    const a = loop(driver, 'a');
    const b = loop(driver, 'b');
    for (let i = 0; i < 20; i++) await a.queue.append([event(i)]);
    a.loop.start();
    b.loop.start();
    try {
      await until('all delivered', async () => (await a.queue.list()).length === 0);
    } finally {
      await Promise.all([a.loop.stop(), b.loop.stop()]);
      receiver.holdMs = 0;
    }
    assert.equal(receiver.maxActive, 1);
    const ids = receiver.events().map((e) => e.request.id);
    assert.deepEqual(
      ids,
      Array.from({ length: 20 }, (_, i) => `req-${i}`),
    );
  });

  test('stop() ends a long backoff at once and keeps the entry', async () => {
    const driver = createInMemoryDriver();
    const queue = new DurableQueue(driver, 'ep');
    const lease = new StorageLease(
      driver,
      pathFor({ kind: 'notificationLease', endpoint: 'ep' }),
      'a',
      5_000,
    );
    const observer = new CountingObserver();
    const l = new DeliveryLoop(
      queue,
      lease,
      settings('http://127.0.0.1:1/', { threshold: 1, backoffMs: 60_000, maxBackoffMs: 60_000 }),
      timing,
      logger,
      observer,
    );
    await queue.append([event(1)]);
    l.start();
    await until('first failure', () => observer.failures.length === 1);
    await l.stop();
    assert.deepEqual(observer.failures, ['network']);
    assert.equal((await queue.list()).length, 1);
  });
});
