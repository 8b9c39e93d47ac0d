import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import supertest from 'supertest';
import type { Response } from 'supertest';
import { createTestApp } from '../helpers/app.js';
import {
  MT,
  bodyBytes,
  expectOciError,
  expectStatus,
  header,
  locationOf,
  newRegistry,
  pushBlob,
  randomBlob,
  raw,
  sha256,
  withQuery,
  type Client,
} from '../helpers/oci.js';

const UUID_UNKNOWN = '0b6a1c0e-3a4f-4e2b-9d8e-5f7a6b5c4d3e';

// Out-of-order chunks MUST get 416; the spec names no code for it, but says every code MUST come from
// its closed list, where BLOB_UPLOAD_INVALID is the one that fits. Distribution's RANGE_INVALID is not
// in that list.
const RANGE_CODE = 'BLOB_UPLOAD_INVALID';

async function startUpload(r: Client, name = 'repo'): Promise<Response> {
  const res = await r.post(`/v2/${name}/blobs/uploads/`).set('Content-Length', '0');
  expectStatus(res, 202);
  return res;
}

/** The chunk size to use: at least the registry's OCI-Chunk-Min-Length when it sends one. */
function chunkSize(post: Response, wanted = 1000): number {
  const min = header(post, 'oci-chunk-min-length');
  return min === undefined ? wanted : Math.max(wanted, Number(min));
}

function patchChunk(r: Client, location: string, chunk: Buffer, start: number): Promise<Response> {
  return r
    .patch(location)
    .set('Content-Type', MT.octet)
    .set('Content-Range', `${start}-${start + chunk.length - 1}`)
    .send(chunk);
}

async function expectBlob(r: Client, name: string, content: Buffer): Promise<void> {
  const res = await raw(r.get(`/v2/${name}/blobs/${sha256(content)}`));
  expectStatus(res, 200);
  assert.deepEqual(bodyBytes(res), content);
}

void describe('POST /v2/<name>/blobs/uploads/ (start a session)', () => {
  void test('202 with Location, Docker-Upload-UUID and Range: 0-0', async () => {
    const r = await newRegistry();
    const res = await startUpload(r);
    assert.match(locationOf(res), /^\/v2\/repo\/blobs\/uploads\/[^/]+/);
    assert.ok(header(res, 'docker-upload-uuid'), 'Docker-Upload-UUID');
    // Distribution reports an empty session as 0-0 (not "0--1"); clients expect that.
    assert.equal(header(res, 'range'), '0-0');
  });

  void test('OCI-Chunk-Min-Length is optional; when present it is a positive integer', async () => {
    const r = await newRegistry();
    const min = header(await startUpload(r), 'oci-chunk-min-length');
    if (min !== undefined) {
      assert.match(min, /^[0-9]+$/);
      assert.ok(Number(min) > 0);
    }
  });

  void test('each POST opens a distinct session', async () => {
    const r = await newRegistry();
    assert.notEqual(locationOf(await startUpload(r)), locationOf(await startUpload(r)));
  });
});

void describe('monolithic upload', () => {
  void test('single POST ?digest= with the body → 201, Location of the blob, Docker-Content-Digest', async () => {
    const r = await newRegistry();
    const blob = randomBlob(4096);
    const digest = sha256(blob);
    const res = await r
      .post(`/v2/repo/blobs/uploads/?digest=${digest}`)
      .set('Content-Type', MT.octet)
      .send(blob);
    expectStatus(res, 201);
    assert.equal(header(res, 'docker-content-digest'), digest);
    assert.equal(locationOf(res), `/v2/repo/blobs/${digest}`);
    const got = await raw(r.get(locationOf(res)));
    expectStatus(got, 200);
    assert.deepEqual(bodyBytes(got), blob);
  });

  void test('single POST ?digest= that does not match the body → 400 DIGEST_INVALID and nothing stored', async () => {
    const r = await newRegistry();
    const blob = randomBlob();
    const wrong = sha256('something else');
    const res = await r
      .post(`/v2/repo/blobs/uploads/?digest=${wrong}`)
      .set('Content-Type', MT.octet)
      .send(blob);
    expectOciError(res, 400, 'DIGEST_INVALID');
    expectStatus(await r.head(`/v2/repo/blobs/${wrong}`), 404);
    expectStatus(await r.head(`/v2/repo/blobs/${sha256(blob)}`), 404);
  });

  void test('POST then PUT ?digest= with the whole body → 201', async () => {
    const r = await newRegistry();
    const blob = randomBlob(5000);
    const post = await startUpload(r);
    const put = await r
      .put(withQuery(locationOf(post), { digest: sha256(blob) }))
      .set('Content-Type', MT.octet)
      .send(blob);
    expectStatus(put, 201);
    assert.equal(header(put, 'docker-content-digest'), sha256(blob));
    assert.equal(locationOf(put), `/v2/repo/blobs/${sha256(blob)}`);
    await expectBlob(r, 'repo', blob);
  });

  void test('the session is closed once the upload completes', async () => {
    const r = await newRegistry();
    const blob = randomBlob();
    const post = await startUpload(r);
    const session = locationOf(post);
    expectStatus(await r.put(withQuery(session, { digest: sha256(blob) })).send(blob), 201);
    expectOciError(await r.get(session), 404, 'BLOB_UPLOAD_UNKNOWN');
  });
});

void describe('streamed upload (PATCH without Content-Range)', () => {
  void test('one PATCH then PUT ?digest= without body', async () => {
    const r = await newRegistry();
    const blob = randomBlob(3000);
    const post = await startUpload(r);
    const patch = await r.patch(locationOf(post)).set('Content-Type', MT.octet).send(blob);
    expectStatus(patch, 202);
    assert.equal(header(patch, 'range'), '0-2999');
    assert.ok(header(patch, 'docker-upload-uuid'));
    const put = await r.put(withQuery(locationOf(patch), { digest: sha256(blob) }));
    expectStatus(put, 201);
    await expectBlob(r, 'repo', blob);
  });

  void test('several PATCHes append in order', async () => {
    const r = await newRegistry();
    const parts = [randomBlob(100), randomBlob(2000), randomBlob(1)];
    let location = locationOf(await startUpload(r));
    let total = 0;
    for (const part of parts) {
      const res = await r.patch(location).set('Content-Type', MT.octet).send(part);
      expectStatus(res, 202);
      total += part.length;
      assert.equal(header(res, 'range'), `0-${total - 1}`);
      location = locationOf(res);
    }
    const blob = Buffer.concat(parts);
    expectStatus(await r.put(withQuery(location, { digest: sha256(blob) })), 201);
    await expectBlob(r, 'repo', blob);
  });

  void test('a PATCH sent with Transfer-Encoding: chunked (as docker does) is accepted', async () => {
    const r = await newRegistry();
    const parts = [randomBlob(10_000), randomBlob(20_000), randomBlob(5)];
    const post = await startUpload(r);
    const req = r.patch(locationOf(post)).set('Content-Type', MT.octet);
    for (const part of parts) req.write(part);
    const patch = await req;
    expectStatus(patch, 202);
    assert.equal(header(patch, 'range'), '0-30004');
    const blob = Buffer.concat(parts);
    expectStatus(await r.put(withQuery(locationOf(patch), { digest: sha256(blob) })), 201);
    await expectBlob(r, 'repo', blob);
  });
});

void describe('chunked upload (PATCH with Content-Range)', () => {
  void test('chunks in order → 202 with Range 0-<last>; PUT ?digest= without body completes', async () => {
    const r = await newRegistry();
    const post = await startUpload(r);
    const size = chunkSize(post);
    const blob = randomBlob(size * 2 + 17);
    let location = locationOf(post);
    for (let start = 0; start < blob.length; start += size) {
      const chunk = blob.subarray(start, start + size);
      const res = await patchChunk(r, location, chunk, start);
      expectStatus(res, 202);
      assert.equal(header(res, 'range'), `0-${start + chunk.length - 1}`);
      location = locationOf(res);
    }
    const put = await r.put(withQuery(location, { digest: sha256(blob) })).set('Content-Length', '0');
    expectStatus(put, 201);
    assert.equal(header(put, 'docker-content-digest'), sha256(blob));
    await expectBlob(r, 'repo', blob);
  });

  void test('the final chunk may come with the closing PUT (Content-Range + body)', async () => {
    const r = await newRegistry();
    const post = await startUpload(r);
    const size = chunkSize(post);
    const blob = randomBlob(size + 300);
    const first = await patchChunk(r, locationOf(post), blob.subarray(0, size), 0);
    expectStatus(first, 202);
    const put = await r
      .put(withQuery(locationOf(first), { digest: sha256(blob) }))
      .set('Content-Type', MT.octet)
      .set('Content-Range', `${size}-${blob.length - 1}`)
      .send(blob.subarray(size));
    expectStatus(put, 201);
    await expectBlob(r, 'repo', blob);
  });

  const outOfOrder: { name: string; range: (size: number) => string }[] = [
    { name: 'a first chunk that does not start at 0', range: (s) => `${s}-${2 * s - 1}` },
    { name: 'a chunk leaving a gap', range: (s) => `${2 * s}-${3 * s - 1}` },
    { name: 'the same chunk sent again', range: (s) => `0-${s - 1}` },
    { name: 'an overlapping chunk', range: (s) => `${s - 1}-${2 * s - 2}` },
  ];
  for (const c of outOfOrder) {
    void test(`${c.name} → 416; the session keeps its offset and still completes`, async () => {
      const r = await newRegistry();
      const post = await startUpload(r);
      const size = chunkSize(post);
      const blob = randomBlob(size * 2);
      const location = locationOf(post);
      if (!c.name.startsWith('a first'))
        expectStatus(await patchChunk(r, location, blob.subarray(0, size), 0), 202);
      const bad = await r
        .patch(location)
        .set('Content-Type', MT.octet)
        .set('Content-Range', c.range(size))
        .send(blob.subarray(0, size));
      expectOciError(bad, 416, RANGE_CODE);

      const status = await r.get(location);
      expectStatus(status, 204);
      const offset = c.name.startsWith('a first') ? 0 : size;
      assert.equal(header(status, 'range'), `0-${Math.max(offset - 1, 0)}`);
      let next = locationOf(status);
      if (offset === 0) {
        const res = await patchChunk(r, next, blob.subarray(0, size), 0);
        expectStatus(res, 202);
        next = locationOf(res);
      }
      const last = await patchChunk(r, next, blob.subarray(size), size);
      expectStatus(last, 202);
      expectStatus(await r.put(withQuery(locationOf(last), { digest: sha256(blob) })), 201);
      await expectBlob(r, 'repo', blob);
    });
  }

  void test('a range whose end is before its start → 416', async () => {
    const r = await newRegistry();
    const post = await startUpload(r);
    const res = await r
      .patch(locationOf(post))
      .set('Content-Type', MT.octet)
      .set('Content-Range', '5-2')
      .send(randomBlob(4));
    expectOciError(res, 416, RANGE_CODE);
  });

  void test('a Content-Range that disagrees with Content-Length → 400 SIZE_INVALID (Distribution)', async () => {
    const r = await newRegistry();
    const post = await startUpload(r);
    const res = await r
      .patch(locationOf(post))
      .set('Content-Type', MT.octet)
      .set('Content-Range', '0-99')
      .send(randomBlob(50));
    expectOciError(res, 400, 'SIZE_INVALID');
  });

  void test('a malformed Content-Range (spec: MUST match ^[0-9]+-[0-9]+$) → 400 or 416 BLOB_UPLOAD_INVALID', async () => {
    const r = await newRegistry();
    const post = await startUpload(r);
    const res = await r
      .patch(locationOf(post))
      .set('Content-Type', MT.octet)
      .set('Content-Range', 'lots')
      .send(randomBlob(10));
    // The spec names no status for a malformed range (Distribution even answers 500): either client error fits.
    expectOciError(res, res.status === 416 ? 416 : 400, 'BLOB_UPLOAD_INVALID');
  });
});

void describe('closing PUT errors', () => {
  void test('digest that does not match the uploaded bytes → 400 DIGEST_INVALID; the blob is not stored', async () => {
    const r = await newRegistry();
    const blob = randomBlob();
    const wrong = sha256('not the content');
    const post = await startUpload(r);
    const patch = await r.patch(locationOf(post)).set('Content-Type', MT.octet).send(blob);
    expectStatus(patch, 202);
    expectOciError(await r.put(withQuery(locationOf(patch), { digest: wrong })), 400, 'DIGEST_INVALID');
    expectStatus(await r.head(`/v2/repo/blobs/${wrong}`), 404);
    expectStatus(await r.head(`/v2/repo/blobs/${sha256(blob)}`), 404);
  });

  void test('monolithic PUT with a wrong digest → 400 DIGEST_INVALID; nothing stored', async () => {
    const r = await newRegistry();
    const blob = randomBlob();
    const wrong = sha256('not the content');
    const post = await startUpload(r);
    const put = await r
      .put(withQuery(locationOf(post), { digest: wrong }))
      .set('Content-Type', MT.octet)
      .send(blob);
    expectOciError(put, 400, 'DIGEST_INVALID');
    expectStatus(await r.head(`/v2/repo/blobs/${wrong}`), 404);
    expectStatus(await r.head(`/v2/repo/blobs/${sha256(blob)}`), 404);
  });

  void test('PUT without ?digest= → 400 DIGEST_INVALID', async () => {
    const r = await newRegistry();
    const post = await startUpload(r);
    expectOciError(
      await r.put(locationOf(post)).set('Content-Type', MT.octet).send(randomBlob()),
      400,
      'DIGEST_INVALID',
    );
  });

  for (const digest of ['sha256:xyz', 'md5:d41d8cd98f00b204e9800998ecf8427e', `sha256:${'a'.repeat(63)}`]) {
    void test(`PUT ?digest=${digest.slice(0, 20)}… (malformed) → 400 DIGEST_INVALID`, async () => {
      const r = await newRegistry();
      const post = await startUpload(r);
      const res = await r
        .put(withQuery(locationOf(post), { digest }))
        .set('Content-Type', MT.octet)
        .send(randomBlob());
      expectOciError(res, 400, 'DIGEST_INVALID');
    });
  }
});

void describe('upload status and cancel', () => {
  void test('GET on a session → 204 with Range, Location and Docker-Upload-UUID', async () => {
    const r = await newRegistry();
    const post = await startUpload(r);
    const patch = await r.patch(locationOf(post)).set('Content-Type', MT.octet).send(randomBlob(1234));
    expectStatus(patch, 202);
    const res = await r.get(locationOf(patch));
    expectStatus(res, 204);
    assert.equal(header(res, 'range'), '0-1233');
    assert.match(locationOf(res), /^\/v2\/repo\/blobs\/uploads\/[^/]+/);
    assert.ok(header(res, 'docker-upload-uuid'));
  });

  void test('DELETE cancels: 204, then the session is unknown to GET, PATCH and PUT', async () => {
    const r = await newRegistry();
    const blob = randomBlob();
    const post = await startUpload(r);
    const patch = await r.patch(locationOf(post)).set('Content-Type', MT.octet).send(blob);
    const session = locationOf(patch);
    expectStatus(await r.delete(session), 204);
    expectOciError(await r.get(session), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectOciError(
      await r.patch(session).set('Content-Type', MT.octet).send(blob),
      404,
      'BLOB_UPLOAD_UNKNOWN',
    );
    expectOciError(await r.put(withQuery(session, { digest: sha256(blob) })), 404, 'BLOB_UPLOAD_UNKNOWN');
    expectStatus(await r.head(`/v2/repo/blobs/${sha256(blob)}`), 404);
  });

  void test('cancel works with storage delete disabled (it removes no content, only the session)', async () => {
    const r = await newRegistry({ deleteEnabled: false });
    const session = locationOf(await startUpload(r));
    expectStatus(await r.delete(session), 204);
    expectOciError(await r.get(session), 404, 'BLOB_UPLOAD_UNKNOWN');
  });
});

void describe('unknown and foreign upload ids → 404 BLOB_UPLOAD_UNKNOWN', () => {
  const methods: { method: string; send: (r: Client, path: string) => Promise<Response> }[] = [
    { method: 'GET', send: (r, p) => r.get(p) },
    {
      method: 'PATCH',
      send: (r, p) => r.patch(p).set('Content-Type', MT.octet).send(randomBlob(10)),
    },
    {
      method: 'PUT',
      send: (r, p) => r.put(withQuery(p, { digest: sha256('x') })).send('x'),
    },
    { method: 'DELETE', send: (r, p) => r.delete(p) },
  ];
  for (const { method, send } of methods) {
    for (const id of [UUID_UNKNOWN, 'not-an-upload', '..', 'a.b']) {
      void test(`${method} /v2/repo/blobs/uploads/${id}`, async () => {
        const r = await newRegistry();
        await startUpload(r); // the repository exists
        expectOciError(await send(r, `/v2/repo/blobs/uploads/${id}`), 404, 'BLOB_UPLOAD_UNKNOWN');
      });
    }
    void test(`${method} with an id that belongs to another repository`, async () => {
      const r = await newRegistry();
      const mine = locationOf(await startUpload(r, 'mine'));
      await startUpload(r, 'theirs');
      const foreign = mine.replace('/v2/mine/', '/v2/theirs/');
      expectOciError(await send(r, foreign), 404, 'BLOB_UPLOAD_UNKNOWN');
      expectStatus(await r.get(mine), 204); // and the owner's session is untouched
    });
  }
});

void describe('cross-repository mount', () => {
  void test('?mount=&from= an existing blob → 201, Location of the blob in the target, Docker-Content-Digest', async () => {
    const r = await newRegistry();
    const blob = randomBlob();
    const { digest } = await pushBlob(r, 'source', blob);
    const res = await r.post(`/v2/target/blobs/uploads/?mount=${digest}&from=source`);
    expectStatus(res, 201);
    assert.equal(locationOf(res), `/v2/target/blobs/${digest}`);
    assert.equal(header(res, 'docker-content-digest'), digest);
    await expectBlob(r, 'target', blob);
  });

  void test('mount of a nested repository name works', async () => {
    const r = await newRegistry();
    const blob = randomBlob();
    const { digest } = await pushBlob(r, 'org/team/source', blob);
    expectStatus(
      await r.post(`/v2/org/other/target/blobs/uploads/?mount=${digest}&from=org/team/source`),
      201,
    );
    await expectBlob(r, 'org/other/target', blob);
  });

  void test('mount of an unknown blob → 202 and a usable upload session instead', async () => {
    const r = await newRegistry();
    await pushBlob(r, 'source', randomBlob());
    const blob = randomBlob();
    const res = await r.post(`/v2/target/blobs/uploads/?mount=${sha256(blob)}&from=source`);
    expectStatus(res, 202);
    assert.match(locationOf(res), /^\/v2\/target\/blobs\/uploads\/[^/]+/);
    expectStatus(
      await r
        .put(withQuery(locationOf(res), { digest: sha256(blob) }))
        .set('Content-Type', MT.octet)
        .send(blob),
      201,
    );
    await expectBlob(r, 'target', blob);
  });

  void test('mount without from: 201 when the blob is in the registry (spec MAY; Wharf does)', async () => {
    const r = await newRegistry();
    const blob = randomBlob();
    const { digest } = await pushBlob(r, 'somewhere', blob);
    const res = await r.post(`/v2/target/blobs/uploads/?mount=${digest}`);
    expectStatus(res, 201);
    assert.equal(locationOf(res), `/v2/target/blobs/${digest}`);
    await expectBlob(r, 'target', blob);
  });

  void test('mount without from of an unknown blob → 202 (conformance: "should yield session id")', async () => {
    const r = await newRegistry();
    const res = await r.post(`/v2/target/blobs/uploads/?mount=${sha256('unknown')}`);
    expectStatus(res, 202);
    assert.match(locationOf(res), /^\/v2\/target\/blobs\/uploads\/[^/]+/);
  });
});

void describe('sessions live in storage', () => {
  void test('a session started on one instance continues and completes on another sharing the storage', async () => {
    const first = await createTestApp({ deleteEnabled: true });
    const second = await createTestApp({ deleteEnabled: true, driver: first.driver });
    const r1 = supertest(first.app.callback());
    const r2 = supertest(second.app.callback());
    const parts = [randomBlob(3000), randomBlob(3000)];
    const post = await startUpload(r1);
    const patch1 = await r1.patch(locationOf(post)).set('Content-Type', MT.octet).send(parts[0]);
    expectStatus(patch1, 202);
    const status = await r2.get(locationOf(patch1));
    expectStatus(status, 204);
    assert.equal(header(status, 'range'), '0-2999');
    const patch2 = await r2.patch(locationOf(status)).set('Content-Type', MT.octet).send(parts[1]);
    expectStatus(patch2, 202);
    assert.equal(header(patch2, 'range'), '0-5999');
    const blob = Buffer.concat(parts);
    expectStatus(await r1.put(withQuery(locationOf(patch2), { digest: sha256(blob) })), 201);
    await expectBlob(r2, 'repo', blob);
  });
});

void describe('deduplication', () => {
  void test('uploading content that already exists completes normally, in the same and in another repository', async () => {
    const r = await newRegistry();
    const blob = randomBlob();
    await pushBlob(r, 'repo', blob);
    await pushBlob(r, 'repo', blob);
    await pushBlob(r, 'other', blob);
    await expectBlob(r, 'repo', blob);
    await expectBlob(r, 'other', blob);
  });

  void test('the bytes are stored once (Distribution layout: blobs/sha256/xx/<hex>/data)', async () => {
    const t = await createTestApp({ deleteEnabled: true });
    const r = supertest(t.app.callback());
    const blob = randomBlob();
    await pushBlob(r, 'a', blob);
    await pushBlob(r, 'b', blob);
    await pushBlob(r, 'b', blob);
    const data: string[] = [];
    await t.driver.walk('/docker/registry/v2/blobs', {
      onEntry: (info) => {
        if (!info.isDir && info.path.endsWith('/data')) data.push(info.path);
      },
    });
    assert.deepEqual(data, [
      `/docker/registry/v2/blobs/sha256/${sha256(blob).slice(7, 9)}/${sha256(blob).slice(7)}/data`,
    ]);
  });
});
