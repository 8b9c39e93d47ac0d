// The agent's event intake: parsing Distribution's envelope, authenticating the sender, and the
// HTTP answers (supertest on the koa app, the queue and the engine faked).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import supertest from 'supertest';
import { MalformedEventError, selectJobs, type Job } from '../../src/agent/events.js';
import { isAuthorized, signatureOf } from '../../src/agent/intake-auth.js';
import { createAgentApp, MAX_EVENT_BODY } from '../../src/agent/server.js';

const D = `sha256:${'a'.repeat(64)}`;
const MT = {
  docker: 'application/vnd.docker.distribution.manifest.v2+json',
  list: 'application/vnd.docker.distribution.manifest.list.v2+json',
  oci: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
};
const event = (action: string, target: Record<string, unknown>) => ({ id: 'e1', action, target });
const envelope = (...events: unknown[]) => Buffer.from(JSON.stringify({ events }));

describe('selectJobs', () => {
  test('pushes of image manifests and indexes become jobs', () => {
    for (const mediaType of [MT.docker, MT.list, MT.oci, MT.index]) {
      const { jobs, ignored } = selectJobs(
        envelope(event('push', { mediaType, digest: D, repository: 'a/b', tag: 't' })),
      );
      assert.deepEqual(jobs, [{ repository: 'a/b', digest: D, mediaType, eventId: 'e1' }]);
      assert.deepEqual(ignored, []);
    }
  });

  for (const [name, ev, reason] of [
    ['a pull', event('pull', { mediaType: MT.docker, digest: D, repository: 'a' }), /action pull/],
    ['a delete', event('delete', { digest: D, repository: 'a' }), /action delete/],
    ['a mount', event('mount', { mediaType: MT.layer, digest: D, repository: 'a' }), /action mount/],
    ['a blob push', event('push', { mediaType: MT.layer, digest: D, repository: 'a' }), /media type/],
    [
      'an artifact push',
      event('push', {
        mediaType: MT.oci,
        artifactType: 'application/vnd.in-toto+json',
        digest: D,
        repository: 'a',
      }),
      /artifact/,
    ],
  ] as const) {
    test(`ignored: ${name}`, () => {
      const { jobs, ignored } = selectJobs(envelope(ev));
      assert.deepEqual(jobs, []);
      assert.equal(ignored.length, 1);
      assert.match(ignored[0]?.reason ?? '', reason);
    });
  }

  for (const [name, body, why] of [
    ['not JSON', Buffer.from('{'), /not JSON/],
    ['no events', Buffer.from('{}'), /events/],
    ['events not a list', Buffer.from('{"events":{}}'), /events/],
    ['an event without action', envelope({ target: {} }), /action/],
    [
      'a manifest push without digest',
      envelope(event('push', { mediaType: MT.docker, repository: 'a' })),
      /digest/,
    ],
    [
      'a bad digest',
      envelope(event('push', { mediaType: MT.docker, repository: 'a', digest: 'md5:x' })),
      /digest/,
    ],
    [
      'a bad repository',
      envelope(event('push', { mediaType: MT.docker, repository: '../etc', digest: D })),
      /repository/,
    ],
  ] as const) {
    test(`malformed: ${name}`, () => {
      assert.throws(
        () => selectJobs(body),
        (err: unknown) => err instanceof MalformedEventError && why.test(err.message),
      );
    });
  }
});

describe('isAuthorized', () => {
  const body = Buffer.from('{"events":[]}');
  const both = { token: 'tok', secret: 'sec', insecure: false };
  const cases: [string, Parameters<typeof isAuthorized>[0], Parameters<typeof isAuthorized>[1], boolean][] = [
    ['the token', both, { authorization: 'Bearer tok' }, true],
    ['the token, any case of the scheme', both, { authorization: 'bearer tok' }, true],
    ['a wrong token', both, { authorization: 'Bearer tok2' }, false],
    ['a prefix of the token', both, { authorization: 'Bearer to' }, false],
    ['Basic', both, { authorization: 'Basic dG9rOg==' }, false],
    ['a valid signature', both, { signature: signatureOf('sec', body) }, true],
    ['a signature with another secret', both, { signature: signatureOf('other', body) }, false],
    [
      'a bad token but a valid signature',
      both,
      { authorization: 'Bearer x', signature: signatureOf('sec', body) },
      true,
    ],
    ['nothing', both, {}, false],
    [
      'a token when only a secret is configured',
      { secret: 'sec', insecure: false },
      { authorization: 'Bearer sec' },
      false,
    ],
    ['nothing, insecure', { insecure: true }, {}, true],
    ['nothing, nothing configured, not insecure', { insecure: false }, {}, false],
  ];
  for (const [name, secrets, headers, want] of cases) {
    test(`${name} → ${want ? 'accepted' : 'refused'}`, () => {
      assert.equal(isAuthorized(secrets, headers, body), want);
    });
  }
});

describe('POST /events and the other routes', () => {
  function app(opts: { full?: boolean; ready?: string } = {}) {
    const accepted: Job[] = [];
    const koa = createAgentApp({
      secrets: { token: 'tok', secret: 'sec', insecure: false },
      jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', kid: 'k' }] },
      accept: (jobs) => {
        if (opts.full === true) return Promise.resolve(false);
        accepted.push(...jobs);
        return Promise.resolve(true);
      },
      ready: () => Promise.resolve(opts.ready),
      logger: pino({ level: 'silent' }),
    });
    return { request: supertest(koa.callback()), accepted };
  }
  const push = JSON.stringify({
    events: [event('push', { mediaType: MT.docker, digest: D, repository: 'a/b' })],
  });

  test('202 with counts, the job handed over', async () => {
    const { request, accepted } = app();
    const res = await request
      .post('/events')
      .set('Authorization', 'Bearer tok')
      .set('Content-Type', 'application/json')
      .send(push);
    assert.equal(res.status, 202);
    assert.deepEqual(res.body, { accepted: 1, ignored: 0 });
    assert.equal(accepted[0]?.digest, D);
  });

  test('HMAC-signed: 202', async () => {
    const { request } = app();
    const res = await request
      .post('/events')
      .set('X-Wharf-Signature-256', signatureOf('sec', Buffer.from(push)))
      .set('Content-Type', 'application/vnd.docker.distribution.events.v2+json')
      .send(push);
    assert.equal(res.status, 202);
  });

  test('401 without credentials, nothing accepted', async () => {
    const { request, accepted } = app();
    const res = await request.post('/events').set('Content-Type', 'application/json').send(push);
    assert.equal(res.status, 401);
    assert.match(res.headers['www-authenticate'] ?? '', /Bearer/);
    assert.deepEqual(accepted, []);
  });

  test('400 with the reason', async () => {
    const { request } = app();
    const res = await request
      .post('/events')
      .set('Authorization', 'Bearer tok')
      .set('Content-Type', 'application/json')
      .send('{"events": 1}');
    assert.equal(res.status, 400);
    assert.match((res.body as { error: string }).error, /events/);
  });

  test('413 past the size limit', async () => {
    const { request } = app();
    const res = await request
      .post('/events')
      .set('Authorization', 'Bearer tok')
      .set('Content-Type', 'application/json')
      .send('x'.repeat(MAX_EVENT_BODY + 1));
    assert.equal(res.status, 413);
  });

  test('503 when the queue is full, so the registry retries', async () => {
    const { request } = app({ full: true });
    const res = await request
      .post('/events')
      .set('Authorization', 'Bearer tok')
      .set('Content-Type', 'application/json')
      .send(push);
    assert.equal(res.status, 503);
    assert.equal(res.headers['retry-after'], '30');
  });

  test('jwks, healthz, readyz', async () => {
    const { request } = app();
    const jwks = await request.get('/.well-known/jwks.json');
    assert.equal(jwks.status, 200);
    assert.equal((jwks.body as { keys: { kid: string }[] }).keys[0]?.kid, 'k');
    assert.equal((await request.get('/healthz')).status, 200);
    assert.equal((await request.get('/readyz')).status, 200);
    const down = await app({ ready: 'docker engine unreachable: ENOENT' }).request.get('/readyz');
    assert.equal(down.status, 503);
    assert.match(JSON.stringify(down.body), /ENOENT/);
  });

  test('other methods: 405', async () => {
    const { request } = app();
    assert.equal((await request.get('/events')).status, 405);
  });
});
