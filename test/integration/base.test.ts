import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { expectStatus, header, newRegistry } from '../helpers/oci.js';

void describe('GET /v2/', () => {
  void test('answers 200 with Docker-Distribution-API-Version: registry/2.0', async () => {
    const r = await newRegistry();
    const res = await r.get('/v2/');
    expectStatus(res, 200);
    assert.equal(header(res, 'docker-distribution-api-version'), 'registry/2.0');
  });

  void test('HEAD answers 200 too (clients probe with either)', async () => {
    const r = await newRegistry();
    const res = await r.head('/v2/');
    expectStatus(res, 200);
    assert.equal(header(res, 'docker-distribution-api-version'), 'registry/2.0');
  });
});
