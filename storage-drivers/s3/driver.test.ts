import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  DeleteObjectCommand,
} from '@aws-sdk/client-s3';
import { parseConfig } from '../../config/load.js';
import { createTestBucket, s3TestSettingsOrReport, type TestBucket } from '../../test/s3/env.js';
import { PathNotFoundError, StorageDriverError, type StorageDriver } from '../driver.js';
import { runDriverContractSuite } from '../testsuite/suite.js';
import { endWriter, randomBytes, readAll, sha256, writeChunks } from '../testsuite/helpers.js';
import { createS3Driver, parseS3Parameters, type S3DriverOptions } from './driver.js';
import { timeoutsOf } from './config.js';
import { createDriver, type StorageConfig } from '../index.js';

const MiB = 1 << 20;
const settings = s3TestSettingsOrReport('s3 driver on a real S3 server');

if (settings) {
  runDriverContractSuite('s3', async () => {
    const bucket = await createTestBucket(settings, 'contract');
    return {
      // A root directory, as deployments use one; the suite works below its own prefix inside it.
      driver: createS3Driver({ ...bucket.params, rootdirectory: '/registry-root' }),
      teardown: async () => {
        try {
          assert.deepEqual(
            await bucket.leftovers(),
            { objects: [], uploads: [] },
            'nothing is left in the bucket',
          );
        } finally {
          await bucket.destroy();
        }
      },
    };
  });

  void describe('s3 driver', () => {
    const ROOT = 'root/dir';
    let bucket: TestBucket;
    /** A driver on the test bucket: parts of 5 MiB, keys under `root/dir/`. */
    const driver = (options: S3DriverOptions = {}, params: object = {}): StorageDriver =>
      createS3Driver(
        { ...bucket.params, rootdirectory: `/${ROOT}/`, chunksize: 5 * MiB, ...params },
        options,
      );
    const uploadsOf = async (path: string): Promise<{ uploadId: string; parts: number[] }[]> => {
      const key = ROOT + path;
      const out = await bucket.client.send(
        new ListMultipartUploadsCommand({ Bucket: bucket.name, Prefix: key }),
      );
      const uploads = (out.Uploads ?? []).filter((u) => u.Key === key);
      return Promise.all(
        uploads.map(async (u) => {
          const parts = await bucket.client.send(
            new ListPartsCommand({ Bucket: bucket.name, Key: key, UploadId: u.UploadId }),
          );
          return { uploadId: u.UploadId ?? '', parts: (parts.Parts ?? []).map((p) => p.Size ?? 0) };
        }),
      );
    };

    before(async () => {
      bucket = await createTestBucket(settings, 'driver');
    });
    after(async () => {
      try {
        assert.deepEqual(
          await bucket.leftovers(),
          { objects: [], uploads: [] },
          'nothing is left in the bucket',
        );
      } finally {
        await bucket.destroy();
      }
    });

    void test('keys are rootdirectory + path, without a leading slash', async () => {
      const d = driver();
      await d.putContent('/a/b', 'x');
      const out = await bucket.client.send(new GetObjectCommand({ Bucket: bucket.name, Key: `${ROOT}/a/b` }));
      assert.equal(await out.Body?.transformToString(), 'x');
      assert.deepEqual(await d.list('/'), ['/a']);
      await d.delete('/a');
      assert.deepEqual(await d.list('/'), []);
    });

    void test('stat and delete look past many `name-…` siblings', async () => {
      const d = driver();
      const siblings = Array.from({ length: 12 }, (_, i) => `/sib/a-${i}`);
      await Promise.all([...siblings, '/sib/a.x', '/sib/a/in', '/sib/a0'].map((p) => d.putContent(p, p)));
      assert.equal((await d.stat('/sib/a')).isDir, true);
      await d.delete('/sib/a');
      await assert.rejects(d.stat('/sib/a'), PathNotFoundError);
      assert.equal((await d.list('/sib')).length, siblings.length + 2);
      await d.delete('/sib');
    });

    void test('end() leaves a multipart upload in progress, and another process resumes it', async () => {
      const path = '/uploads/resume/data';
      const data = randomBytes(20 * MiB + 300);
      const first = await driver().writer(path, false);
      await writeChunks(first, [data.subarray(0, 12 * MiB + 100)]);
      await endWriter(first);
      // Two full parts and the tail as a small third part; nothing visible as an object yet.
      assert.deepEqual(
        (await uploadsOf(path)).map((u) => u.parts),
        [[5 * MiB, 5 * MiB, 2 * MiB + 100]],
      );
      const fresh = driver();
      await assert.rejects(fresh.getContent(path), PathNotFoundError);
      assert.equal((await fresh.stat(path)).size, 12 * MiB + 100);

      // New bytes after a small last part: the upload is completed and continued by UploadPartCopy.
      const second = await fresh.writer(path, true);
      assert.equal(second.size, 12 * MiB + 100);
      await writeChunks(second, [data.subarray(12 * MiB + 100, 15 * MiB)]);
      await endWriter(second);
      assert.equal((await driver().stat(path)).size, 15 * MiB);

      const third = await driver().writer(path, true);
      assert.equal(third.size, 15 * MiB);
      await writeChunks(third, [data.subarray(15 * MiB)]);
      await third.commit();
      assert.equal(third.size, data.length);
      const d = driver();
      assert.equal(sha256(await readAll(await d.reader(path))), sha256(data));
      assert.deepEqual(await uploadsOf(path), [], 'no upload is left in progress');
      await d.delete('/uploads');
    });

    void test('appends after an end() on a part boundary without copying', async () => {
      const path = '/uploads/boundary/data';
      const data = randomBytes(11 * MiB);
      const first = await driver().writer(path, false);
      await writeChunks(first, [data.subarray(0, 10 * MiB)]);
      await endWriter(first);
      assert.deepEqual(
        (await uploadsOf(path)).map((u) => u.parts),
        [[5 * MiB, 5 * MiB]],
      );
      const second = await driver().writer(path, true);
      await writeChunks(second, [data.subarray(10 * MiB)]);
      await second.commit();
      const d = driver();
      assert.ok((await d.getContent(path)).equals(data));
      await d.delete('/uploads');
    });

    void test('commit() of a resumed upload with nothing new completes it as it is', async () => {
      const path = '/uploads/nothing-new/data';
      const data = randomBytes(7 * MiB);
      const first = await driver().writer(path, false);
      await writeChunks(first, [data]);
      await endWriter(first);
      const second = await driver().writer(path, true);
      await second.commit();
      const d = driver();
      assert.ok((await d.getContent(path)).equals(data));
      await d.delete('/uploads');
    });

    void test('a writer without append aborts the upload an earlier writer left', async () => {
      const path = '/uploads/restart/data';
      const first = await driver().writer(path, false);
      await writeChunks(first, [randomBytes(6 * MiB)]);
      await endWriter(first);
      assert.equal((await uploadsOf(path)).length, 1);
      const second = await driver().writer(path, false);
      assert.deepEqual(await uploadsOf(path), []);
      await writeChunks(second, [Buffer.from('fresh')]);
      await second.commit();
      const d = driver();
      assert.equal((await d.getContent(path)).toString(), 'fresh');
      await d.delete('/uploads');
    });

    void test('cancel() and delete() abort unfinished uploads', async () => {
      const d = driver();
      const w1 = await d.writer('/uploads/c/data', false);
      await writeChunks(w1, [randomBytes(6 * MiB)]);
      await endWriter(w1);
      const w2 = await d.writer('/uploads/c/data', true);
      await writeChunks(w2, [randomBytes(MiB)]);
      await w2.cancel();
      assert.deepEqual(await uploadsOf('/uploads/c/data'), []);
      await assert.rejects(d.stat('/uploads/c/data'), PathNotFoundError);

      const w3 = await d.writer('/uploads/d/data', false);
      await writeChunks(w3, [randomBytes(6 * MiB)]);
      await endWriter(w3);
      // The only trace of this file is the upload; deleting its directory aborts it.
      await d.delete('/uploads/d');
      assert.deepEqual(await uploadsOf('/uploads/d/data'), []);
      await assert.rejects(d.stat('/uploads/d/data'), PathNotFoundError);
    });

    /** Raw keys under `ROOT + prefix`, markers included. */
    const keysUnder = async (prefix: string): Promise<string[]> => {
      const out = await bucket.client.send(
        new ListObjectsV2Command({ Bucket: bucket.name, Prefix: ROOT + prefix }),
      );
      return (out.Contents ?? []).map((o) => (o.Key ?? '').slice(ROOT.length));
    };

    void test('a missing path costs stat one listing; an upload is found through its marker', async () => {
      const proxy = await faultProxy(settings.endpoint, () => 'forward');
      try {
        const d = createS3Driver({
          ...bucket.params,
          regionendpoint: proxy.url,
          rootdirectory: ROOT,
          chunksize: 5 * MiB,
        });
        await assert.rejects(d.stat('/marker/nothing'), PathNotFoundError);
        assert.deepEqual(proxy.requests(), ['GET list'], 'one ListObjectsV2, no ListMultipartUploads');

        const w = await d.writer('/marker/up/data', false);
        await writeChunks(w, [randomBytes(6 * MiB)]);
        await endWriter(w);
        assert.deepEqual(await keysUnder('/marker/'), ['/marker/up/data!multipart']);
        proxy.reset();
        assert.equal((await d.stat('/marker/up/data')).size, 6 * MiB);
        assert.deepEqual(proxy.requests(), ['GET list', 'GET uploads', 'GET parts']);
        // No path names the marker: list and walk do not show it.
        await d.putContent('/marker/up/startedat', 'now');
        assert.deepEqual(await d.list('/marker/up'), ['/marker/up/startedat']);
        const walked: string[] = [];
        await d.walk('/marker', { onEntry: (e) => void walked.push(e.path) });
        assert.deepEqual(walked, ['/marker/up', '/marker/up/startedat']);
        // Deleting the directory aborts the upload and removes the marker.
        await d.delete('/marker/up');
        assert.deepEqual(await uploadsOf('/marker/up/data'), []);
        assert.deepEqual(await keysUnder('/marker/'), []);
      } finally {
        await proxy.close();
      }
    });

    void test('move of a file a writer just committed skips the listing and takes the marker along', async () => {
      const proxy = await faultProxy(settings.endpoint, () => 'forward');
      try {
        const d = createS3Driver({
          ...bucket.params,
          regionendpoint: proxy.url,
          rootdirectory: ROOT,
          chunksize: 5 * MiB,
        });
        const data = randomBytes(6 * MiB + 1);
        const w = await d.writer('/mv/upload/data', false);
        await writeChunks(w, [data]);
        await w.commit();
        proxy.reset();
        await d.move('/mv/upload/data', '/mv/blob/data');
        assert.deepEqual(proxy.requests(), ['PUT copy', 'POST delete'], 'CopyObject, DeleteObjects');
        assert.deepEqual(await keysUnder('/mv/'), ['/mv/blob/data']);
        assert.equal(sha256(await d.getContent('/mv/blob/data')), sha256(data));
        // Remembered, then gone: the copy finds out.
        const again = await d.writer('/mv/upload/data', false);
        await writeChunks(again, [Buffer.from('x')]);
        await again.commit();
        await bucket.client.send(
          new DeleteObjectCommand({ Bucket: bucket.name, Key: `${ROOT}/mv/upload/data` }),
        );
        await assert.rejects(d.move('/mv/upload/data', '/mv/other'), PathNotFoundError);
        await d.delete('/mv');
        assert.deepEqual(await keysUnder('/mv/'), []);
      } finally {
        await proxy.close();
      }
    });

    void test('appends to a committed object, small and large', async () => {
      const d = driver();
      for (const size of [1000, 6 * MiB]) {
        const path = `/committed/${size}`;
        const head = randomBytes(size);
        const tail = randomBytes(3 * MiB);
        await d.putContent(path, head);
        const w = await d.writer(path, true);
        assert.equal(w.size, size);
        await writeChunks(w, [tail]);
        await w.commit();
        assert.ok((await d.getContent(path)).equals(Buffer.concat([head, tail])), `size ${size}`);
      }
      await d.delete('/committed');
    });

    void test('moves a large object with a multipart copy', async () => {
      const d = driver({ tuning: { copyThreshold: 6 * MiB, copyPieceSize: 10 * MiB } });
      const data = randomBytes(23 * MiB + 7);
      await d.putContent('/move/src', data);
      await d.move('/move/src', '/move/dst/data');
      assert.equal(sha256(await d.getContent('/move/dst/data')), sha256(data));
      await assert.rejects(d.stat('/move/src'), PathNotFoundError);
      await d.delete('/move');
    });

    void test('lists, walks and deletes more than one page (1,000 keys)', async () => {
      const d = driver();
      const names = Array.from({ length: 1003 }, (_, i) => `f${String(i).padStart(4, '0')}`);
      for (let i = 0; i < names.length; i += 50) {
        await Promise.all(names.slice(i, i + 50).map((n) => d.putContent(`/many/dir/${n}`, n)));
      }
      assert.deepEqual(
        await d.list('/many/dir'),
        names.map((n) => `/many/dir/${n}`),
      );
      let files = 0;
      await d.walk('/many', {
        onEntry: (e) => {
          if (!e.isDir) files++;
        },
      });
      assert.equal(files, names.length);
      await d.delete('/many');
      await assert.rejects(d.list('/many'), PathNotFoundError);
    });

    void test('redirectURL: undefined by default, a presigned URL when turned on', async () => {
      const plain = driver();
      await plain.putContent('/redirect/blob', 'redirected');
      assert.equal(await plain.redirectURL('/redirect/blob', 'GET'), undefined);

      const d = driver({ redirect: true });
      const get = await d.redirectURL('/redirect/blob', 'GET');
      assert.ok(get !== undefined);
      const url = new URL(get);
      assert.equal(url.searchParams.get('X-Amz-Expires'), '1200');
      const res = await fetch(get);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'redirected');
      const head = await d.redirectURL('/redirect/blob', 'HEAD');
      assert.ok(head !== undefined);
      const headRes = await fetch(head, { method: 'HEAD' });
      assert.equal(headRes.status, 200);
      assert.equal(headRes.headers.get('content-length'), '10');
      await d.delete('/redirect');
    });

    void test('small reads go out directly: getContent one GET, statFile one HEAD, SlowDown retried', async () => {
      await driver().putContent('/direct/link', 'sha256:abc');
      let slowdowns = 0;
      const proxy = await faultProxy(settings.endpoint, () => (slowdowns-- > 0 ? 'slowdown' : 'forward'));
      try {
        const d = createS3Driver({ ...bucket.params, regionendpoint: proxy.url, rootdirectory: `/${ROOT}/` });
        assert.equal((await d.getContent('/direct/link')).toString(), 'sha256:abc');
        assert.equal((await d.statFile('/direct/link'))?.size, 'sha256:abc'.length);
        assert.deepEqual(proxy.requests(), ['GET object', 'HEAD object']);
        proxy.reset();
        assert.equal(await d.statFile('/direct/missing'), undefined);
        assert.equal(await d.statFile('/direct'), undefined, 'a directory');
        assert.deepEqual(proxy.requests(), ['HEAD object', 'HEAD object'], 'a HEAD each');
        await assert.rejects(d.getContent('/direct/missing'), PathNotFoundError);
        slowdowns = 2;
        proxy.reset();
        assert.equal((await d.getContent('/direct/link')).toString(), 'sha256:abc');
        assert.deepEqual(
          proxy.requests(),
          ['GET object', 'GET object', 'GET object'],
          'two SlowDowns retried',
        );
        // Keys that need encoding (from the root directory, ':' in paths) are signed as sent.
        const odd = createS3Driver({
          ...bucket.params,
          regionendpoint: proxy.url,
          rootdirectory: `/${ROOT}/direct/odd dir+x!'(y)*`,
        });
        await odd.putContent('/sha256:abc', 'odd');
        assert.equal((await odd.getContent('/sha256:abc')).toString(), 'odd');
        assert.equal((await odd.statFile('/sha256:abc'))?.size, 3);
      } finally {
        await proxy.close();
        await driver().delete('/direct');
      }
    });

    void test('through the SDK too, statFile is one HEAD, and sees objects only', async () => {
      const d = driver({ tuning: { directRequests: false } });
      await d.putContent('/sdk-exists/link', 'x');
      assert.equal((await d.statFile('/sdk-exists/link'))?.size, 1);
      assert.equal(await d.statFile('/sdk-exists/missing'), undefined);
      assert.equal(await d.statFile('/sdk-exists'), undefined, 'a directory');
      assert.equal((await d.getContent('/sdk-exists/link')).toString(), 'x');
      await d.delete('/sdk-exists');
    });

    void test('direct reads with a wrong secret fail with a clean credentials error', async () => {
      await driver().putContent('/direct-auth/link', 'x');
      try {
        const d = createS3Driver({ ...bucket.params, rootdirectory: `/${ROOT}/`, secretkey: 'wrong' });
        for (const read of [() => d.getContent('/direct-auth/link'), () => d.statFile('/direct-auth/link')]) {
          await assert.rejects(read(), (err) => {
            assert.ok(err instanceof StorageDriverError);
            assert.match(err.message, /refused the credentials for bucket/);
            return true;
          });
        }
      } finally {
        await driver().delete('/direct-auth');
      }
    });

    void test('a writer applies backpressure instead of buffering without bound', async () => {
      const w = await driver().writer('/bp/data', false);
      let accepted = 0;
      while (w.write(Buffer.alloc(256 * 1024))) accepted++;
      assert.ok(accepted < 8, `write() said "go on" ${accepted} times`);
      await w.cancel();
    });

    void test('retries 503 SlowDown and a request that times out', async () => {
      const proxy = await faultProxy(settings.endpoint, (n) =>
        n <= 2 ? 'slowdown' : n === 3 ? 'stall' : 'forward',
      );
      try {
        const d = createS3Driver(
          { ...bucket.params, regionendpoint: proxy.url, rootdirectory: ROOT },
          { tuning: { timeouts: { connectMs: 1000, requestMs: 1000, slowMs: 1000, idleMs: 1000 } } },
        );
        await d.putContent('/retried', 'ok');
        assert.equal(proxy.count(), 4, 'two SlowDown answers and one timeout, then success');
        assert.equal((await d.getContent('/retried')).toString(), 'ok');
        await d.delete('/retried');
      } finally {
        await proxy.close();
      }
    });

    void test('blob reads retry SlowDown and a stalled answer, then stream; a cut body fails the stream', async () => {
      const data = randomBytes(3 * MiB + 5);
      await driver().putContent('/raw/blob', data);
      const proxy = await faultProxy(settings.endpoint, (n) =>
        n === 1 ? 'slowdown' : n === 2 ? 'stall' : n === 4 ? 'truncate' : 'forward',
      );
      try {
        const timeouts = { connectMs: 1000, requestMs: 1000, slowMs: 1000, idleMs: 1000 };
        const d = createS3Driver(
          { ...bucket.params, regionendpoint: proxy.url, rootdirectory: ROOT },
          { tuning: { timeouts } },
        );
        assert.equal(sha256(await readAll(await d.reader('/raw/blob'))), sha256(data));
        assert.equal(proxy.count(), 3, 'SlowDown, a timeout, then the answer');
        await assert.rejects(readAll(await d.reader('/raw/blob', { offset: 1 })), /closed the connection/);
        const tail = await readAll(await d.reader('/raw/blob', { offset: 3 * MiB }));
        assert.ok(tail.equals(data.subarray(3 * MiB)));
        await assert.rejects(d.reader('/raw/missing'), PathNotFoundError);
      } finally {
        await proxy.close();
        await driver().delete('/raw');
      }
    });

    void test('blob reads through the SDK (https endpoints) stream whole and ranged', async () => {
      const d = driver({ tuning: { rawReads: false } });
      const data = randomBytes(2 * MiB + 11);
      await d.putContent('/sdk/blob', data);
      assert.equal(sha256(await readAll(await d.reader('/sdk/blob'))), sha256(data));
      const part = await readAll(await d.reader('/sdk/blob', { offset: 5, length: MiB }));
      assert.ok(part.equals(data.subarray(5, 5 + MiB)));
      assert.equal((await readAll(await d.reader('/sdk/blob', { offset: data.length }))).length, 0);
      await assert.rejects(d.reader('/sdk/missing'), PathNotFoundError);
      await d.delete('/sdk');
    });

    void test('storage.s3.maxretries and requesttimeout reach the client', async () => {
      const proxy = await faultProxy(settings.endpoint, () => 'stall');
      try {
        const d = createS3Driver({
          ...bucket.params,
          regionendpoint: proxy.url,
          maxretries: 1,
          requesttimeout: 500,
        });
        await assert.rejects(d.getContent('/x'), (err) => {
          assert.ok(err instanceof StorageDriverError);
          assert.match(err.message, /exceeded the configured 500 ms requestTimeout/);
          return true;
        });
        assert.equal(proxy.count(), 2, 'the first try and one retry');
      } finally {
        await proxy.close();
      }
    });

    void test('gives up after the retries with a clean error', async () => {
      const proxy = await faultProxy(settings.endpoint, () => 'internal');
      try {
        const d = createS3Driver({ ...bucket.params, regionendpoint: proxy.url });
        await assert.rejects(d.putContent('/x', 'x'), (err) => {
          assert.ok(err instanceof StorageDriverError);
          assert.match(err.message, /InternalError, HTTP 500/);
          assert.match(err.message, new RegExp(proxy.url));
          return true;
        });
        assert.equal(proxy.count(), 5, 'maxAttempts is 5');
      } finally {
        await proxy.close();
      }
    });

    const failures: [string, () => StorageDriver, RegExp][] = [
      [
        'a dead endpoint',
        () => createS3Driver({ ...bucket.params, regionendpoint: 'http://127.0.0.1:9' }),
        /s3 endpoint http:\/\/127\.0\.0\.1:9 is unreachable \(ECONNREFUSED\)/,
      ],
      [
        'a missing bucket',
        () => createS3Driver({ ...bucket.params, bucket: `${bucket.name}-missing` }),
        /s3 bucket "wharf-driver-[0-9a-f]+-missing" does not exist at http:\/\/127\.0\.0\.1/,
      ],
      [
        'a wrong secret key',
        () => createS3Driver({ ...bucket.params, secretkey: 'wrong' }),
        /refused the credentials for bucket "wharf-driver-[0-9a-f]+" \(SignatureDoesNotMatch\)/,
      ],
    ];
    for (const [title, make, message] of failures) {
      void test(`names the problem for ${title}`, async () => {
        const d = make();
        for (const op of [() => d.stat('/'), () => d.getContent('/a'), () => d.putContent('/a', 'x')]) {
          await assert.rejects(op(), (err) => {
            assert.ok(err instanceof StorageDriverError, String(err));
            assert.ok(!(err instanceof PathNotFoundError), String(err));
            assert.match(err.message, message);
            return true;
          });
        }
      });
    }
  });
}

void describe('createDriver with s3', () => {
  const s3 = {
    bucket: 'b',
    region: 'us-east-1',
    regionendpoint: 'http://127.0.0.1:9',
    accesskey: 'a',
    secretkey: 's',
  };

  void test('redirects to presigned URLs unless storage.redirect.disable (as Distribution)', async () => {
    const cases: [StorageConfig, S3DriverOptions | undefined, boolean][] = [
      [{ s3 }, undefined, true],
      [{ s3, redirect: { disable: false } }, undefined, true],
      [{ s3, redirect: { disable: true } }, undefined, false],
    ];
    for (const [storage, options, expected] of cases) {
      const url = await createDriver(storage, options).redirectURL('/docker/registry/v2/blobs/data', 'GET');
      assert.equal(url !== undefined, expected, JSON.stringify([storage, options]));
      if (url !== undefined)
        assert.match(url, /^http:\/\/127\.0\.0\.1:9\/b\/docker\/registry\/v2\/blobs\/data\?/);
    }
  });

  void test('connecttimeout, requesttimeout, maxretries: durations in the config, these defaults', () => {
    const params = (s3config: object) =>
      parseS3Parameters(
        parseConfig({ storage: { s3: { bucket: 'b', region: 'r', ...s3config } } }).config.storage.s3,
      );
    const set = params({ connecttimeout: '2s', requesttimeout: '1m30s', maxretries: 2 });
    assert.deepEqual([set.connecttimeout, set.requesttimeout, set.maxretries], [2000, 90_000, 2]);
    assert.deepEqual(
      { ...timeoutsOf(set), idleMs: 0 },
      { connectMs: 2000, requestMs: 90_000, slowMs: 15 * 60_000, idleMs: 0 },
    );
    const defaults = params({});
    assert.deepEqual(
      [defaults.connecttimeout, defaults.requesttimeout, defaults.maxretries],
      [5000, 60_000, 4],
    );
    assert.throws(() => params({ requesttimeout: 'soon' }), /requesttimeout/);
    assert.throws(() => params({ maxretries: -1 }), /maxretries/);
  });

  void test('no credentials at all: says so, and how to give them (not that they were refused)', async () => {
    const names = [
      'AWS_ACCESS_KEY_ID',
      'AWS_SECRET_ACCESS_KEY',
      'AWS_SESSION_TOKEN',
      'AWS_PROFILE',
      'AWS_WEB_IDENTITY_TOKEN_FILE',
      'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI',
      'AWS_CONTAINER_CREDENTIALS_FULL_URI',
      'AWS_SHARED_CREDENTIALS_FILE',
      'AWS_CONFIG_FILE',
      'AWS_EC2_METADATA_DISABLED',
    ];
    const saved = Object.fromEntries(names.map((n) => [n, process.env[n]]));
    for (const n of names) Reflect.deleteProperty(process.env, n);
    // Nothing to find anywhere, and no instance metadata service to ask (it is not on loopback).
    process.env.AWS_SHARED_CREDENTIALS_FILE = '/nonexistent/wharf-test/credentials';
    process.env.AWS_CONFIG_FILE = '/nonexistent/wharf-test/config';
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    try {
      const d = createDriver({ s3: { bucket: 'b', regionendpoint: 'http://127.0.0.1:9' } });
      await assert.rejects(d.stat('/'), (err) => {
        assert.ok(err instanceof StorageDriverError);
        assert.match(err.message, /^no S3 credentials for bucket "b" at http:\/\/127\.0\.0\.1:9 \(stat \/\)/);
        assert.match(err.message, /storage\.s3\.accesskey and secretkey, or the AWS_\* environment/);
        assert.doesNotMatch(err.message, /refused/);
        return true;
      });
    } finally {
      for (const n of names) {
        if (saved[n] === undefined) Reflect.deleteProperty(process.env, n);
        else process.env[n] = saved[n];
      }
    }
  });

  void test('rejects a config it cannot use, naming the key', () => {
    const bad: [object, RegExp][] = [
      [{ region: 'us-east-1' }, /storage\.s3: bucket/],
      [{ bucket: 'b', accesskey: 'a' }, /set both accesskey and secretkey/],
      [{ bucket: 'b', chunksize: 1024 }, /storage\.s3: chunksize/],
      [{ bucket: 'b', regionendpoint: 'not a url' }, /storage\.s3: regionendpoint/],
    ];
    for (const [s3config, message] of bad) assert.throws(() => createDriver({ s3: s3config }), message);
  });
});

/** An HTTP proxy in front of the S3 server that fails, stalls or forwards each request as `plan` says. */
async function faultProxy(
  target: string,
  /** `truncate`: forwards the answer's head and its first 100 KiB, then drops the connection. */
  plan: (n: number) => 'slowdown' | 'internal' | 'stall' | 'truncate' | 'forward',
): Promise<{
  url: string;
  count: () => number;
  /** Each request as `METHOD kind` (list, uploads, parts, copy, delete, object), since `reset`. */
  requests: () => string[];
  reset: () => void;
  close: () => Promise<void>;
}> {
  const upstream = new URL(target);
  let n = 0;
  let seen: string[] = [];
  const stalled: IncomingMessage[] = [];
  const server: Server = createServer((req, res) => {
    const action = plan(++n);
    seen.push(`${req.method ?? ''} ${requestKind(req)}`);
    if (action === 'stall') {
      stalled.push(req);
      req.resume();
      return;
    }
    if (action === 'slowdown' || action === 'internal') {
      const [status, code] = action === 'slowdown' ? [503, 'SlowDown'] : [500, 'InternalError'];
      req.resume();
      req.on('end', () => {
        res.writeHead(status, { 'content-type': 'application/xml' });
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected</Message></Error>`,
        );
      });
      return;
    }
    // The Host header stays the proxy's: it is what the client signed.
    const up = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        if (action !== 'truncate') {
          upRes.pipe(res);
          return;
        }
        let sent = 0;
        upRes.on('data', (chunk: Buffer) => {
          if (sent >= 100 * 1024) return;
          sent += chunk.length;
          res.write(chunk);
          if (sent >= 100 * 1024) setTimeout(() => res.socket?.destroy(), 50);
        });
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    count: () => n,
    requests: () => [...seen],
    reset: () => {
      seen = [];
    },
    close: async () => {
      for (const req of stalled) req.socket.destroy();
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Roughly which S3 operation a path-style request is, enough to tell listings and copies apart. */
function requestKind(req: IncomingMessage): string {
  const url = new URL(req.url ?? '/', 'http://s3');
  const q = url.searchParams;
  if (q.has('list-type')) return 'list';
  if (q.has('uploads')) return 'uploads';
  if (q.has('delete')) return 'delete';
  if (q.has('uploadId') && req.method === 'GET') return 'parts';
  if (req.headers['x-amz-copy-source'] !== undefined) return 'copy';
  return 'object';
}
