import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import supertest from 'supertest';
import { purgeUploads } from '../../src/registry/upload-purge.js';
import { createTestApp } from '../helpers/app.js';

async function startUpload(request: ReturnType<typeof supertest>, name: string): Promise<string> {
  const res = await request.post(`/v2/${name}/blobs/uploads/`);
  assert.equal(res.status, 202);
  return res.headers.location ?? '';
}

describe('upload purging', () => {
  test('purges sessions older than the age and keeps newer ones', async () => {
    const t = await createTestApp();
    const request = supertest(t.app.callback());
    const old = await startUpload(request, 'team/app');
    await request.patch(old).set('Content-Type', 'application/octet-stream').send(Buffer.alloc(100, 1));
    const cutoff = new Date(Date.now() + 1);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const fresh = await startUpload(request, 'nested/deep/repo');

    const dry = await purgeUploads(t.driver, { olderThan: cutoff, dryRun: true });
    assert.equal(dry.examined, 2);
    assert.equal(dry.purged.length, 1);
    assert.equal((await request.get(old)).status, 204, 'a dry run deletes nothing');

    const result = await purgeUploads(t.driver, { olderThan: cutoff, dryRun: false });
    assert.deepEqual(result.purged, dry.purged);
    assert.equal((await request.get(old)).status, 404);
    assert.equal((await request.get(fresh)).status, 204);
  });

  test('an empty registry has nothing to purge', async () => {
    const t = await createTestApp();
    assert.deepEqual(await purgeUploads(t.driver, { olderThan: new Date(), dryRun: false }), {
      examined: 0,
      purged: [],
    });
  });
});

describe('http.headers and http.host', () => {
  test('configured headers are on every response, and Location is absolute under http.host', async () => {
    const t = await createTestApp({
      responseHeaders: { 'X-Content-Type-Options': ['nosniff'] },
      externalURL: 'https://registry.example.com/',
    });
    const request = supertest(t.app.callback());
    const base = await request.get('/v2/');
    assert.equal(base.headers['x-content-type-options'], 'nosniff');
    const upload = await request.post('/v2/team/app/blobs/uploads/');
    assert.equal(upload.headers['x-content-type-options'], 'nosniff');
    // koa would otherwise send its status text ("Accepted") as a body.
    assert.equal(upload.headers['content-length'], '0');
    assert.match(
      upload.headers.location ?? '',
      /^https:\/\/registry\.example\.com\/v2\/team\/app\/blobs\/uploads\//,
    );
  });
});
