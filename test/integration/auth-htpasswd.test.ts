// Basic auth against htpasswd, access rules, anonymous pull, catalog filtering, robot tokens and the
// failed-login limit, through the assembled app.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import supertest from 'supertest';
import { RobotStore } from '../../src/auth/robots.js';
import { basicAuth, fixtureDir, randomPassword, writeHtpasswd } from '../helpers/auth.js';
import { createTestApp, type TestApp, type TestAppOptions } from '../helpers/app.js';
import {
  CatalogSchema,
  bodyJson,
  expectOciError,
  expectStatus,
  getManifest,
  header,
  pushBlob,
  pushImage,
  randomBlob,
  type Client,
} from '../helpers/oci.js';

const users = { alice: randomPassword(), bob: randomPassword(), carol: randomPassword() };

let dir: Awaited<ReturnType<typeof fixtureDir>>;
before(async () => {
  dir = await fixtureDir();
  await writeHtpasswd(dir.path('htpasswd'), users);
});
after(async () => {
  await dir.cleanup();
});

type AuthSection = NonNullable<TestAppOptions['auth']>;

async function registry(
  extra: Partial<AuthSection> = {},
  driver?: TestApp['driver'],
): Promise<{ t: TestApp; as: (auth?: string) => Client }> {
  const t = await createTestApp({
    auth: { htpasswd: { realm: 'wharf-test', path: dir.path('htpasswd') }, ...extra },
    ...(driver && { driver }),
  });
  const as = (auth?: string): Client => {
    const agent = supertest.agent(t.app.callback());
    if (auth !== undefined) agent.set('Authorization', auth);
    return agent;
  };
  return { t, as };
}

const alice = () => basicAuth('alice', users.alice);
const bob = () => basicAuth('bob', users.bob);
const carol = () => basicAuth('carol', users.carol);

const rules: AuthSection['access'] = {
  groups: { devs: ['alice', 'bob'] },
  rules: [
    { repositories: ['team/**'], groups: ['devs'], actions: ['pull'] },
    { repositories: ['team/**'], users: ['alice'], actions: ['push', 'delete'] },
    { repositories: ['public/*'], users: ['alice'], actions: ['pull', 'push'], anonymous: true },
    { repositories: ['carol/**'], users: ['carol'], actions: ['pull', 'push'] },
  ],
};

void describe('htpasswd: Basic authentication', () => {
  void test('no credentials: 401 UNAUTHORIZED with a Basic challenge naming the realm', async () => {
    const { as } = await registry();
    for (const path of ['/v2/', '/v2/_catalog', '/v2/any/manifests/latest', '/v2/nope/unknown/route']) {
      const res = await as().get(path);
      expectOciError(res, 401, 'UNAUTHORIZED');
      assert.equal(header(res, 'www-authenticate'), 'Basic realm="wharf-test"', path);
    }
  });

  void test('wrong password, unknown user, malformed header and a bearer token: 401', async () => {
    const { as } = await registry();
    for (const auth of [
      basicAuth('alice', 'wrong'),
      basicAuth('mallory', users.alice),
      'Basic !!!notbase64',
      'Basic ' + Buffer.from('no-colon').toString('base64'),
      'Bearer abc.def.ghi',
      'Digest username="alice"',
    ]) {
      const res = await as(auth).get('/v2/');
      expectOciError(res, 401, 'UNAUTHORIZED');
      assert.match(header(res, 'www-authenticate') ?? '', /^Basic realm=/, auth);
    }
  });

  void test('the right password: /v2/ answers 200; push and pull work without rules', async () => {
    const { as } = await registry();
    expectStatus(await as(alice()).get('/v2/'), 200);
    const pushed = await pushImage(as(alice()), 'anything/goes', 'v1');
    const res = await getManifest(as(bob()), 'anything/goes', 'v1');
    expectStatus(res, 200);
    assert.equal(header(res, 'docker-content-digest'), pushed.digest);
  });

  void test('the htpasswd file is re-read when it changes', async () => {
    const local = await fixtureDir();
    try {
      const path = local.path('htpasswd');
      await writeHtpasswd(path, { dave: 'first' });
      const t = await createTestApp({ auth: { htpasswd: { realm: 'r', path } } });
      const get = (auth: string) => supertest(t.app.callback()).get('/v2/').set('Authorization', auth);
      expectStatus(await get(basicAuth('dave', 'first')), 200);
      await writeHtpasswd(path, { dave: 'second', erin: 'new' });
      // Changes are picked up within a second.
      await new Promise((r) => setTimeout(r, 1100));
      expectOciError(await get(basicAuth('dave', 'first')), 401, 'UNAUTHORIZED');
      expectStatus(await get(basicAuth('dave', 'second')), 200);
      expectStatus(await get(basicAuth('erin', 'new')), 200);
      // A non-bcrypt entry is ignored, as Distribution ignores it.
      await writeFile(path, 'frank:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n');
      await new Promise((r) => setTimeout(r, 1100));
      expectOciError(await get(basicAuth('frank', 'password')), 401, 'UNAUTHORIZED');
    } finally {
      await local.cleanup();
    }
  });
});

void describe('htpasswd: access rules', () => {
  void test('a user with pull only is refused a push: 403 DENIED', async () => {
    const { as } = await registry({ access: rules });
    await pushImage(as(alice()), 'team/app', 'v1');
    expectStatus(await getManifest(as(bob()), 'team/app', 'v1'), 200);
    const res = await as(bob()).post('/v2/team/app/blobs/uploads/');
    expectOciError(res, 403, 'DENIED');
    assert.equal(header(res, 'www-authenticate'), undefined, 'no challenge: credentials were fine');
  });

  void test('delete needs the delete action', async () => {
    const { as } = await registry({ access: rules });
    const m = await pushImage(as(alice()), 'team/app', 'v1');
    expectOciError(await as(bob()).delete(`/v2/team/app/manifests/${m.digest}`), 403, 'DENIED');
    expectStatus(await as(alice()).delete(`/v2/team/app/manifests/${m.digest}`), 202);
  });

  void test('a repository no rule grants: pull and push refused', async () => {
    const { as } = await registry({ access: rules });
    expectOciError(await getManifest(as(alice()), 'elsewhere', 'v1'), 403, 'DENIED');
    expectOciError(await as(alice()).post('/v2/elsewhere/blobs/uploads/'), 403, 'DENIED');
    // `public/*` does not reach into deeper namespaces.
    expectOciError(await as(alice()).post('/v2/public/a/b/blobs/uploads/'), 403, 'DENIED');
  });

  void test('anonymous pull is allowed where a rule says so; anonymous push gets a challenge', async () => {
    const { as } = await registry({ access: rules });
    const m = await pushImage(as(alice()), 'public/tool', 'v1');
    const res = await getManifest(as(), 'public/tool', 'v1');
    expectStatus(res, 200);
    assert.equal(header(res, 'docker-content-digest'), m.digest);
    expectStatus(await as().head(`/v2/public/tool/blobs/${m.digest}`), 404);
    expectStatus(await as().get('/v2/public/tool/tags/list'), 200);

    const push = await as().post('/v2/public/tool/blobs/uploads/');
    expectOciError(push, 401, 'UNAUTHORIZED');
    assert.equal(header(push, 'www-authenticate'), 'Basic realm="wharf-test"');
    expectOciError(await getManifest(as(), 'team/app', 'v1'), 401, 'UNAUTHORIZED');
    // Anonymous access is per repository: the API root still asks for credentials.
    expectOciError(await as().get('/v2/'), 401, 'UNAUTHORIZED');
    // Wrong credentials are refused even where anonymous pull is allowed.
    expectOciError(
      await getManifest(as(basicAuth('alice', 'nope')), 'public/tool', 'v1'),
      401,
      'UNAUTHORIZED',
    );
  });

  void test('_catalog lists only repositories the caller may pull', async () => {
    const { as } = await registry({ access: rules });
    await pushImage(as(alice()), 'team/app', 'v1');
    await pushImage(as(alice()), 'team/db', 'v1');
    await pushImage(as(alice()), 'public/tool', 'v1');
    await pushImage(as(carol()), 'carol/secret', 'v1');

    const list = async (auth: string) => {
      const res = await as(auth).get('/v2/_catalog');
      expectStatus(res, 200);
      return bodyJson(res, CatalogSchema).repositories;
    };
    assert.deepEqual(await list(alice()), ['public/tool', 'team/app', 'team/db']);
    assert.deepEqual(await list(bob()), ['public/tool', 'team/app', 'team/db']);
    assert.deepEqual(await list(carol()), ['carol/secret', 'public/tool']);
    expectOciError(await as().get('/v2/_catalog'), 401, 'UNAUTHORIZED');

    // Paging runs over the filtered list.
    const first = await as(alice()).get('/v2/_catalog?n=2');
    assert.deepEqual(bodyJson(first, CatalogSchema).repositories, ['public/tool', 'team/app']);
    assert.match(header(first, 'link') ?? '', /last=team%2Fapp/);
    const second = await as(alice()).get('/v2/_catalog?n=2&last=team%2Fapp');
    assert.deepEqual(bodyJson(second, CatalogSchema).repositories, ['team/db']);
  });

  void test('a mount from a repository the caller cannot pull becomes a plain upload', async () => {
    const { as } = await registry({ access: rules });
    const secret = await pushBlob(as(carol()), 'carol/secret', randomBlob(256));
    const stolen = await as(alice()).post(
      `/v2/team/app/blobs/uploads/?mount=${secret.digest}&from=carol/secret`,
    );
    expectStatus(stolen, 202);
    const guessed = await as(alice()).post(`/v2/team/app/blobs/uploads/?mount=${secret.digest}`);
    expectStatus(guessed, 202);
    expectStatus(await as(alice()).head(`/v2/team/app/blobs/${secret.digest}`), 404);

    const own = await pushBlob(as(alice()), 'team/db', randomBlob(256));
    const mounted = await as(alice()).post(`/v2/team/app/blobs/uploads/?mount=${own.digest}&from=team/db`);
    expectStatus(mounted, 201);
  });

  void test('an encoded name is checked as the router decodes it', async () => {
    const { as } = await registry({
      access: { rules: [{ repositories: ['*-public'], users: ['alice'], actions: ['pull', 'push'] }] },
    });
    // `*` must not match `team%2Fx-public`, which the router serves as team/x-public.
    expectOciError(await as(alice()).post('/v2/team%2Fx-public/blobs/uploads/'), 403, 'DENIED');
    expectStatus(await as(alice()).post('/v2/x-public/blobs/uploads/'), 202);
  });
});

void describe('htpasswd: robot tokens', () => {
  void test('a robot token is a Basic password, limited to its globs and actions until it expires', async () => {
    const { t, as } = await registry({ access: rules });
    const robots = new RobotStore(t.driver);
    const { record, token } = await robots.create({
      name: 'ci',
      repositories: ['team/**'],
      actions: ['pull', 'push'],
      expiresInMs: 60_000,
    });
    const robot = basicAuth(record.name, token);
    expectStatus(await as(robot).get('/v2/'), 200);
    await pushImage(as(robot), 'team/ci-built', 'v1');
    expectStatus(await getManifest(as(robot), 'team/ci-built', 'v1'), 200);
    expectOciError(await as(robot).post('/v2/carol/x/blobs/uploads/'), 403, 'DENIED');
    // The name must match, and the token must be whole.
    expectOciError(await as(basicAuth('other', token)).get('/v2/'), 401, 'UNAUTHORIZED');
    expectOciError(await as(basicAuth('ci', `${token.slice(0, -1)}x`)).get('/v2/'), 401, 'UNAUTHORIZED');

    const expired = await robots.create(
      {
        name: 'old',
        repositories: ['**'],
        actions: ['pull'],
        expiresInMs: 60_000,
      },
      new Date(Date.now() - 120_000),
    );
    expectOciError(await as(basicAuth('old', expired.token)).get('/v2/'), 401, 'UNAUTHORIZED');

    // Another replica on the same storage accepts it too, until it is revoked.
    const replica = await registry({ access: rules }, t.driver);
    expectStatus(await replica.as(robot).get('/v2/'), 200);
    assert.equal(await robots.revoke(record.id), true);
    assert.equal(await robots.revoke(record.id), false);
    // A replica that has not cached the record sees the revocation at once (others within 30 s).
    const fresh = await registry({ access: rules }, t.driver);
    expectOciError(await fresh.as(robot).get('/v2/'), 401, 'UNAUTHORIZED');
  });

  void test('the stored record holds a hash of the secret, never the secret', async () => {
    const { t } = await registry();
    const robots = new RobotStore(t.driver);
    const { record, token } = await robots.create({
      repositories: ['**'],
      actions: ['pull'],
      expiresInMs: 1000,
    });
    const stored = (await t.driver.getContent(`/wharf/auth/robots/${record.id}.json`)).toString();
    const secret = token.split('_').slice(2).join('_');
    assert.ok(!stored.includes(secret));
    assert.match(stored, /"secret": "sha256:[0-9a-f]{64}"/);
    assert.deepEqual(
      (await robots.list()).map((r) => r.id),
      [record.id],
    );
  });
});

void describe('htpasswd: failed-login limit', () => {
  void test('after too many failures a user is refused with 429 and Retry-After, right password or not', async () => {
    const { as } = await registry({ ratelimit: { peruser: 3, peraddress: 100, window: '1m' } });
    for (let i = 0; i < 3; i++)
      expectOciError(await as(basicAuth('alice', `bad${i}`)).get('/v2/'), 401, 'UNAUTHORIZED');
    const limited = await as(alice()).get('/v2/');
    expectOciError(limited, 429, 'TOOMANYREQUESTS');
    assert.ok(Number(header(limited, 'retry-after')) > 0);
    // Other users are not affected.
    expectStatus(await as(bob()).get('/v2/'), 200);
  });

  void test('too many failures from one address block every user from it', async () => {
    const { as } = await registry({ ratelimit: { peruser: 100, peraddress: 4, window: '1m' } });
    for (const user of ['u1', 'u2', 'u3', 'u4']) {
      expectOciError(await as(basicAuth(user, 'x')).get('/v2/'), 401, 'UNAUTHORIZED');
    }
    expectOciError(await as(bob()).get('/v2/'), 429, 'TOOMANYREQUESTS');
  });
});

describe('client address', () => {
  test('X-Forwarded-For is not trusted, so it cannot dodge the per-address login limit', async () => {
    const t = await createTestApp();
    const seen: string[] = [];
    t.app.use((ctx) => {
      seen.push(ctx.ip);
      ctx.body = {};
    });
    await supertest(t.app.callback()).get('/not-a-route').set('X-Forwarded-For', '203.0.113.9');
    assert.equal(seen.length, 1);
    assert.notEqual(seen[0], '203.0.113.9', 'ctx.ip was taken from X-Forwarded-For');
  });
});
