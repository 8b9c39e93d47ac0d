// Operations: every log line a request causes carries its request id, including the lines auth writes
// (a failed login), so that one grep finds everything about a request.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import supertest from 'supertest';
import { basicAuth, capturingLogger, fixtureDir, randomPassword, writeHtpasswd } from '../helpers/auth.js';
import { createTestApp } from '../helpers/app.js';

const users = { alice: randomPassword() };
let dir: Awaited<ReturnType<typeof fixtureDir>>;
before(async () => {
  dir = await fixtureDir();
  await writeHtpasswd(dir.path('htpasswd'), users);
});
after(async () => {
  await dir.cleanup();
});

test('a failed login is logged with the id of its request, given or generated', async () => {
  const { logger, text } = capturingLogger();
  const t = await createTestApp({
    logger,
    auth: { htpasswd: { realm: 'wharf-test', path: dir.path('htpasswd') } },
  });
  const client = supertest(t.app.callback());
  const given = await client
    .get('/v2/')
    .set('X-Request-Id', 'req-from-proxy-1')
    .set('Authorization', basicAuth('alice', 'wrong'))
    .expect(401);
  assert.equal(given.get('X-Request-Id'), 'req-from-proxy-1');
  const generated = await client.get('/v2/').set('Authorization', basicAuth('alice', 'wrong')).expect(401);
  const id = generated.get('X-Request-Id') ?? '';
  assert.match(id, /^[0-9a-f-]{36}$/);

  const lines = text()
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { msg: string; reqId?: string });
  for (const reqId of ['req-from-proxy-1', id]) {
    const mine = lines.filter((l) => l.reqId === reqId).map((l) => l.msg);
    assert.deepEqual(mine.sort(), ['login failed', 'request'], `lines of ${reqId}`);
  }
  assert.deepEqual(
    lines.filter((l) => l.msg === 'login failed' && l.reqId === undefined),
    [],
    'no login line without a request id',
  );
});
