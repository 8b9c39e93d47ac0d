// What blob reads and upload completion read from storage: on S3 every read is a request. A HEAD right
// after an upload reuses the upload's lookup for at most the touch window (src/gc/collect.ts, (d)); the
// completion of an upload opens its data once. Each saving must keep the answers right.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import supertest from 'supertest';
import { StorageDriverError, type StorageDriver } from '../../storage-drivers/driver.js';
import { createFilesystemDriver } from '../../storage-drivers/filesystem/driver.js';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { collectGarbage } from '../../src/gc/collect.js';
import { TOUCH_SKIP_MS } from '../../src/gc/records.js';
import { parseDigest } from '../../src/registry/digest.js';
import { parsePath, pathFor } from '../../src/registry/paths.js';
import { createTestApp } from '../helpers/app.js';
import {
  MT,
  expectStatus,
  locationOf,
  pushBlob,
  randomBlob,
  sha256,
  withQuery,
  type Client,
} from '../helpers/oci.js';

type Op = 'getContent' | 'putContent' | 'stat' | 'statFile' | 'reader' | 'writer' | 'move' | 'delete';
const RECORDED: readonly Op[] = [
  'getContent',
  'putContent',
  'stat',
  'statFile',
  'reader',
  'writer',
  'move',
  'delete',
];

/** A driver that records `op kind` (the path's kind in paths.ts) for each call while `recording`. */
function recordingDriver(inner: StorageDriver): {
  driver: StorageDriver;
  calls: string[];
  failNext?: (op: Op, path: string) => boolean;
} {
  const state: { driver: StorageDriver; calls: string[]; failNext?: (op: Op, path: string) => boolean } = {
    driver: Object.create(inner) as StorageDriver,
    calls: [],
  };
  for (const op of RECORDED) {
    const original = inner[op].bind(inner) as (...a: unknown[]) => Promise<unknown>;
    (state.driver as unknown as Record<Op, (...a: unknown[]) => Promise<unknown>>)[op] = (
      path: unknown,
      ...rest: unknown[]
    ) => {
      const text = String(path);
      // paths.ts parses what GC walks; upload sessions are named here.
      const kind = parsePath(text)?.kind ?? (/\/_uploads\/[^/]+\/data$/.test(text) ? 'uploadData' : text);
      state.calls.push(`${op} ${kind}`);
      if (state.failNext?.(op, text) === true) {
        state.failNext = undefined;
        return Promise.reject(new StorageDriverError(`injected failure: ${op} ${text}`, inner.name));
      }
      return original(path, ...rest);
    };
  }
  return state;
}

async function setup(inner: StorageDriver = createInMemoryDriver()) {
  const recorded = recordingDriver(inner);
  const t = await createTestApp({ deleteEnabled: true, driver: recorded.driver });
  return { ...t, inner, recorded, r: supertest(t.app.callback()) };
}

const digestOf = (text: string) => {
  const d = parseDigest(text);
  assert.ok(d, text);
  return d;
};

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function patchThenPut(r: Client, name: string, content: Buffer): Promise<number> {
  const post = await r.post(`/v2/${name}/blobs/uploads/`);
  expectStatus(post, 202);
  const patch = await r.patch(locationOf(post)).set('Content-Type', MT.octet).send(content);
  expectStatus(patch, 202);
  const put = await r.put(withQuery(locationOf(patch), { digest: sha256(content) }));
  return put.status;
}

void describe('blob HEAD and GET right after a use', () => {
  test('a HEAD right after an upload reads only the tombstone', async () => {
    const { r, recorded } = await setup();
    const blob = await pushBlob(r, 'reads', randomBlob(100));
    recorded.calls.length = 0;
    expectStatus(await r.head(`/v2/reads/blobs/${blob.digest}`), 200);
    assert.deepEqual(recorded.calls, ['statFile gcTombstone']);
  });

  test('the reuse ends with the touch window: a blob deleted behind the registry is gone to HEAD', async () => {
    const { r, inner } = await setup();
    const blob = await pushBlob(r, 'reads', randomBlob(100));
    await inner.delete(pathFor({ kind: 'blobDir', digest: digestOf(blob.digest) }));
    // GET reads the bytes, so it never serves what is gone, even inside the window.
    expectStatus(await r.get(`/v2/reads/blobs/${blob.digest}`), 404);
    await pause(TOUCH_SKIP_MS + 100);
    expectStatus(await r.head(`/v2/reads/blobs/${blob.digest}`), 404);
  });

  test('a GC run in the process and a DELETE end the reuse at once', async () => {
    const { r, driver, registry } = await setup();
    const swept = await pushBlob(r, 'reads', randomBlob(100));
    const deleted = await pushBlob(r, 'reads', randomBlob(100));
    expectStatus(await r.delete(`/v2/reads/blobs/${deleted.digest}`), 202);
    expectStatus(await r.head(`/v2/reads/blobs/${deleted.digest}`), 404);
    const summary = await collectGarbage(driver, {
      graceMs: 0,
      clockSlackMs: 0,
      records: registry.blobs.gc,
    });
    assert.ok(summary.removed.blobs.some((b) => b.digest === swept.digest));
    expectStatus(await r.head(`/v2/reads/blobs/${swept.digest}`), 404);
  });

  test('a tombstone still answers 404 inside the window', async () => {
    const { r, registry } = await setup();
    const blob = await pushBlob(r, 'reads', randomBlob(100));
    registry.blobs.gc.tombstoneWaitMs = 100;
    await registry.blobs.gc.writeTombstone(digestOf(blob.digest), 'test');
    expectStatus(await r.head(`/v2/reads/blobs/${blob.digest}`), 404);
    expectStatus(await r.get(`/v2/reads/blobs/${blob.digest}`), 404);
  });
});

void describe('upload completion', () => {
  test('opens the data once and does not stat it', async () => {
    const { r, recorded } = await setup();
    const post = await r.post('/v2/up/blobs/uploads/');
    const content = randomBlob(5000);
    const patch = await r.patch(locationOf(post)).set('Content-Type', MT.octet).send(content);
    recorded.calls.length = 0;
    expectStatus(await r.put(withQuery(locationOf(patch), { digest: sha256(content) })), 201);
    assert.equal(
      recorded.calls.filter((c) => c === 'writer uploadData').length,
      1,
      recorded.calls.join(', '),
    );
    assert.ok(!recorded.calls.includes('stat uploadData'), recorded.calls.join(', '));
  });

  test('a storage failure while completing keeps the data: the PUT can be retried', async () => {
    const { r, recorded } = await setup();
    const content = randomBlob(5000);
    const post = await r.post('/v2/up/blobs/uploads/');
    const patch = await r.patch(locationOf(post)).set('Content-Type', MT.octet).send(content);
    const put = withQuery(locationOf(patch), { digest: sha256(content) });
    recorded.failNext = (op, path) => op === 'statFile' && parsePath(path)?.kind === 'blobData';
    assert.notEqual((await r.put(put)).status, 201);
    expectStatus(await r.put(put), 201);
    const got = await r.get(`/v2/up/blobs/${sha256(content)}`).buffer(true);
    expectStatus(got, 200);
    assert.equal(sha256(got.body as Buffer), sha256(content));
  });

  test('on the filesystem, an upload of a blob that exists leaves no session behind', async () => {
    const root = await mkdtemp(join(tmpdir(), 'wharf-storage-reads-'));
    try {
      const { r } = await setup(createFilesystemDriver({ rootdirectory: root }));
      const content = randomBlob(3000);
      assert.equal(await patchThenPut(r, 'fs', content), 201);
      assert.equal(await patchThenPut(r, 'fs', content), 201, 'the second upload is deduplicated');
      const uploads = join(root, 'docker/registry/v2/repositories/fs/_uploads');
      assert.deepEqual(await readdir(uploads).catch(() => []), []);
      // A digest that does not match drops the data too.
      const post = await r.post('/v2/fs/blobs/uploads/');
      const patch = await r.patch(locationOf(post)).set('Content-Type', MT.octet).send(randomBlob(10));
      expectStatus(await r.put(withQuery(locationOf(patch), { digest: sha256(content) })), 400);
      assert.deepEqual(await readdir(uploads).catch(() => []), []);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
