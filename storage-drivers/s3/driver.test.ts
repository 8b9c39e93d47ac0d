import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { GetObjectCommand, ListMultipartUploadsCommand, ListPartsCommand } from '@aws-sdk/client-s3';
import { createTestBucket, s3TestSettingsOrReport, type TestBucket } from '../../test/s3/env.js';
import { PathNotFoundError, StorageDriverError, type StorageDriver } from '../driver.js';
import { runDriverContractSuite } from '../testsuite/suite.js';
import { endWriter, randomBytes, readAll, sha256, writeChunks } from '../testsuite/helpers.js';
import { createS3Driver, type S3DriverOptions } from './driver.js';
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
  plan: (n: number) => 'slowdown' | 'internal' | 'stall' | 'forward',
): Promise<{ url: string; count: () => number; close: () => Promise<void> }> {
  const upstream = new URL(target);
  let n = 0;
  const stalled: IncomingMessage[] = [];
  const server: Server = createServer((req, res) => {
    const action = plan(++n);
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
        upRes.pipe(res);
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
    close: async () => {
      for (const req of stalled) req.socket.destroy();
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
