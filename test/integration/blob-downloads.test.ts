// Blob downloads from the filesystem reuse their read buffers once the response has written them out
// (src/http/response-buffers.ts). A buffer reused too early would send another part of the file, so
// these read every byte back under backpressure, concurrently, with ranges and with aborted downloads.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import supertest from 'supertest';
import { createFilesystemDriver } from '../../storage-drivers/filesystem/driver.js';
import { createTestApp, type TestApp } from '../helpers/app.js';
import { pushBlob, randomBlob, sha256 } from '../helpers/oci.js';

const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Download {
  readonly status: number;
  readonly digest: string;
  readonly bytes: number;
}

/**
 * GETs `path`, reading slowly: after every `pauseEvery` bytes the response is paused for `pauseMs`,
 * so the server's socket fills up and its writes complete late. `abortAfter` destroys it midway.
 */
function download(
  base: string,
  path: string,
  opts: { range?: string; pauseEvery?: number; pauseMs?: number; abortAfter?: number } = {},
): Promise<Download> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}${path}`,
      { headers: opts.range ? { range: opts.range } : {} },
      (res: IncomingMessage) => {
        const hash = createHash('sha256');
        let bytes = 0;
        let sincePause = 0;
        res.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          bytes += chunk.length;
          sincePause += chunk.length;
          if (opts.abortAfter !== undefined && bytes >= opts.abortAfter) {
            req.destroy();
            resolve({ status: res.statusCode ?? 0, digest: '', bytes });
            return;
          }
          if (opts.pauseEvery !== undefined && sincePause >= opts.pauseEvery) {
            sincePause = 0;
            res.pause();
            setTimeout(() => res.resume(), opts.pauseMs ?? 5);
          }
        });
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, digest: `sha256:${hash.digest('hex')}`, bytes });
        });
        res.on('error', reject);
      },
    );
    req.on('error', (err) => {
      if (opts.abortAfter === undefined) reject(err);
    });
    req.end();
  });
}

void describe('blob downloads from the filesystem: reused read buffers', () => {
  let root: string;
  let t: TestApp;
  let base: string;
  const blobs: { content: Buffer; digest: string }[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'wharf-downloads-'));
    t = await createTestApp({ driver: createFilesystemDriver({ rootdirectory: root }) });
    await new Promise<void>((r) => t.server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(t.server.address() as AddressInfo).port}`;
    const r = supertest(t.server);
    // Sizes that are not multiples of the 2 MiB read buffer, so the last read of each is short.
    for (const size of [9 * MiB + 17, 13 * MiB + 5, 6 * MiB - 3]) {
      const content = randomBlob(size);
      await pushBlob(r, 'dl/app', content);
      blobs.push({ content, digest: sha256(content) });
    }
  });

  after(async () => {
    await new Promise<void>((r) =>
      t.server.close(() => {
        r();
      }),
    );
    await rm(root, { recursive: true, force: true });
  });

  void test('concurrent slow downloads each get exactly their blob', async () => {
    const runs = blobs.flatMap((b, i) =>
      [0, 1].map(async (k) => {
        const got = await download(base, `/v2/dl/app/blobs/${b.digest}`, {
          pauseEvery: (256 + 128 * i) * 1024,
          pauseMs: 2 + k * 3,
        });
        assert.equal(got.status, 200);
        assert.equal(got.bytes, b.content.length);
        assert.equal(got.digest, b.digest, `blob ${i}, reader ${k}`);
      }),
    );
    await Promise.all(runs);
  });

  void test('downloads after aborted ones are intact (an abort gives no buffer back early)', async () => {
    for (let round = 0; round < 3; round++) {
      const [b0, b1] = blobs;
      assert.ok(b0 && b1);
      const aborted = [1, 2, 3].map((n) =>
        download(base, `/v2/dl/app/blobs/${b0.digest}`, { abortAfter: n * 3 * MiB, pauseEvery: MiB }),
      );
      const whole = download(base, `/v2/dl/app/blobs/${b1.digest}`, { pauseEvery: 512 * 1024 });
      const results = await Promise.all([...aborted, whole]);
      const last = results.at(-1);
      assert.equal(last?.digest, b1.digest);
      await sleep(20);
    }
  });

  void test('ranges across buffer boundaries match the blob', async () => {
    const b = blobs[1];
    assert.ok(b);
    for (const [from, to] of [
      [0, 0],
      [2 * MiB - 1, 2 * MiB],
      [3 * MiB + 7, 9 * MiB + 11],
      [b.content.length - 5, b.content.length - 1],
    ] as const) {
      const got = await download(base, `/v2/dl/app/blobs/${b.digest}`, {
        range: `bytes=${from}-${to}`,
        pauseEvery: 300 * 1024,
      });
      assert.equal(got.status, 206);
      assert.equal(got.digest, sha256(b.content.subarray(from, to + 1)), `bytes ${from}-${to}`);
    }
  });
});
