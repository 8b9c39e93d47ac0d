// Quarantine: pulls by tag from quarantined repositories need a passing, trusted verdict; pulls by
// digest and other repositories are untouched. Verdicts are pushed as the agent pushes them.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { JSONWebKeySet } from 'jose';
import type { Middleware } from 'koa';
import { pino } from 'pino';
import supertest from 'supertest';
import { ConfigError, parseConfig } from '../../config/load.js';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { RegistryClient, type Descriptor } from '../../src/client/registry-client.js';
import { createApp, type AppState } from '../../src/http/app.js';
import { createRegistry } from '../../src/registry/registry.js';
import { staticKeys } from '../../src/verify/decide.js';
import { createQuarantine, quarantineMiddleware } from '../../src/verify/quarantine.js';
import { TrustedKeys } from '../../src/verify/trusted-keys.js';
import {
  buildStatement,
  generateSigningKey,
  publicJwks,
  pushVerdict,
  signStatement,
  type SigningKey,
  type VerdictResult,
} from '../../src/verify/verdict.js';
import { fixtureDir } from '../helpers/auth.js';
import { freePort } from '../helpers/processes.js';
import {
  ACCEPT_ALL,
  configBlob,
  expectOciError,
  expectStatus,
  MT,
  ociIndex,
  ociManifest,
  randomBlob,
  sha256,
} from '../helpers/oci.js';

const logger = pino({ level: process.env.WHARF_TEST_LOG_LEVEL ?? 'silent' });
let dir: Awaited<ReturnType<typeof fixtureDir>>;
let trusted: SigningKey;
let stranger: SigningKey;
const servers: Server[] = [];

before(async () => {
  dir = await fixtureDir();
  trusted = (await generateSigningKey()).key;
  stranger = (await generateSigningKey()).key;
  await writeFile(dir.path('jwks.json'), JSON.stringify(publicJwks([trusted])));
});
after(async () => {
  for (const s of servers) s.close();
  await dir.cleanup();
});

async function listen(server: Server): Promise<string> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function serve(app: ReturnType<typeof createApp>): Server {
  const handle = app.callback();
  return createServer((req, res) => {
    void handle(req, res);
  });
}

/** The app with the quarantine guard, built from a `verification` config section as main.ts does. */
async function quarantinedRegistry(verification: Record<string, unknown> = {}) {
  const registry = createRegistry(createInMemoryDriver(), { deleteEnabled: true, manifestMaxSize: 4 << 20 });
  const config = parseConfig({
    verification: {
      quarantine: ['prod/*', 'release/**'],
      trustedkeys: dir.path('jwks.json'),
      ...verification,
    },
  }).config.verification;
  const quarantine = await createQuarantine(registry, config, logger);
  assert.ok(quarantine);
  const app = createApp({ registry, logger, hooks: { guards: [quarantine.middleware] } });
  const url = await listen(serve(app));
  return { url, http: supertest(url), client: new RegistryClient({ url }) };
}

/** Pushes an image (config + one layer) under `repo:tag`; returns its descriptor. */
async function pushImage(client: RegistryClient, repo: string, tag: string): Promise<Descriptor> {
  const config = configBlob();
  const layer = randomBlob(512);
  await client.pushBlob(repo, config, sha256(config));
  await client.pushBlob(repo, layer, sha256(layer));
  const m = ociManifest({
    config: { mediaType: MT.ociConfig, digest: sha256(config), size: config.length },
    layers: [{ mediaType: MT.ociLayer, digest: sha256(layer), size: layer.length }],
  });
  await client.putManifest(repo, tag, m.bytes, m.mediaType);
  return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
}

/** Signs and pushes a verdict as the agent does; `about` names another subject in the statement. */
async function pushVerdictFor(
  client: RegistryClient,
  repo: string,
  subject: Descriptor,
  result: VerdictResult,
  opts: { key?: SigningKey; about?: string; created?: Date; signedCreated?: Date } = {},
): Promise<string> {
  const key = opts.key ?? trusted;
  const statement = buildStatement({
    ...(opts.signedCreated && { created: opts.signedCreated }),
    subjectName: `registry.test/${repo}`,
    digest: opts.about ?? subject.digest,
    result,
    passedTests: result === 'PASSED' ? ['exit-code'] : [],
    failedTests: result === 'FAILED' ? ['exit-code', 'output'] : [],
    policy: 'default',
  });
  const envelope = await signStatement(statement, key);
  return pushVerdict(
    client,
    repo,
    subject,
    envelope,
    result,
    key.kid,
    opts.created ? { created: opts.created } : {},
  );
}

const pull = (http: ReturnType<typeof supertest>, repo: string, ref: string) =>
  http.get(`/v2/${repo}/manifests/${ref}`).set('Accept', ACCEPT_ALL);

const secondsAgo = (s: number) => new Date(Date.now() - s * 1000);

void describe('quarantine', () => {
  void test('a tag pull is refused until a PASSED verdict is attached; by digest it is allowed', async () => {
    const { http, client } = await quarantinedRegistry();
    const image = await pushImage(client, 'prod/app', 'v1');

    const refused = await pull(http, 'prod/app', 'v1');
    expectOciError(refused, 403, 'DENIED');
    const body = refused.body as { errors: { message: string; detail: { reason: string } }[] };
    assert.equal(
      body.errors.at(0)?.message,
      `image prod/app:v1 (${image.digest}) has no passing verification verdict yet`,
    );
    assert.equal(body.errors[0]?.detail.reason, 'no-verdict');
    expectStatus(await http.head('/v2/prod/app/manifests/v1'), 403);

    // The agent pulls by digest.
    expectStatus(await pull(http, 'prod/app', image.digest), 200);
    expectStatus(await http.head(`/v2/prod/app/manifests/${image.digest}`), 200);

    await pushVerdictFor(client, 'prod/app', image, 'PASSED');
    const allowed = await pull(http, 'prod/app', 'v1');
    expectStatus(allowed, 200);
    assert.equal(allowed.headers['docker-content-digest'], image.digest);
    expectStatus(await http.head('/v2/prod/app/manifests/v1'), 200);
  });

  void test('repositories outside the globs are untouched; `*` stays in one component, `**` does not', async () => {
    const { http, client } = await quarantinedRegistry();
    for (const repo of ['dev/app', 'prod/team/app', 'production/app']) {
      await pushImage(client, repo, 'v1');
      expectStatus(await pull(http, repo, 'v1'), 200);
    }
    for (const repo of ['release/a', 'release/a/b/c']) {
      await pushImage(client, repo, 'v1');
      expectOciError(await pull(http, repo, 'v1'), 403, 'DENIED');
    }
    // An unknown tag is still MANIFEST_UNKNOWN, not a refusal.
    expectOciError(await pull(http, 'prod/app', 'missing'), 404, 'MANIFEST_UNKNOWN');
  });

  void test('a FAILED verdict refuses, naming the failed tests', async () => {
    const { http, client } = await quarantinedRegistry();
    const image = await pushImage(client, 'prod/app', 'bad');
    await pushVerdictFor(client, 'prod/app', image, 'FAILED');
    const res = await pull(http, 'prod/app', 'bad');
    expectOciError(res, 403, 'DENIED');
    assert.match(
      (res.body as { errors: { message: string }[] }).errors[0]?.message ?? '',
      /has no passing verification verdict: verdict FAILED \(failed tests: exit-code, output\)$/,
    );
  });

  void test('the newest verdict decides: FAILED after PASSED refuses, PASSED after FAILED allows', async () => {
    const { http, client } = await quarantinedRegistry();
    const a = await pushImage(client, 'prod/app', 'a');
    await pushVerdictFor(client, 'prod/app', a, 'PASSED', { created: secondsAgo(20) });
    await pushVerdictFor(client, 'prod/app', a, 'FAILED', { created: secondsAgo(10) });
    expectOciError(await pull(http, 'prod/app', 'a'), 403, 'DENIED');

    const b = await pushImage(client, 'prod/app', 'b');
    await pushVerdictFor(client, 'prod/app', b, 'FAILED', { created: secondsAgo(20) });
    await pushVerdictFor(client, 'prod/app', b, 'PASSED', { created: secondsAgo(10) });
    expectStatus(await pull(http, 'prod/app', 'b'), 200);
  });

  void test('an old signed PASSED re-pushed with a later created annotation does not outrank a FAILED', async () => {
    const { http, client } = await quarantinedRegistry();
    const image = await pushImage(client, 'prod/app', 'v1');
    const passedAt = secondsAgo(30);
    await pushVerdictFor(client, 'prod/app', image, 'PASSED', { created: passedAt, signedCreated: passedAt });
    await pushVerdictFor(client, 'prod/app', image, 'FAILED', {
      created: secondsAgo(20),
      signedCreated: secondsAgo(20),
    });
    expectStatus(await pull(http, 'prod/app', 'v1'), 403);
    // The same signed statement under a manifest that claims to be newest: its annotation lies.
    await pushVerdictFor(client, 'prod/app', image, 'PASSED', {
      created: secondsAgo(1),
      signedCreated: passedAt,
    });
    const refused = await pull(http, 'prod/app', 'v1');
    expectOciError(refused, 403, 'DENIED');
  });

  void test('a verdict signed by an untrusted key, or about another image, does not count', async () => {
    const { http, client } = await quarantinedRegistry();
    const image = await pushImage(client, 'prod/app', 'v1');
    await pushVerdictFor(client, 'prod/app', image, 'PASSED', { key: stranger });
    const res = await pull(http, 'prod/app', 'v1');
    expectOciError(res, 403, 'DENIED');
    assert.match(
      (res.body as { errors: { message: string }[] }).errors[0]?.message ?? '',
      new RegExp(
        `signature does not verify with the trusted keys: signed by a key that is not trusted \\(keyid ${stranger.kid}\\)`,
      ),
    );

    const other = await pushImage(client, 'prod/app', 'other');
    await pushVerdictFor(client, 'prod/app', other, 'PASSED', { about: image.digest });
    const mismatch = await pull(http, 'prod/app', 'other');
    expectOciError(mismatch, 403, 'DENIED');
    assert.match(
      (mismatch.body as { errors: { message: string }[] }).errors[0]?.message ?? '',
      /verdict subject digest sha256:[0-9a-f]{64} does not match sha256:/,
    );
    // A valid verdict next to the untrusted one lets the image through.
    await pushVerdictFor(client, 'prod/app', image, 'PASSED', { created: secondsAgo(60) });
    expectStatus(await pull(http, 'prod/app', 'v1'), 200);
  });

  void test('a pass is cached for cachettl: a newer FAILED bites once it runs out', async () => {
    const { http, client } = await quarantinedRegistry({ cachettl: '300ms' });
    const image = await pushImage(client, 'prod/app', 'v1');
    await pushVerdictFor(client, 'prod/app', image, 'PASSED', { created: secondsAgo(5) });
    expectStatus(await pull(http, 'prod/app', 'v1'), 200);
    await pushVerdictFor(client, 'prod/app', image, 'FAILED');
    expectStatus(await pull(http, 'prod/app', 'v1'), 200);
    await new Promise((r) => setTimeout(r, 400));
    expectOciError(await pull(http, 'prod/app', 'v1'), 403, 'DENIED');
  });

  void test('an index passes on its own verdict, or when every linux/amd64 child passed', async () => {
    const { http, client } = await quarantinedRegistry();
    const amd64 = await pushImage(client, 'prod/multi', 'amd64');
    const arm64 = await pushImage(client, 'prod/multi', 'arm64');
    const index = ociIndex({
      manifests: [
        { ...amd64, platform: { architecture: 'amd64', os: 'linux' } },
        { ...arm64, platform: { architecture: 'arm64', os: 'linux' } },
      ],
    });
    await client.putManifest('prod/multi', 'v1', index.bytes, index.mediaType);
    const res = await pull(http, 'prod/multi', 'v1');
    expectOciError(res, 403, 'DENIED');
    assert.match(
      (res.body as { errors: { message: string }[] }).errors[0]?.message ?? '',
      new RegExp(`index child ${amd64.digest}: no verification verdict`),
    );
    await pushVerdictFor(client, 'prod/multi', amd64, 'PASSED');
    expectStatus(await pull(http, 'prod/multi', 'v1'), 200);
  });
});

void describe('quarantine configuration and keys', () => {
  void test('quarantine without trustedkeys is a config error naming the key', () => {
    assert.throws(
      () => parseConfig({ verification: { quarantine: ['prod/*'] } }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /verification\.trustedkeys: required when verification\.quarantine is set/);
        return true;
      },
    );
    assert.throws(
      () => parseConfig({ verification: { quarantine: ['Prod/*'], trustedkeys: 'x' } }),
      /not a repository glob/,
    );
    // Nothing quarantined: no guard at all.
    assert.equal(parseConfig({}).config.verification, undefined);
  });

  void test('an unreadable trusted-keys file stops the server; a URL that is down does not', async () => {
    const registry = createRegistry(createInMemoryDriver(), {
      deleteEnabled: true,
      manifestMaxSize: 4 << 20,
    });
    const section = (trustedkeys: string) =>
      parseConfig({ verification: { quarantine: ['prod/*'], trustedkeys } }).config.verification;
    await assert.rejects(
      createQuarantine(registry, section(dir.path('missing.json')), logger),
      /verification\.trustedkeys: .*missing\.json/,
    );
    const down = await createQuarantine(
      registry,
      section(`http://127.0.0.1:${await freePort()}/jwks.json`),
      logger,
    );
    assert.ok(down);
    // Pulls wait (503) until the keys can be had.
    const app = createApp({ registry, logger, hooks: { guards: [down.middleware] } });
    const url = await listen(serve(app));
    const http = supertest(url);
    const client = new RegistryClient({ url });
    const image = await pushImage(client, 'prod/app', 'v1');
    // No verdict needs no keys to refuse; one verdict does.
    expectOciError(await pull(http, 'prod/app', 'v1'), 403, 'DENIED');
    await pushVerdictFor(client, 'prod/app', image, 'PASSED');
    expectOciError(await pull(http, 'prod/app', 'v1'), 503, 'UNAVAILABLE');
  });

  void test('keys from a URL: a verdict by a newly added key is accepted after a refetch', async () => {
    let jwks: JSONWebKeySet = publicJwks([trusted]);
    let fetches = 0;
    const keysURL = await listen(
      createServer((_req, res) => {
        fetches++;
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify(jwks));
      }),
    );
    const keys = new TrustedKeys(`${keysURL}/.well-known/jwks.json`, { refreshMs: 60_000, minRefetchMs: 0 });
    const registry = createRegistry(createInMemoryDriver(), {
      deleteEnabled: true,
      manifestMaxSize: 4 << 20,
    });
    const guard = quarantineMiddleware(registry, {
      repositories: ['prod/*'],
      keys,
      cacheTtlMs: 30_000,
      logger,
    });
    const url = await listen(serve(createApp({ registry, logger, hooks: { guards: [guard] } })));
    const http = supertest(url);
    const client = new RegistryClient({ url });
    const image = await pushImage(client, 'prod/app', 'v1');
    await pushVerdictFor(client, 'prod/app', image, 'PASSED', { key: stranger });
    expectOciError(await pull(http, 'prod/app', 'v1'), 403, 'DENIED');
    assert.equal(fetches, 2, 'loaded once, fetched again for the unknown key');
    jwks = publicJwks([trusted, stranger]);
    expectStatus(await pull(http, 'prod/app', 'v1'), 200);
    assert.equal(fetches, 3);
  });

  void test('a tag moved to an unverified image between the check and the read is refused', async () => {
    const registry = createRegistry(createInMemoryDriver(), {
      deleteEnabled: true,
      manifestMaxSize: 4 << 20,
    });
    let swap: (() => Promise<void>) | undefined;
    // Runs after the guard's check, before the route reads the tag: a push that lands in between.
    const racingPush: Middleware<AppState> = async (_ctx, next) => {
      await swap?.();
      swap = undefined;
      await next();
    };
    const guard = quarantineMiddleware(registry, {
      repositories: ['prod/*'],
      keys: staticKeys(publicJwks([trusted])),
      cacheTtlMs: 30_000,
      logger,
    });
    const url = await listen(serve(createApp({ registry, logger, hooks: { guards: [guard, racingPush] } })));
    const http = supertest(url);
    const client = new RegistryClient({ url });
    const good = await pushImage(client, 'prod/app', 'v1');
    await pushVerdictFor(client, 'prod/app', good, 'PASSED');
    const bad = await pushImage(client, 'prod/app', 'bad');
    const badBytes = (await client.getManifest('prod/app', bad.digest)).bytes;
    swap = async () => {
      await registry.manifests.put('prod/app', { tag: 'v1' }, badBytes, MT.ociManifest);
    };
    const res = await pull(http, 'prod/app', 'v1');
    expectOciError(res, 403, 'DENIED');
    assert.equal(res.headers['docker-content-digest'], undefined);
    assert.match(
      (res.body as { errors: { message: string }[] }).errors.at(0)?.message ?? '',
      new RegExp(`image prod/app:v1 \\(${bad.digest}\\) has no passing verification verdict yet`),
    );
    // Moved to another verified image instead: served, with its own digest.
    const goodBytes = (await client.getManifest('prod/app', good.digest)).bytes;
    await registry.manifests.put('prod/app', { tag: 'v1' }, goodBytes, MT.ociManifest);
    const good2 = await pushImage(client, 'prod/app', 'good2');
    await pushVerdictFor(client, 'prod/app', good2, 'PASSED');
    const good2Bytes = (await client.getManifest('prod/app', good2.digest)).bytes;
    swap = async () => {
      await registry.manifests.put('prod/app', { tag: 'v1' }, good2Bytes, MT.ociManifest);
    };
    const ok = await pull(http, 'prod/app', 'v1');
    expectStatus(ok, 200);
    assert.equal(ok.headers['docker-content-digest'], good2.digest);
  });

  void test('static keys work without any file (as promote passes them)', async () => {
    const registry = createRegistry(createInMemoryDriver(), {
      deleteEnabled: true,
      manifestMaxSize: 4 << 20,
    });
    const guard = quarantineMiddleware(registry, {
      repositories: ['**'],
      keys: staticKeys(publicJwks([trusted])),
      cacheTtlMs: 30_000,
      logger,
    });
    const url = await listen(serve(createApp({ registry, logger, hooks: { guards: [guard] } })));
    const client = new RegistryClient({ url });
    const image = await pushImage(client, 'any/where', 'v1');
    expectOciError(await pull(supertest(url), 'any/where', 'v1'), 403, 'DENIED');
    await pushVerdictFor(client, 'any/where', image, 'PASSED');
    expectStatus(await pull(supertest(url), 'any/where', 'v1'), 200);
  });
});
