import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MT,
  bodyBytes,
  expectOciError,
  expectStatus,
  header,
  mediaTypeOf,
  newRegistry,
  pushBlob,
  randomBlob,
  raw,
  sha256,
} from '../helpers/oci.js';

const UNKNOWN = sha256('never pushed');

void describe('blob GET and HEAD', () => {
  void test('GET returns the bytes with Docker-Content-Digest, Content-Length and application/octet-stream', async () => {
    const r = await newRegistry();
    const blob = randomBlob(3000);
    const { digest } = await pushBlob(r, 'repo', blob);
    const res = await raw(r.get(`/v2/repo/blobs/${digest}`));
    expectStatus(res, 200);
    assert.deepEqual(bodyBytes(res), blob);
    assert.equal(header(res, 'docker-content-digest'), digest);
    assert.equal(header(res, 'content-length'), '3000');
    assert.equal(mediaTypeOf(header(res, 'content-type')), MT.octet);
    // Optional (RFC 9110 MAY); when sent it must advertise byte ranges, which are supported.
    const acceptRanges = header(res, 'accept-ranges');
    if (acceptRanges !== undefined) assert.equal(acceptRanges, 'bytes');
  });

  void test('HEAD returns the same headers and no body', async () => {
    const r = await newRegistry();
    const { digest } = await pushBlob(r, 'repo', randomBlob(777));
    const res = await raw(r.head(`/v2/repo/blobs/${digest}`));
    expectStatus(res, 200);
    assert.equal(header(res, 'docker-content-digest'), digest);
    assert.equal(header(res, 'content-length'), '777');
    assert.equal(bodyBytes(res).length, 0);
  });

  void test('an empty blob is a blob like any other', async () => {
    const r = await newRegistry();
    const { digest } = await pushBlob(r, 'repo', Buffer.alloc(0));
    const res = await raw(r.get(`/v2/repo/blobs/${digest}`));
    expectStatus(res, 200);
    assert.equal(header(res, 'content-length'), '0');
    assert.equal(bodyBytes(res).length, 0);
  });

  void test('unknown blob: GET 404 BLOB_UNKNOWN, HEAD 404', async () => {
    const r = await newRegistry();
    await pushBlob(r, 'repo', randomBlob()); // the repository exists; the blob does not
    expectOciError(await r.get(`/v2/repo/blobs/${UNKNOWN}`), 404, 'BLOB_UNKNOWN');
    expectStatus(await r.head(`/v2/repo/blobs/${UNKNOWN}`), 404);
  });

  void test('unknown repository: GET 404 BLOB_UNKNOWN (Distribution) or NAME_UNKNOWN', async () => {
    const r = await newRegistry();
    expectOciError(await r.get(`/v2/nowhere/blobs/${UNKNOWN}`), 404, ['BLOB_UNKNOWN', 'NAME_UNKNOWN']);
  });

  void test('a blob stored for another repository is not readable here', async () => {
    const r = await newRegistry();
    const { digest } = await pushBlob(r, 'owner', randomBlob());
    await pushBlob(r, 'other', randomBlob()); // exists, but has no link to the blob
    expectOciError(await r.get(`/v2/other/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
    expectStatus(await r.head(`/v2/other/blobs/${digest}`), 404);
  });
});

void describe('blob GET with Range (RFC 9110; cases from the OCI conformance suite)', () => {
  const size = 2048;
  const cases: { range: string; start: number; end: number }[] = [
    { range: 'bytes=500-1499', start: 500, end: 1499 },
    { range: 'bytes=0-0', start: 0, end: 0 },
    { range: 'bytes=500-', start: 500, end: size - 1 },
    { range: 'bytes=-500', start: size - 500, end: size - 1 },
    { range: 'bytes=2000-5000', start: 2000, end: size - 1 }, // the end is clamped to the size
  ];
  for (const c of cases) {
    void test(`${c.range} → 206 with the slice and Content-Range`, async () => {
      const r = await newRegistry();
      const blob = randomBlob(size);
      const { digest } = await pushBlob(r, 'repo', blob);
      const res = await raw(r.get(`/v2/repo/blobs/${digest}`).set('Range', c.range));
      expectStatus(res, 206);
      assert.deepEqual(bodyBytes(res), blob.subarray(c.start, c.end + 1));
      assert.equal(header(res, 'content-length'), String(c.end - c.start + 1));
      assert.equal(header(res, 'content-range'), `bytes ${c.start}-${c.end}/${size}`);
    });
  }

  for (const range of ['bytes=5000-10000', 'bytes=2048-', 'bytes=500-0']) {
    void test(`${range} → 416 with Content-Range: bytes */size`, async () => {
      const r = await newRegistry();
      const { digest } = await pushBlob(r, 'repo', randomBlob(size));
      const res = await r.get(`/v2/repo/blobs/${digest}`).set('Range', range);
      expectStatus(res, 416);
      // RFC 9110 §15.5.17: SHOULD send the current length; Distribution (Go's ServeContent) does.
      assert.equal(header(res, 'content-range'), `bytes */${size}`);
    });
  }
});

void describe('blob DELETE', () => {
  void test('202 when delete is enabled; the blob is then gone from this repository only', async () => {
    const r = await newRegistry({ deleteEnabled: true });
    const blob = randomBlob();
    const { digest } = await pushBlob(r, 'repo', blob);
    await pushBlob(r, 'other', blob);
    const res = await r.delete(`/v2/repo/blobs/${digest}`);
    expectStatus(res, 202);
    expectStatus(await r.head(`/v2/repo/blobs/${digest}`), 404);
    expectOciError(await r.get(`/v2/repo/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
    // Deleting unlinks it from `repo`; another repository's link still serves the content.
    const other = await raw(r.get(`/v2/other/blobs/${digest}`));
    expectStatus(other, 200);
    assert.deepEqual(bodyBytes(other), blob);
  });

  void test('404 BLOB_UNKNOWN for a blob that is not there', async () => {
    const r = await newRegistry({ deleteEnabled: true });
    await pushBlob(r, 'repo', randomBlob());
    expectOciError(await r.delete(`/v2/repo/blobs/${UNKNOWN}`), 404, 'BLOB_UNKNOWN');
  });

  void test('405 UNSUPPORTED when delete is disabled (spec: 400 or 405; Distribution answers 405), and the blob stays', async () => {
    const r = await newRegistry({ deleteEnabled: false });
    const { digest } = await pushBlob(r, 'repo', randomBlob());
    expectOciError(await r.delete(`/v2/repo/blobs/${digest}`), 405, 'UNSUPPORTED');
    expectStatus(await r.head(`/v2/repo/blobs/${digest}`), 200);
  });
});
