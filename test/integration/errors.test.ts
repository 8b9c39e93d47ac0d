// Invalid names and digests across endpoints, and the error envelope on routes that do not exist.
// Each endpoint's own errors live in its file; every one goes through `expectOciError`.
import { describe, test } from 'node:test';
import type { Response } from 'supertest';
import {
  MT,
  expectOciError,
  expectStatus,
  newRegistry,
  pushImage,
  randomBlob,
  sendBytes,
  sha256,
  type Client,
} from '../helpers/oci.js';

const DIGEST = sha256('anything');

/** One request per endpoint that takes a <name>; `head` ones have no body to check. */
const nameEndpoints: { label: string; head?: true; send: (r: Client, name: string) => Promise<Response> }[] =
  [
    { label: 'GET tags/list', send: (r, n) => r.get(`/v2/${n}/tags/list`) },
    { label: 'GET manifest', send: (r, n) => r.get(`/v2/${n}/manifests/latest`) },
    {
      label: 'HEAD manifest',
      head: true,
      send: (r, n) => r.head(`/v2/${n}/manifests/latest`),
    },
    {
      label: 'PUT manifest',
      send: (r, n) =>
        sendBytes(r.put(`/v2/${n}/manifests/latest`).set('Content-Type', MT.ociManifest), '{}').then(
          (x) => x,
        ),
    },
    { label: 'DELETE manifest', send: (r, n) => r.delete(`/v2/${n}/manifests/${DIGEST}`) },
    { label: 'GET blob', send: (r, n) => r.get(`/v2/${n}/blobs/${DIGEST}`) },
    { label: 'HEAD blob', head: true, send: (r, n) => r.head(`/v2/${n}/blobs/${DIGEST}`) },
    { label: 'DELETE blob', send: (r, n) => r.delete(`/v2/${n}/blobs/${DIGEST}`) },
    { label: 'POST upload', send: (r, n) => r.post(`/v2/${n}/blobs/uploads/`) },
    {
      label: 'POST monolithic upload',
      send: (r, n) =>
        r.post(`/v2/${n}/blobs/uploads/?digest=${DIGEST}`).set('Content-Type', MT.octet).send(randomBlob(8)),
    },
    {
      label: 'POST mount',
      send: (r, n) => r.post(`/v2/${n}/blobs/uploads/?mount=${DIGEST}&from=repo`),
    },
    { label: 'GET referrers', send: (r, n) => r.get(`/v2/${n}/referrers/${DIGEST}`) },
  ];

void describe('invalid repository names → 400 NAME_INVALID', () => {
  // <name> grammar: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*, at most 255 chars.
  const badNames = [
    'Upper',
    'org/Upper',
    '..',
    'a/../b',
    'a/./b',
    'a//b',
    '-lead',
    'trail-',
    '_lead',
    'trail_',
    '.lead',
    'trail.',
    'a___b',
    'a..b',
    'a._b',
    'a/',
    'a%20b',
    'a'.repeat(256),
    `${'ab/'.repeat(85)}a`, // 256 characters of valid components
  ];
  for (const name of badNames) {
    const shown = name.length > 30 ? `${name.slice(0, 12)}…(${name.length} chars)` : name;
    void test(`"${shown}" on every endpoint`, async () => {
      const r = await newRegistry();
      for (const endpoint of nameEndpoints) {
        const res = await endpoint.send(r, name);
        if (endpoint.head) expectStatus(res, 400);
        else expectOciError(res, 400, 'NAME_INVALID');
      }
    });
  }
});

void describe('valid edge-case names are accepted', () => {
  const goodNames = [
    'a__b',
    'a--b',
    'a---b',
    'a.b',
    'a_b',
    '0',
    'a/b/c/d/e/f',
    'a'.repeat(255),
    `${'ab/'.repeat(84)}abc`,
  ];
  for (const name of goodNames) {
    const shown = name.length > 30 ? `${name.slice(0, 12)}…(${name.length} chars)` : name;
    void test(`"${shown}": push, pull and list work`, async () => {
      const r = await newRegistry();
      expectOciError(await r.get(`/v2/${name}/tags/list`), 404, 'NAME_UNKNOWN');
      const m = await pushImage(r, name, 'latest');
      expectStatus(await r.get(`/v2/${name}/manifests/${m.digest}`).set('Accept', MT.ociManifest), 200);
      expectStatus(await r.get(`/v2/${name}/tags/list`), 200);
    });
  }
});

void describe('invalid digests → 400 DIGEST_INVALID', () => {
  const badDigests = [
    'sha256:xyz',
    `md5:${'a'.repeat(32)}`,
    `sha256:${'a'.repeat(63)}`,
    `sha256:${'a'.repeat(65)}`,
    `sha256:${'A'.repeat(64)}`,
    'sha256:',
    'sha256',
    `:${'a'.repeat(64)}`,
  ];
  const endpoints: { label: string; head?: true; send: (r: Client, d: string) => Promise<Response> }[] = [
    { label: 'GET blob', send: (r, d) => r.get(`/v2/repo/blobs/${d}`) },
    { label: 'HEAD blob', head: true, send: (r, d) => r.head(`/v2/repo/blobs/${d}`) },
    { label: 'DELETE blob', send: (r, d) => r.delete(`/v2/repo/blobs/${d}`) },
    { label: 'GET referrers', send: (r, d) => r.get(`/v2/repo/referrers/${d}`) },
    {
      label: 'POST ?digest=',
      send: (r, d) =>
        r
          .post(`/v2/repo/blobs/uploads/?digest=${encodeURIComponent(d)}`)
          .set('Content-Type', MT.octet)
          .send(randomBlob(8)),
    },
  ];
  for (const digest of badDigests) {
    for (const endpoint of endpoints) {
      void test(`${endpoint.label} ${digest.length > 24 ? `${digest.slice(0, 14)}…(${digest.length})` : digest}`, async () => {
        const r = await newRegistry();
        await pushImage(r, 'repo', 'v1');
        const res = await endpoint.send(r, digest);
        if (endpoint.head) expectStatus(res, 400);
        else expectOciError(res, 400, 'DIGEST_INVALID');
      });
    }
  }
});

void describe('requests no route serves still get the OCI error envelope', () => {
  const cases: { label: string; send: (r: Client) => Promise<Response> }[] = [
    { label: 'GET /v2/repo/nothing', send: (r) => r.get('/v2/repo/nothing') },
    { label: 'PATCH a manifest', send: (r) => r.patch('/v2/repo/manifests/v1') },
    { label: 'POST a blob', send: (r) => r.post(`/v2/repo/blobs/${DIGEST}`) },
    { label: 'PUT the tags list', send: (r) => r.put('/v2/repo/tags/list') },
  ];
  for (const { label, send } of cases) {
    void test(`${label} → 404 or 405 UNSUPPORTED`, async () => {
      const r = await newRegistry();
      await pushImage(r, 'repo', 'v1');
      const res = await send(r);
      expectOciError(res, res.status === 405 ? 405 : 404, 'UNSUPPORTED');
    });
  }
});
