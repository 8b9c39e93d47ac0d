// Bearer tokens from an external token server (auth.token): every way a token can be wrong, scopes per
// repository and action, anonymous pull, catalog filtering, and the challenges that tell clients what to ask.
import assert from 'node:assert/strict';
import { createSecretKey } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import supertest from 'supertest';
import { z } from 'zod';
import {
  fixtureDir,
  jwksOf,
  newEdDSA,
  newES256,
  newRS256,
  publicPem,
  signToken,
  tamperedToken,
  unsignedToken,
  type KeyPair,
  type TokenSpec,
} from '../helpers/auth.js';
import { createTestApp, type TestApp } from '../helpers/app.js';
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

const REALM = 'https://auth.example.test/token';
const es256 = newES256();
const rs256 = newRS256();
const eddsa = newEdDSA();
const stranger = newES256();

let dir: Awaited<ReturnType<typeof fixtureDir>>;
let t: TestApp;

before(async () => {
  dir = await fixtureDir();
  await writeFile(dir.path('bundle.pem'), publicPem(es256) + publicPem(rs256));
  await writeFile(dir.path('jwks.json'), await jwksOf([{ key: eddsa, kid: 'ed-1' }]));
  t = await createTestApp({
    auth: {
      token: {
        realm: REALM,
        service: 'test-service',
        issuer: 'test-issuer',
        rootcertbundle: dir.path('bundle.pem'),
        jwks: dir.path('jwks.json'),
      },
      access: {
        rules: [
          { repositories: ['public/**'], anonymous: true },
          { repositories: ['team/**'], users: ['alice'], actions: ['pull'] },
        ],
      },
    },
  });
});
after(async () => {
  await dir.cleanup();
});

const as = (token?: string): Client => {
  const agent = supertest.agent(t.app.callback());
  if (token !== undefined) agent.set('Authorization', `Bearer ${token}`);
  return agent;
};

const repo = (name: string, ...actions: string[]) => ({ type: 'repository', name, actions });
const token = (spec: Partial<TokenSpec> = {}) => signToken({ key: es256, ...spec });
const pushToken = (name: string) => token({ access: [repo(name, 'pull', 'push')] });

void describe('token auth: challenges', () => {
  void test('no token: 401 with a Bearer challenge naming realm, service and the scope needed', async () => {
    const cases = [
      { path: '/v2/', scope: undefined },
      { path: '/v2/team/app/manifests/v1', scope: 'repository:team/app:pull' },
      { path: '/v2/_catalog', scope: 'registry:catalog:*' },
    ];
    for (const c of cases) {
      const res = await as().get(c.path);
      expectOciError(res, 401, 'UNAUTHORIZED');
      const scope = c.scope === undefined ? '' : `,scope="${c.scope}"`;
      assert.equal(header(res, 'www-authenticate'), `Bearer realm="${REALM}",service="test-service"${scope}`);
    }
    const push = await as().post('/v2/team/app/blobs/uploads/');
    assert.match(header(push, 'www-authenticate') ?? '', /,scope="repository:team\/app:pull,push"$/);
    const del = await as().delete(`/v2/team/app/manifests/sha256:${'a'.repeat(64)}`);
    assert.match(header(del, 'www-authenticate') ?? '', /,scope="repository:team\/app:delete"$/);
  });

  void test('Basic credentials are not accepted where tokens are expected', async () => {
    const res = await supertest(t.app.callback()).get('/v2/').set('Authorization', 'Basic YWxpY2U6cHc=');
    expectOciError(res, 401, 'UNAUTHORIZED');
    assert.match(header(res, 'www-authenticate') ?? '', /^Bearer realm=/);
  });
});

void describe('token auth: tokens that are refused', () => {
  const ErrorBody = z.object({ errors: z.array(z.object({ message: z.string() })) });
  const cases: { name: string; reason: RegExp; make: () => Promise<string> | string }[] = [
    {
      name: 'expired (past the 60 s skew allowance)',
      reason: /: expired$/,
      make: () => token({ expiresIn: -120 }),
    },
    {
      name: 'for another service (wrong aud)',
      reason: /claim aud/,
      make: () => token({ audience: 'other-service' }),
    },
    { name: 'from another issuer', reason: /claim iss/, make: () => token({ issuer: 'evil-issuer' }) },
    { name: 'not valid yet (nbf in the future)', reason: /claim nbf/, make: () => token({ notBefore: 600 }) },
    {
      name: 'alg none',
      reason: /algorithm not allowed/,
      make: () =>
        unsignedToken({
          iss: 'test-issuer',
          aud: 'test-service',
          sub: 'alice',
          exp: Math.floor(Date.now() / 1000) + 300,
          access: [repo('team/app', 'pull', 'push')],
        }),
    },
    {
      name: 'tampered payload (signature of other claims)',
      reason: /bad signature/,
      make: async () => {
        const original = await token({ access: [repo('team/app', 'pull')] });
        return tamperedToken(original, {
          iss: 'test-issuer',
          aud: 'test-service',
          sub: 'alice',
          exp: Math.floor(Date.now() / 1000) + 300,
          access: [repo('team/app', 'pull', 'push')],
        });
      },
    },
    {
      name: 'signed by an untrusted key',
      reason: /untrusted key id/,
      make: () => signToken({ key: stranger }),
    },
    {
      name: 'untrusted key claiming a trusted kid',
      reason: /bad signature/,
      make: () => signToken({ key: stranger, kid: es256.kid }),
    },
    {
      name: 'no kid while several keys are trusted',
      reason: /no kid, x5c or jwk/,
      make: () => token({ kid: null }),
    },
    {
      name: 'HS256 with the public key as the secret (algorithm confusion)',
      reason: /algorithm not allowed/,
      make: () =>
        new SignJWT({ access: [repo('team/app', 'pull', 'push')] })
          .setProtectedHeader({ alg: 'HS256', kid: es256.kid })
          .setIssuer('test-issuer')
          .setAudience('test-service')
          .setExpirationTime('5m')
          .sign(createSecretKey(Buffer.from(publicPem(es256)))),
    },
    {
      name: 'no exp',
      reason: /claim exp missing/,
      make: () =>
        new SignJWT({ access: [repo('team/app', 'pull')] })
          .setProtectedHeader({ alg: 'ES256', kid: es256.kid })
          .setIssuer('test-issuer')
          .setAudience('test-service')
          .sign(es256.privateKey),
    },
    { name: 'garbage', reason: /ERR_JWS_INVALID/, make: () => 'not-a-jwt' },
    {
      name: 'malformed access claim',
      reason: /access claim/,
      make: () =>
        new SignJWT({ access: 'everything' })
          .setProtectedHeader({ alg: 'ES256', kid: es256.kid })
          .setIssuer('test-issuer')
          .setAudience('test-service')
          .setExpirationTime('5m')
          .sign(es256.privateKey),
    },
  ];
  for (const c of cases) {
    void test(`${c.name}: 401 with error="invalid_token"`, async () => {
      const res = await getManifest(as(await c.make()), 'team/app', 'v1');
      expectOciError(res, 401, 'UNAUTHORIZED');
      const message = bodyJson(res, ErrorBody).errors[0]?.message ?? '';
      assert.match(message, c.reason);
      const challenge = header(res, 'www-authenticate') ?? '';
      assert.match(challenge, /^Bearer realm=".*",service="test-service",scope="repository:team\/app:pull"/);
      assert.match(challenge, /,error="invalid_token"$/);
    });
  }

  void test('an expired token within the skew allowance is still accepted, as in Distribution', async () => {
    expectStatus(await as(await token({ expiresIn: -20 })).get('/v2/'), 200);
  });
});

void describe('token auth: scopes', () => {
  const keys: { name: string; key: KeyPair; kid?: string }[] = [
    { name: 'ES256 by libtrust kid', key: es256 },
    { name: 'RS256 by libtrust kid', key: rs256 },
    { name: 'EdDSA by the JWKS kid', key: eddsa, kid: 'ed-1' },
  ];
  for (const k of keys) {
    void test(`${k.name}: push and pull with the scopes granted`, async () => {
      const name = `team/${k.key.alg.toLowerCase()}`;
      const full = await signToken({
        key: k.key,
        access: [repo(name, 'pull', 'push')],
        ...(k.kid && { kid: k.kid }),
      });
      const m = await pushImage(as(full), name, 'v1');
      const res = await getManifest(as(full), name, 'v1');
      expectStatus(res, 200);
      assert.equal(header(res, 'docker-content-digest'), m.digest);
    });
  }

  void test('a pull-only token pushing: 401 insufficient_scope with DENIED, asking for pull,push', async () => {
    const pullOnly = await token({ access: [repo('team/app', 'pull')] });
    const res = await as(pullOnly).post('/v2/team/app/blobs/uploads/');
    expectOciError(res, 401, 'DENIED');
    assert.equal(
      header(res, 'www-authenticate'),
      `Bearer realm="${REALM}",service="test-service",scope="repository:team/app:pull,push",error="insufficient_scope"`,
    );
    const put = await as(pullOnly)
      .put('/v2/team/app/manifests/v1')
      .set('Content-Type', 'application/json')
      .send('{}');
    expectOciError(put, 401, 'DENIED');
    expectOciError(await as(pullOnly).delete(`/v2/team/app/blobs/sha256:${'b'.repeat(64)}`), 401, 'DENIED');
  });

  void test('a token scoped to another repository', async () => {
    const other = await pushToken('team/other');
    expectOciError(await getManifest(as(other), 'team/app', 'v1'), 401, 'DENIED');
    expectOciError(await as(other).post('/v2/team/app/blobs/uploads/'), 401, 'DENIED');
    expectStatus(await as(other).post('/v2/team/other/blobs/uploads/'), 202);
  });

  void test('the * action grants every action on its repository', async () => {
    const all = await token({ access: [repo('team/star', '*')] });
    const m = await pushImage(as(all), 'team/star', 'v1');
    expectStatus(await as(all).delete(`/v2/team/star/manifests/${m.digest}`), 202);
  });

  void test('anonymous pull where a rule allows it; push needs a token', async () => {
    const m = await pushImage(as(await pushToken('public/tool')), 'public/tool', 'v1');
    expectStatus(await getManifest(as(), 'public/tool', 'v1'), 200);
    // A token for something else still pulls what anyone may pull.
    expectStatus(await getManifest(as(await pushToken('team/x')), 'public/tool', m.digest), 200);
    const push = await as().post('/v2/public/tool/blobs/uploads/');
    expectOciError(push, 401, 'UNAUTHORIZED');
    assert.match(header(push, 'www-authenticate') ?? '', /scope="repository:public\/tool:pull,push"$/);
  });

  void test('_catalog needs registry:catalog:* and lists what the subject may pull', async () => {
    for (const name of ['public/a', 'team/b', 'secret/c'])
      await pushImage(as(await pushToken(name)), name, 'v1');
    const noCatalog = await token({ access: [repo('team/b', 'pull')] });
    const refused = await as(noCatalog).get('/v2/_catalog');
    expectOciError(refused, 401, 'DENIED');
    assert.match(
      header(refused, 'www-authenticate') ?? '',
      /scope="registry:catalog:\*",error="insufficient_scope"$/,
    );

    const catalog = { type: 'registry', name: 'catalog', actions: ['*'] };
    const list = async (subject: string) => {
      const res = await as(await token({ subject, access: [catalog] })).get('/v2/_catalog');
      expectStatus(res, 200);
      return bodyJson(res, CatalogSchema).repositories.filter((n) =>
        ['public/a', 'team/b', 'secret/c'].includes(n),
      );
    };
    assert.deepEqual(await list('alice'), ['public/a', 'team/b']);
    assert.deepEqual(await list('bob'), ['public/a']);
  });
});
