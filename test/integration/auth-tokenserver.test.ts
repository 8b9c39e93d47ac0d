// The built-in token server: Basic login (htpasswd, robot tokens) at /auth/token, grants limited by the
// access rules, and the tokens it signs accepted by the registry it serves.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { exportJWK } from 'jose';
import supertest from 'supertest';
import { z } from 'zod';
import { RobotStore } from '../../src/auth/robots.js';
import {
  basicAuth,
  decodeClaims,
  fixtureDir,
  newEdDSA,
  newES256,
  privatePem,
  randomPassword,
  writeHtpasswd,
} from '../helpers/auth.js';
import { createTestApp, type TestApp, type TestAppOptions } from '../helpers/app.js';
import {
  CatalogSchema,
  bodyJson,
  expectOciError,
  expectStatus,
  getManifest,
  header,
  pushImage,
  type Client,
} from '../helpers/oci.js';

const users = { alice: randomPassword(), bob: randomPassword() };
const signing = newES256();
let dir: Awaited<ReturnType<typeof fixtureDir>>;

type AuthSection = NonNullable<TestAppOptions['auth']>;
const access: AuthSection['access'] = {
  rules: [
    { repositories: ['team/**'], users: ['alice'], actions: ['pull', 'push'] },
    { repositories: ['team/**'], users: ['bob'], actions: ['pull'] },
    { repositories: ['public/**'], users: ['*'], actions: ['pull', 'push'], anonymous: true },
  ],
};

before(async () => {
  dir = await fixtureDir();
  await writeHtpasswd(dir.path('htpasswd'), users);
  await writeFile(dir.path('signing.pem'), privatePem(signing));
});
after(async () => {
  await dir.cleanup();
});

async function registry(extra: Partial<TestAppOptions> = {}): Promise<TestApp> {
  return createTestApp({
    auth: {
      tokenserver: { enabled: true, htpasswd: dir.path('htpasswd'), signingkey: dir.path('signing.pem') },
      access,
    },
    ...extra,
  });
}

const TokenResponse = z.object({
  token: z.string(),
  access_token: z.string(),
  expires_in: z.number(),
  issued_at: z.string(),
});

const client = (t: TestApp, authorization?: string): Client => {
  const agent = supertest.agent(t.app.callback());
  if (authorization !== undefined) agent.set('Authorization', authorization);
  return agent;
};

async function fetchToken(t: TestApp, scope: string | string[], authorization?: string): Promise<string> {
  const query = new URLSearchParams({ service: 'wharf' });
  for (const s of [scope].flat()) query.append('scope', s);
  const res = await client(t, authorization).get(`/auth/token?${query.toString()}`);
  expectStatus(res, 200);
  return bodyJson(res, TokenResponse).token;
}

const bearer = (token: string) => `Bearer ${token}`;
const alice = () => basicAuth('alice', users.alice);
const bob = () => basicAuth('bob', users.bob);

void describe('token server: issuing', () => {
  void test('the registry challenges with the built-in realm, derived from the request or http.host', async () => {
    const t = await registry();
    const res = await client(t).get('/v2/team/app/tags/list').set('Host', 'registry.test:5000');
    expectOciError(res, 401, 'UNAUTHORIZED');
    assert.equal(
      header(res, 'www-authenticate'),
      'Bearer realm="http://registry.test:5000/auth/token",service="wharf",scope="repository:team/app:pull"',
    );
    const external = await registry({ externalURL: 'https://registry.example.com/' });
    const res2 = await client(external).get('/v2/');
    assert.equal(
      header(res2, 'www-authenticate'),
      'Bearer realm="https://registry.example.com/auth/token",service="wharf"',
    );
  });

  void test('a user gets the requested actions the rules allow, no more, in a token the registry accepts', async () => {
    const t = await registry();
    const res = await client(t, alice()).get(
      '/auth/token?service=wharf&scope=repository:team/app:pull,push,delete&scope=repository:other/x:pull',
    );
    expectStatus(res, 200);
    assert.equal(header(res, 'cache-control'), 'no-store');
    const body = bodyJson(res, TokenResponse);
    assert.equal(body.token, body.access_token);
    assert.equal(body.expires_in, 300);
    const claims = decodeClaims(body.token);
    assert.equal(claims.iss, 'wharf');
    assert.equal(claims.aud, 'wharf');
    assert.equal(claims.sub, 'alice');
    assert.equal(Number(claims.exp) - Number(claims.iat), 300);
    assert.deepEqual(claims.access, [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]);

    const m = await pushImage(client(t, bearer(body.token)), 'team/app', 'v1');
    const pulled = await getManifest(client(t, bearer(body.token)), 'team/app', 'v1');
    expectStatus(pulled, 200);
    assert.equal(header(pulled, 'docker-content-digest'), m.digest);
    expectOciError(
      await client(t, bearer(body.token)).delete(`/v2/team/app/manifests/${m.digest}`),
      401,
      'DENIED',
    );
  });

  void test('a pull-only user gets a pull token; its push is refused with insufficient_scope', async () => {
    const t = await registry();
    const token = await fetchToken(t, 'repository:team/app:pull,push', bob());
    assert.deepEqual(decodeClaims(token).access, [
      { type: 'repository', name: 'team/app', actions: ['pull'] },
    ]);
    const res = await client(t, bearer(token)).post('/v2/team/app/blobs/uploads/');
    expectOciError(res, 401, 'DENIED');
    assert.match(header(res, 'www-authenticate') ?? '', /error="insufficient_scope"$/);
  });

  void test('without credentials: an anonymous token with what anonymous rules allow', async () => {
    const t = await registry();
    const token = await fetchToken(t, ['repository:public/tool:pull,push', 'repository:team/app:pull']);
    const claims = decodeClaims(token);
    assert.equal(claims.sub, '');
    assert.deepEqual(claims.access, [{ type: 'repository', name: 'public/tool', actions: ['pull'] }]);
  });

  void test('wrong credentials: 401 with a Basic challenge; unknown service: 400', async () => {
    const t = await registry();
    const res = await client(t, basicAuth('alice', 'wrong')).get('/auth/token?service=wharf');
    expectOciError(res, 401, 'UNAUTHORIZED');
    assert.equal(header(res, 'www-authenticate'), 'Basic realm="wharf"');
    expectOciError(await client(t, alice()).get('/auth/token?service=other'), 400, 'UNSUPPORTED');
  });

  void test('docker login: credentials and no scope give a token for the API root', async () => {
    const t = await registry();
    const token = await fetchToken(t, [], alice());
    assert.deepEqual(decodeClaims(token).access, []);
    expectStatus(await client(t, bearer(token)).get('/v2/'), 200);
  });

  void test('the OAuth2 password grant (POST) that containerd uses', async () => {
    const t = await registry();
    const res = await client(t).post('/auth/token').type('form').send({
      grant_type: 'password',
      service: 'wharf',
      client_id: 'containerd',
      username: 'alice',
      password: users.alice,
      scope: 'repository:team/app:pull repository:team/db:push',
    });
    expectStatus(res, 200);
    const body = bodyJson(
      res,
      z.object({ access_token: z.string(), scope: z.string(), expires_in: z.number() }),
    );
    assert.equal(body.scope, 'repository:team/app:pull repository:team/db:push');
    expectStatus(await client(t, bearer(body.access_token)).get('/v2/team/app/tags/list'), 404);

    const wrong = await client(t)
      .post('/auth/token')
      .type('form')
      .send({ grant_type: 'password', username: 'alice', password: 'x' });
    expectOciError(wrong, 401, 'UNAUTHORIZED');
    const refresh = await client(t)
      .post('/auth/token')
      .type('form')
      .send({ grant_type: 'refresh_token', refresh_token: 'x' });
    expectOciError(refresh, 400, 'UNSUPPORTED');
  });

  void test('the catalog scope goes to logged-in users; the list is filtered by the rules', async () => {
    const t = await registry();
    const pushAs = async (name: string) =>
      pushImage(client(t, bearer(await fetchToken(t, `repository:${name}:pull,push`, alice()))), name, 'v1');
    await pushAs('team/app');
    await pushAs('public/tool');
    const robots = new RobotStore(t.driver);
    const { token: robotToken } = await robots.create({
      name: 'ci',
      repositories: ['elsewhere/*'],
      actions: ['pull', 'push'],
      expiresInMs: 60_000,
    });
    const robotBearer = bearer(
      await fetchToken(t, 'repository:elsewhere/x:pull,push', basicAuth('ci', robotToken)),
    );
    await pushImage(client(t, robotBearer), 'elsewhere/x', 'v1');

    const list = async (authorization?: string) => {
      const token = await fetchToken(t, 'registry:catalog:*', authorization);
      const res = await client(t, bearer(token)).get('/v2/_catalog');
      return res;
    };
    const forAlice = await list(alice());
    expectStatus(forAlice, 200);
    assert.deepEqual(bodyJson(forAlice, CatalogSchema).repositories, ['public/tool', 'team/app']);
    const forRobot = await list(basicAuth('ci', robotToken));
    assert.deepEqual(bodyJson(forRobot, CatalogSchema).repositories, ['elsewhere/x', 'public/tool']);
    // An anonymous token holds no catalog scope.
    expectOciError(await list(), 401, 'DENIED');
  });

  void test('a robot token logs in at the token server and gets only its own grant', async () => {
    const t = await registry();
    const { record, token } = await new RobotStore(t.driver).create({
      name: 'deployer',
      repositories: ['team/app'],
      actions: ['pull'],
      expiresInMs: 60_000,
    });
    const issued = await fetchToken(
      t,
      ['repository:team/app:pull,push', 'repository:team/db:pull'],
      basicAuth('deployer', token),
    );
    const claims = decodeClaims(issued);
    assert.equal(claims.sub, `robot:${record.id}`);
    assert.deepEqual(claims.access, [{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
  });

  void test('failed logins at the token server are limited too', async () => {
    const t = await registry({
      auth: {
        tokenserver: { enabled: true, htpasswd: dir.path('htpasswd'), signingkey: dir.path('signing.pem') },
        ratelimit: { peruser: 2, peraddress: 50, window: '1m' },
      },
    });
    for (let i = 0; i < 2; i++) {
      expectOciError(
        await client(t, basicAuth('alice', 'bad')).get('/auth/token?service=wharf'),
        401,
        'UNAUTHORIZED',
      );
    }
    const res = await client(t, alice()).get('/auth/token?service=wharf');
    expectOciError(res, 429, 'TOOMANYREQUESTS');
    assert.ok(Number(header(res, 'retry-after')) > 0);
  });

  void test('a private JWK (Ed25519) signs EdDSA tokens; issuer, service and expiration are configurable', async () => {
    const ed = newEdDSA();
    await writeFile(dir.path('signing.jwk'), JSON.stringify(await exportJWK(ed.privateKey)));
    const t = await registry({
      auth: {
        token: { service: 'registry.test', issuer: 'wharf-test' },
        tokenserver: {
          enabled: true,
          htpasswd: dir.path('htpasswd'),
          signingkey: dir.path('signing.jwk'),
          expiration: '90s',
        },
      },
    });
    const res = await client(t, alice()).get('/auth/token?service=registry.test&scope=repository:a/b:pull');
    const token = bodyJson(res, TokenResponse);
    assert.equal(token.expires_in, 90);
    const headerJson = JSON.parse(Buffer.from(token.token.split('.')[0] ?? '', 'base64url').toString()) as {
      alg: string;
    };
    assert.equal(headerJson.alg, 'EdDSA');
    assert.equal(decodeClaims(token.token).iss, 'wharf-test');
    expectStatus(await client(t, bearer(token.token)).get('/v2/a/b/tags/list'), 404);
    // Tokens of another Wharf (another key) are not accepted here.
    const other = await registry();
    const foreign = await fetchToken(other, 'repository:a/b:pull', alice());
    expectOciError(await client(t, bearer(foreign)).get('/v2/a/b/tags/list'), 401, 'UNAUTHORIZED');
  });
});
