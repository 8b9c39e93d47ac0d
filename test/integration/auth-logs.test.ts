// Logs never hold a password, token or key: every auth flow runs with Wharf's logger at trace level,
// and the captured lines are scanned for every secret used, in every encoding it travelled in.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import supertest from 'supertest';
import { z } from 'zod';
import { RobotStore } from '../../src/auth/robots.js';
import {
  basicAuth,
  capturingLogger,
  fixtureDir,
  newES256,
  privatePem,
  randomPassword,
  secretForms,
  tamperedToken,
  writeHtpasswd,
} from '../helpers/auth.js';
import { createTestApp } from '../helpers/app.js';
import { expectStatus, getManifest, pushImage, type Client } from '../helpers/oci.js';

const password = randomPassword();
const wrongPassword = randomPassword();
const signing = newES256();
let dir: Awaited<ReturnType<typeof fixtureDir>>;

before(async () => {
  dir = await fixtureDir();
  await writeHtpasswd(dir.path('htpasswd'), { alice: password });
  await writeFile(dir.path('signing.pem'), privatePem(signing));
});
after(async () => {
  await dir.cleanup();
});

const TokenResponse = z.object({ token: z.string() });

void test('no password, robot token, bearer token or key appears in any log line', async () => {
  const { logger, text } = capturingLogger();
  const secrets: string[] = [password, wrongPassword, privatePem(signing).split('\n')[1] ?? ''];
  const as = (app: { callback: () => Parameters<typeof supertest>[0] }, authorization?: string): Client => {
    const agent = supertest.agent(app.callback());
    if (authorization !== undefined) agent.set('Authorization', authorization);
    return agent;
  };

  // Basic against htpasswd: success, failure, a robot token, the failed-login limit.
  const basic = await createTestApp({
    logger,
    auth: {
      htpasswd: { realm: 'r', path: dir.path('htpasswd') },
      ratelimit: { peruser: 2, peraddress: 100, window: '1m' },
    },
  });
  const { token: robot } = await new RobotStore(basic.driver).create({
    name: 'ci',
    repositories: ['**'],
    actions: ['pull', 'push'],
    expiresInMs: 60_000,
  });
  secrets.push(robot);
  await pushImage(as(basic.app, basicAuth('alice', password)), 'logs/basic', 'v1');
  expectStatus(await getManifest(as(basic.app, basicAuth('ci', robot)), 'logs/basic', 'v1'), 200);
  for (let i = 0; i < 3; i++) await as(basic.app, basicAuth('alice', wrongPassword)).get('/v2/');

  // The token server: GET with Basic, the POST password grant, a robot, then the tokens in use.
  const served = await createTestApp({
    logger,
    auth: {
      tokenserver: { enabled: true, htpasswd: dir.path('htpasswd'), signingkey: dir.path('signing.pem') },
    },
  });
  const { token: robot2 } = await new RobotStore(served.driver).create({
    name: 'ci2',
    repositories: ['**'],
    actions: ['pull'],
    expiresInMs: 60_000,
  });
  secrets.push(robot2);
  const get = await as(served.app, basicAuth('alice', password)).get(
    '/auth/token?service=wharf&scope=repository:logs/token:pull,push&account=alice',
  );
  const token = z.object({ token: z.string() }).parse(get.body).token;
  const post = await as(served.app)
    .post('/auth/token')
    .type('form')
    .send({ grant_type: 'password', username: 'alice', password, scope: 'repository:logs/token:pull' });
  const robotGet = await as(served.app, basicAuth('ci2', robot2)).get(
    '/auth/token?service=wharf&scope=repository:logs/token:pull',
  );
  secrets.push(
    token,
    TokenResponse.parse(robotGet.body).token,
    z.object({ access_token: z.string() }).parse(post.body).access_token,
  );
  await as(served.app, basicAuth('alice', wrongPassword)).get('/auth/token?service=wharf');
  await pushImage(as(served.app, `Bearer ${token}`), 'logs/token', 'v1');
  const forged = tamperedToken(token, { sub: 'mallory' });
  secrets.push(forged);
  await as(served.app, `Bearer ${forged}`).get('/v2/');

  const logs = text();
  // The scan means something only if the flows were logged.
  for (const message of [
    'login failed',
    'login refused: too many failures',
    'token issued',
    'token rejected',
    'request',
  ]) {
    assert.ok(logs.includes(`"msg":"${message}"`), `expected a "${message}" line in the logs`);
  }
  for (const secret of secrets) {
    assert.ok(secret.length >= 16);
    for (const form of secretForms(secret)) assert.ok(!logs.includes(form), 'a secret appears in the logs');
    // A JWT's signature alone is as good as a leak of the token's integrity.
    const signature = secret.split('.')[2];
    if (signature !== undefined && signature.length > 16) assert.ok(!logs.includes(signature));
  }
  for (const [user, pw] of [
    ['alice', password],
    ['alice', wrongPassword],
    ['ci', robot],
  ] as const) {
    assert.ok(
      !logs.includes(Buffer.from(`${user}:${pw}`).toString('base64')),
      'Basic credentials in the logs',
    );
  }
});
