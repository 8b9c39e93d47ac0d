// Garbage collection rules, end to end through the HTTP API on the in-memory driver: what a run keeps,
// what it removes, and how requests behave around tombstones (src/gc/collect.ts has the protocol).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import supertest from 'supertest';
import { PathNotFoundError, type StorageDriver } from '../../storage-drivers/driver.js';
import { collectGarbage, type GcOptions } from '../../src/gc/collect.js';
import { diskUsage } from '../../src/gc/du.js';
import { Lease, LeaseHeldError } from '../../src/gc/lease.js';
import { TOUCH_SKIP_MS } from '../../src/gc/records.js';
import { parseDigest, type Digest } from '../../src/registry/digest.js';
import { BLOBS_ROOT, parsePath, pathFor } from '../../src/registry/paths.js';
import { createTestApp, type TestApp } from '../helpers/app.js';
import {
  EMPTY_JSON,
  IndexSchema,
  MT,
  artifactManifest,
  bodyBytes,
  bodyJson,
  configBlob,
  expectOciError,
  expectStatus,
  getManifest,
  ociIndex,
  ociManifest,
  pushArtifact,
  pushBlob,
  pushImage,
  pushManifest,
  putManifest,
  randomBlob,
  raw,
  sha256,
  withPlatform,
  type Client,
  type Descriptor,
  type Manifest,
} from '../helpers/oci.js';

interface Env extends TestApp {
  r: Client;
}

/** In-memory storage that calls `after` once each `putContent` is done: a sweep racing a request. */
async function hookedDriver(after: (path: string) => Promise<void>): Promise<StorageDriver> {
  const inner = (await createTestApp()).driver;
  const driver = Object.create(inner) as StorageDriver;
  driver.putContent = async (path, content) => {
    await inner.putContent(path, content);
    await after(path);
  };
  return driver;
}

async function setup(driver?: StorageDriver): Promise<Env> {
  const t = await createTestApp({ deleteEnabled: true, ...(driver && { driver }) });
  return { ...t, r: supertest(t.app.callback()) };
}

/** A run that treats everything pushed so far as old: grace 0 on one clock. */
function gc(env: Env, opts: Partial<GcOptions> = {}) {
  return collectGarbage(env.driver, { graceMs: 0, clockSlackMs: 0, records: env.registry.blobs.gc, ...opts });
}

const d = (text: string): Digest => {
  const parsed = parseDigest(text);
  assert.ok(parsed, text);
  return parsed;
};

/** Every blob digest in storage. */
async function storedBlobs(driver: StorageDriver): Promise<Set<string>> {
  const found = new Set<string>();
  try {
    await driver.walk(BLOBS_ROOT, {
      onEntry: (info) => {
        const parsed = parsePath(info.path);
        if (parsed?.kind === 'blobData') found.add(parsed.digest.toString());
        return undefined;
      },
    });
  } catch (err) {
    if (!(err instanceof PathNotFoundError)) throw err;
  }
  return found;
}

/** Pulls a manifest and everything below it, checking each blob's digest. */
async function assertPulls(r: Client, name: string, reference: string): Promise<void> {
  const res = await getManifest(r, name, reference);
  expectStatus(res, 200);
  const doc = JSON.parse(bodyBytes(res).toString('utf8')) as {
    config?: Descriptor;
    layers?: Descriptor[];
    manifests?: Descriptor[];
  };
  for (const child of doc.manifests ?? []) await assertPulls(r, name, child.digest);
  for (const blob of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) {
    const got = await raw(r.get(`/v2/${name}/blobs/${blob.digest}`));
    expectStatus(got, 200);
    assert.equal(sha256(bodyBytes(got)), blob.digest);
  }
}

async function deleteManifest(r: Client, name: string, reference: string): Promise<void> {
  expectStatus(await r.delete(`/v2/${name}/manifests/${reference}`), 202);
}

function blobsOf(m: Manifest): string[] {
  const doc = JSON.parse(m.bytes.toString('utf8')) as { config?: Descriptor; layers?: Descriptor[] };
  return [doc.config?.digest, ...(doc.layers ?? []).map((l) => l.digest)].filter((x) => x !== undefined);
}

describe('gc: what a run keeps and removes', () => {
  test('shared layers survive deleting one image', async () => {
    const env = await setup();
    const { r } = env;
    const shared = await pushBlob(r, 'app', randomBlob(2048), MT.ociLayer);
    const images: Manifest[] = [];
    for (const tag of ['a', 'b']) {
      const config = await pushBlob(r, 'app', configBlob(), MT.ociConfig);
      const own = await pushBlob(r, 'app', randomBlob(512), MT.ociLayer);
      const m = ociManifest({ config, layers: [shared, own] });
      await pushManifest(r, 'app', tag, m);
      images.push(m);
    }
    const [a, b] = images as [Manifest, Manifest];
    await deleteManifest(r, 'app', a.digest);

    const summary = await gc(env);
    const blobs = await storedBlobs(env.driver);
    const onlyA = blobsOf(a).filter((x) => x !== shared.digest);
    assert.deepEqual(
      summary.removed.blobs.map((x) => x.digest).sort(),
      [a.digest, ...onlyA].sort(),
      'exactly image a (manifest, config, own layer) goes',
    );
    for (const x of [a.digest, ...onlyA]) assert.ok(!blobs.has(x), `${x} removed`);
    for (const x of [b.digest, ...blobsOf(b)]) assert.ok(blobs.has(x), `${x} kept`);
    await assertPulls(r, 'app', 'b');
    // The removed blobs' links went too: the repository no longer claims them.
    expectStatus(await r.head(`/v2/app/blobs/${onlyA[0] ?? ''}`), 404);
    assert.equal(summary.linksRemoved, onlyA.length);
  });

  test('a layer shared across repositories survives deleting it from one', async () => {
    const env = await setup();
    const { r } = env;
    const one = await pushImage(r, 'one', 'v1');
    const layer = blobsOf(one)[1] ?? '';
    expectStatus(await r.post(`/v2/two/blobs/uploads/?mount=${layer}&from=one`), 201);
    const config = await pushBlob(r, 'two', configBlob(), MT.ociConfig);
    await pushManifest(
      r,
      'two',
      'v1',
      ociManifest({ config, layers: [{ mediaType: MT.ociLayer, digest: layer, size: 512 }] }),
    );
    await deleteManifest(r, 'one', one.digest);
    await gc(env);
    assert.ok((await storedBlobs(env.driver)).has(layer));
    await assertPulls(r, 'two', 'v1');
  });

  test('index children survive, even untagged and with --delete-untagged', async () => {
    const env = await setup();
    const { r } = env;
    const amd = await pushImage(r, 'multi');
    const arm = await pushImage(r, 'multi');
    const index = ociIndex({
      manifests: [withPlatform(amd.descriptor, 'amd64'), withPlatform(arm.descriptor, 'arm64')],
    });
    await pushManifest(r, 'multi', 'latest', index);

    const summary = await gc(env, { deleteUntagged: true });
    assert.equal(summary.manifests.removed, 0);
    assert.equal(summary.blobs.removed, 0);
    await assertPulls(r, 'multi', 'latest');

    // Untag the index: now the index and both children are garbage.
    expectStatus(await r.delete('/v2/multi/manifests/latest'), 202);
    const second = await gc(env, { deleteUntagged: true });
    assert.deepEqual(
      [...second.removed.manifests].sort(),
      [amd.digest, arm.digest, index.digest].map((x) => `multi@${x}`).sort(),
    );
    const left = await storedBlobs(env.driver);
    for (const x of [index.digest, amd.digest, arm.digest, ...blobsOf(amd), ...blobsOf(arm)]) {
      assert.ok(!left.has(x), `${x} removed`);
    }
    expectOciError(await getManifest(r, 'multi', amd.digest), 404, 'MANIFEST_UNKNOWN');
  });

  test('referrers of a live image survive; referrers of a deleted subject go', async () => {
    const env = await setup();
    const { r } = env;
    const live = await pushImage(r, 'ref', 'live');
    const sbom = await pushArtifact(r, 'ref', { subject: live.descriptor });
    const doomed = await pushImage(r, 'ref', 'doomed');
    const sig = await pushArtifact(r, 'ref', {
      subject: doomed.descriptor,
      artifactType: 'application/vnd.example.signature.v1',
    });
    const sigLayer = await pushBlob(r, 'ref', randomBlob(300), MT.octet);
    const sigWithLayer = artifactManifest({ subject: doomed.descriptor, layers: [sigLayer] });
    await pushManifest(r, 'ref', sigWithLayer.digest, sigWithLayer);
    await deleteManifest(r, 'ref', doomed.digest);

    const summary = await gc(env, { deleteUntagged: true });
    assert.deepEqual(
      [...summary.removed.manifests].sort(),
      [`ref@${sig.digest}`, `ref@${sigWithLayer.digest}`].sort(),
    );
    const left = await storedBlobs(env.driver);
    assert.ok(left.has(sbom.digest), 'the live subject keeps its referrer');
    assert.ok(left.has(d(sha256(EMPTY_JSON)).toString()), 'the live referrer keeps its config');
    assert.ok(!left.has(sigLayer.digest), "a dead referrer's layer goes");
    const res = await r.get(`/v2/ref/referrers/${live.digest}`);
    expectStatus(res, 200);
    assert.deepEqual(
      bodyJson(res, IndexSchema).manifests.map((m) => m.digest),
      [sbom.digest],
    );
    const gone = await r.get(`/v2/ref/referrers/${doomed.digest}`);
    assert.deepEqual(bodyJson(gone, IndexSchema).manifests, [], 'no entry outlives its referrer');
    await assertPulls(r, 'ref', 'live');
    await assertPulls(r, 'ref', sbom.digest);
  });

  test('without --delete-untagged, referrers of a deleted subject stay (untagged manifests are kept)', async () => {
    const env = await setup();
    const { r } = env;
    const subject = await pushImage(r, 'keep', 'v1');
    const sbom = await pushArtifact(r, 'keep', { subject: subject.descriptor });
    await deleteManifest(r, 'keep', subject.digest);
    const summary = await gc(env);
    assert.equal(summary.manifests.removed, 0);
    await assertPulls(r, 'keep', sbom.digest);
    assert.ok(!(await storedBlobs(env.driver)).has(subject.digest));
  });

  test('untagged manifests go only with the flag, and only once older than the grace period', async () => {
    const env = await setup();
    const { r } = env;
    const old = await pushImage(r, 'retag', 'v1');
    const fresh = await pushImage(r, 'retag', 'v1'); // moves the tag: `old` is untagged now
    const untouched = await gc(env);
    assert.equal(untouched.manifests.removed, 0);
    await assertPulls(r, 'retag', old.digest);

    const young = await gc(env, { deleteUntagged: true, graceMs: 3_600_000 });
    assert.equal(young.manifests.removed, 0, 'pushed within the grace period');
    await assertPulls(r, 'retag', old.digest);

    const collected = await gc(env, { deleteUntagged: true });
    assert.deepEqual(collected.removed.manifests, [`retag@${old.digest}`]);
    expectOciError(await getManifest(r, 'retag', old.digest), 404, 'MANIFEST_UNKNOWN');
    const left = await storedBlobs(env.driver);
    for (const x of blobsOf(old)) assert.ok(!left.has(x));
    await assertPulls(r, 'retag', 'v1');
    assert.equal((await getManifest(r, 'retag', 'v1')).headers['docker-content-digest'], fresh.digest);
  });

  test('blobs used within the grace period are kept', async () => {
    const env = await setup();
    const { r } = env;
    const orphan = await pushBlob(r, 'g', randomBlob(100));
    const summary = await gc(env, { graceMs: 3_600_000 });
    assert.equal(summary.blobs.removed, 0);
    assert.ok((await storedBlobs(env.driver)).has(orphan.digest));
    const later = await gc(env);
    assert.deepEqual(later.removed.blobs, [{ digest: orphan.digest, size: 100 }]);
  });

  test('a dry run lists what would go and deletes nothing', async () => {
    const env = await setup();
    const { r } = env;
    const gone = await pushImage(r, 'dry', 'x');
    await pushImage(r, 'dry', 'x'); // untags `gone`
    const before = await storedBlobs(env.driver);
    const summary = await gc(env, { dryRun: true, deleteUntagged: true });
    assert.equal(summary.dryRun, true);
    assert.deepEqual(summary.removed.manifests, [`dry@${gone.digest}`]);
    assert.deepEqual(
      summary.removed.blobs.map((b) => b.digest).sort(),
      [gone.digest, ...blobsOf(gone)].sort(),
    );
    assert.deepEqual(await storedBlobs(env.driver), before);
    await assertPulls(r, 'dry', gone.digest);
    await assert.rejects(env.driver.stat(pathFor({ kind: 'gcLastRun' })), /not found/);
  });

  test('GC purges stale upload sessions and clears its own leftovers', async () => {
    const env = await setup();
    const { r } = env;
    await pushImage(r, 'u', 'v1');
    const stale = await r.post('/v2/u/blobs/uploads/');
    expectStatus(stale, 202);
    const id = String(stale.headers['docker-upload-uuid']);
    await env.driver.putContent(pathFor({ kind: 'uploadStartedAt', name: 'u', id }), '2000-01-01T00:00:00Z');
    const live = await r.post('/v2/u/blobs/uploads/');
    // A tombstone a crashed run left on a live blob, and a touch of a blob long gone.
    const kept = (await getManifest(r, 'u', 'v1')).headers['docker-content-digest'] as string;
    await env.registry.blobs.gc.writeTombstone(d(kept), 'crashed run');
    const ghost = d(sha256('never stored'));
    await env.registry.blobs.gc.touch([ghost]);

    const summary = await gc(env, { uploadPurgeAgeMs: 3_600_000 });
    assert.equal(summary.uploadsPurged, 1);
    expectOciError(await r.get(`/v2/u/blobs/uploads/${id}`), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectStatus(await r.get(`/v2/u/blobs/uploads/${String(live.headers['docker-upload-uuid'])}`), 204);
    assert.equal(await env.registry.blobs.gc.isTombstoned(d(kept)), false);
    assert.equal(await env.registry.blobs.gc.touchTime(ghost), undefined);
    await assertPulls(r, 'u', 'v1');
  });

  test('links left dangling by a lost blob are removed', async () => {
    const env = await setup();
    const { r } = env;
    const blob = await pushBlob(r, 'dangle', randomBlob(64));
    await env.driver.delete(pathFor({ kind: 'blobDir', digest: d(blob.digest) }));
    const summary = await gc(env);
    assert.equal(summary.linksRemoved, 1);
    assert.equal(summary.blobs.removed, 0);
    await assert.rejects(
      env.driver.stat(pathFor({ kind: 'layerLink', name: 'dangle', digest: d(blob.digest) })),
    );
  });

  test('a live manifest that is not JSON stops the run before anything is deleted', async () => {
    const env = await setup();
    const { r } = env;
    const orphan = await pushBlob(r, 'bad', randomBlob(10));
    const junk = Buffer.from('not json');
    const digest = d(sha256(junk));
    await env.driver.putContent(pathFor({ kind: 'blobData', digest }), junk);
    await env.driver.putContent(
      pathFor({ kind: 'manifestRevisionLink', name: 'bad', digest }),
      digest.toString(),
    );
    await assert.rejects(gc(env), /not a JSON object/);
    assert.ok((await storedBlobs(env.driver)).has(orphan.digest));
  });
});

describe('gc: requests around a sweep', () => {
  test('a tombstoned blob answers 404 and a manifest PUT referencing it fails MANIFEST_BLOB_UNKNOWN', async () => {
    const env = await setup();
    const { r } = env;
    const previous = await pushImage(r, 'tomb', 'v1');
    const m = await (async () => {
      const config = await pushBlob(r, 'tomb', configBlob(), MT.ociConfig);
      const layer = await pushBlob(r, 'tomb', randomBlob(256), MT.ociLayer);
      return ociManifest({ config, layers: [layer] });
    })();
    const layer = d(blobsOf(m)[1] ?? '');
    env.registry.blobs.gc.tombstoneWaitMs = 200;
    await env.registry.blobs.gc.writeTombstone(layer, 'test');

    expectStatus(await r.head(`/v2/tomb/blobs/${layer.toString()}`), 404);
    expectOciError(await r.get(`/v2/tomb/blobs/${layer.toString()}`), 404, 'BLOB_UNKNOWN');
    expectOciError(await putManifest(r, 'tomb', 'v1', m), 400, 'MANIFEST_BLOB_UNKNOWN');
    // Nothing of the failed PUT stays: the tag still names the previous image.
    expectOciError(await getManifest(r, 'tomb', m.digest), 404, 'MANIFEST_UNKNOWN');
    assert.equal((await getManifest(r, 'tomb', 'v1')).headers['docker-content-digest'], previous.digest);

    await env.registry.blobs.gc.removeTombstone(layer);
    expectStatus(await r.head(`/v2/tomb/blobs/${layer.toString()}`), 200);
    await pushManifest(r, 'tomb', 'v1', m);
    await assertPulls(r, 'tomb', 'v1');
  });

  test('a manifest PUT that meets a tombstone waits, and succeeds when the sweep keeps the blob', async () => {
    const hook: { tombstoneOn?: Digest; records?: Env['registry']['blobs']['gc'] } = {};
    const driver = await hookedDriver(async (path) => {
      const { tombstoneOn: digest, records } = hook;
      if (!digest || !records || parsePath(path)?.kind !== 'manifestRevisionLink') return;
      hook.tombstoneOn = undefined;
      // A sweep tombstones the config after the PUT checked it, then decides to keep it.
      await records.writeTombstone(digest, 'sweep');
      setTimeout(() => void records.removeTombstone(digest), 300);
    });
    const env = await setup(driver);
    hook.records = env.registry.blobs.gc;
    const { r } = env;
    const m = await pushImage(r, 'wait');
    hook.tombstoneOn = d(blobsOf(m)[0] ?? '');
    const started = Date.now();
    await pushManifest(r, 'wait', 'v2', m);
    assert.ok(Date.now() - started >= 250, 'the PUT waited for the sweep');
    await assertPulls(r, 'wait', 'v2');
  });

  test('a blob deleted between the check and the write makes the PUT roll back (check after write)', async () => {
    const hook: { sweepLayer?: Digest } = {};
    const driver = await hookedDriver(async (path) => {
      const layer = hook.sweepLayer;
      if (!layer || parsePath(path)?.kind !== 'manifestRevisionLink') return;
      hook.sweepLayer = undefined;
      // A whole sweep of the layer: tombstone, delete, tombstone removed.
      await inner.putContent(pathFor({ kind: 'gcTombstone', digest: layer }), 'sweep');
      await inner.delete(pathFor({ kind: 'blobDir', digest: layer }));
      await inner.delete(pathFor({ kind: 'gcTombstone', digest: layer }));
    });
    const inner = Object.getPrototypeOf(driver) as StorageDriver;
    const env = await setup(driver);
    const { r } = env;
    const before = await pushImage(r, 'race', 'v1');
    const next = await (async () => {
      const config = await pushBlob(r, 'race', configBlob(), MT.ociConfig);
      const layer = await pushBlob(r, 'race', randomBlob(256), MT.ociLayer);
      return ociManifest({ config, layers: [layer] });
    })();
    hook.sweepLayer = d(blobsOf(next)[1] ?? '');
    expectOciError(await putManifest(r, 'race', 'v1', next), 400, 'MANIFEST_BLOB_UNKNOWN');
    expectOciError(await getManifest(r, 'race', next.digest), 404, 'MANIFEST_UNKNOWN');
    assert.equal((await getManifest(r, 'race', 'v1')).headers['docker-content-digest'], before.digest);
    await assertPulls(r, 'race', 'v1');
  });

  test('a blob used while the sweep decides on it is kept, and the HEAD waits for that', async () => {
    const hook: { onTombstone?: (digest: Digest) => Promise<void> } = {};
    const driver = await hookedDriver(async (path) => {
      const parsed = parsePath(path);
      if (parsed?.kind === 'gcTombstone' && hook.onTombstone) await hook.onTombstone(parsed.digest);
    });
    const env = await setup(driver);
    const { r } = env;
    const records = env.registry.blobs.gc;
    const blob = await pushBlob(r, 'race', randomBlob(128));
    // Let the upload's own touch leave the skip window, so the HEAD below writes a new one.
    await new Promise((resolve) => setTimeout(resolve, TOUCH_SKIP_MS + 100));
    const uploadTouch = (await records.touchTime(d(blob.digest)))?.getTime() ?? 0;
    let head: Promise<number> | undefined;
    hook.onTombstone = async (digest) => {
      if (digest.toString() !== blob.digest) return;
      // A client HEADs the blob the moment GC tombstones it; GC goes on once the HEAD's touch is in.
      head = Promise.resolve(r.head(`/v2/race/blobs/${blob.digest}`)).then((res) => res.status);
      while (((await records.touchTime(digest))?.getTime() ?? 0) <= uploadTouch) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    const summary = await collectGarbage(driver, { graceMs: 0, clockSlackMs: 0, records });
    assert.equal(summary.blobs.spared, 1);
    assert.equal(summary.blobs.removed, 0);
    assert.ok((await storedBlobs(env.driver)).has(blob.digest));
    assert.equal(await head, 200, 'the racing HEAD waited for the sweep and saw the blob kept');
  });

  test('a HEAD that meets a sweep deleting the blob answers 404', async () => {
    const env = await setup();
    const { r } = env;
    const records = env.registry.blobs.gc;
    const blob = await pushBlob(r, 'gone', randomBlob(64));
    const digest = d(blob.digest);
    await records.writeTombstone(digest, 'sweep');
    setTimeout(() => {
      void (async () => {
        await env.driver.delete(pathFor({ kind: 'blobDir', digest }));
        await records.removeTombstone(digest);
      })();
    }, 100);
    expectStatus(await r.head(`/v2/gone/blobs/${blob.digest}`), 404);
  });

  test('a run refuses to start while another holds the lease', async () => {
    const env = await setup();
    await pushBlob(env.r, 'lease', randomBlob(10));
    const other = new Lease(env.driver, 'other-replica');
    await other.acquire();
    await assert.rejects(gc(env), LeaseHeldError);
    assert.equal((await storedBlobs(env.driver)).size, 1, 'nothing deleted');
    await other.release();
    assert.equal((await gc(env)).blobs.removed, 1);
  });
});

describe('du', () => {
  test('reports logical and stored bytes per repository and in total', async () => {
    const env = await setup();
    const { r } = env;
    const shared = await pushBlob(r, 'x', randomBlob(1000), MT.ociLayer);
    const cfg = async (name: string) => pushBlob(r, name, configBlob(), MT.ociConfig);
    const m1 = ociManifest({ config: await cfg('x'), layers: [shared] });
    const m2 = ociManifest({ config: await cfg('x'), layers: [shared] });
    await pushManifest(r, 'x', 'a', m1);
    await pushManifest(r, 'x', 'b', m2);
    expectStatus(await r.post(`/v2/y/blobs/uploads/?mount=${shared.digest}&from=x`), 201);
    const m3 = ociManifest({ config: await cfg('y'), layers: [shared] });
    await pushManifest(r, 'y', 'a', m3);
    const orphan = await pushBlob(r, 'y', randomBlob(50));

    const usage = await diskUsage(env.driver);
    const configSize = (m: Manifest) =>
      (JSON.parse(m.bytes.toString('utf8')) as { config: Descriptor }).config.size;
    const x = usage.repositories.find((u) => u.name === 'x');
    const y = usage.repositories.find((u) => u.name === 'y');
    assert.ok(x && y);
    const imageBytes = (m: Manifest) => m.bytes.length + configSize(m) + 1000;
    assert.equal(x.logicalBytes, imageBytes(m1) + imageBytes(m2));
    assert.equal(x.storedBytes, imageBytes(m1) + imageBytes(m2) - 1000);
    assert.equal(y.logicalBytes, imageBytes(m3));
    assert.equal(usage.total.logicalBytes, x.logicalBytes + y.logicalBytes);
    assert.equal(
      usage.total.storedBytes,
      imageBytes(m1) + imageBytes(m2) + imageBytes(m3) - 2000 + orphan.size,
    );
    assert.equal(usage.total.unreferencedBytes, orphan.size);
    assert.ok(usage.total.ratio > 1);
  });
});
