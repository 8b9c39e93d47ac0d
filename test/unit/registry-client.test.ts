// RegistryClient against the real app on loopback (open, htpasswd, token server) and against a small
// fake registry for what Wharf itself never answers (paging, unfiltered referrers, no referrers API).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { RegistryClient, RegistryError, parseChallenge } from '../../src/client/registry-client.js';
import { createTestApp, type TestAppOptions } from '../helpers/app.js';
import { fixtureDir, newES256, privatePem, randomPassword, writeHtpasswd } from '../helpers/auth.js';
import { configBlob, EMPTY_JSON, MT, ociManifest, randomBlob, sha256 } from '../helpers/oci.js';

const users = { alice: randomPassword() };
let dir: Awaited<ReturnType<typeof fixtureDir>>;
const servers: Server[] = [];

before(async () => {
  dir = await fixtureDir();
  await writeHtpasswd(dir.path('htpasswd'), users);
  await writeFile(dir.path('signing.pem'), privatePem(newES256()));
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

/** The app on loopback; `log` records "METHOD path" of every request the registry saw. */
async function wharf(auth?: TestAppOptions['auth']) {
  const t = await createTestApp(auth ? { auth } : {});
  const log: string[] = [];
  const handle = t.app.callback();
  const url = await listen(
    createServer((req, res) => {
      log.push(`${req.method ?? ''} ${req.url ?? ''}`);
      void handle(req, res);
    }),
  );
  return { url, log, registry: t.registry };
}

/** Pushes an image (config + one layer) with the client; returns its manifest. */
async function pushImage(client: RegistryClient, repo: string, tag: string) {
  const config = configBlob();
  const layer = randomBlob(2048);
  await client.pushBlob(repo, config, sha256(config));
  await client.pushBlob(
    repo,
    Readable.from([layer.subarray(0, 1000), layer.subarray(1000)]),
    sha256(layer),
    layer.length,
  );
  const m = ociManifest({
    config: { mediaType: MT.ociConfig, digest: sha256(config), size: config.length },
    layers: [{ mediaType: MT.ociLayer, digest: sha256(layer), size: layer.length }],
  });
  const digest = await client.putManifest(repo, tag, m.bytes, m.mediaType);
  return { manifest: m, digest, layer, config };
}

void describe('RegistryClient on an open registry', () => {
  void test('blobs (buffer and stream), manifests by tag and digest, HEAD, mount, referrers', async () => {
    const { url, log } = await wharf();
    const client = new RegistryClient({ url: `${url}/` });
    assert.equal(client.url, url);
    const { manifest, digest, layer } = await pushImage(client, 'team/app', 'v1');
    assert.equal(digest, manifest.digest);
    assert.ok(await client.blobExists('team/app', sha256(layer)));
    assert.ok(!(await client.blobExists('team/app', sha256('nope'))));
    assert.deepEqual(await client.getBlob('team/app', sha256(layer)), layer);
    await assert.rejects(client.getBlob('team/app', sha256(layer), 100), /more than the 100/);
    const streamed: Buffer[] = [];
    for await (const chunk of await client.openBlob('team/app', sha256(layer)))
      streamed.push(chunk as Buffer);
    assert.deepEqual(Buffer.concat(streamed), layer);

    const got = await client.getManifest('team/app', 'v1');
    assert.deepEqual(got.bytes, manifest.bytes);
    assert.equal(got.digest, digest);
    assert.equal(got.mediaType, MT.ociManifest);
    assert.deepEqual(await client.headManifest('team/app', 'v1'), {
      digest,
      mediaType: MT.ociManifest,
      size: manifest.bytes.length,
    });
    assert.equal(await client.headManifest('team/app', 'missing'), undefined);
    await assert.rejects(client.getManifest('team/app', 'missing'), (err: unknown) => {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'MANIFEST_UNKNOWN');
      return true;
    });

    // Mounts: 201 links the blob; an unknown one answers 202, whose session the client cancels.
    assert.equal(await client.mountBlob('prod/app', sha256(layer), 'team/app'), true);
    assert.ok(await client.blobExists('prod/app', sha256(layer)));
    assert.equal(await client.mountBlob('prod/app', sha256('absent'), 'team/app'), false);
    assert.ok(
      log.some((l) => l.startsWith('DELETE /v2/prod/app/blobs/uploads/')),
      log.join('\n'),
    );

    // Referrers, filtered by artifact type.
    await client.pushBlob('team/app', EMPTY_JSON, sha256(EMPTY_JSON));
    const subject = { mediaType: MT.ociManifest, digest, size: manifest.bytes.length };
    for (const artifactType of ['application/x.a', 'application/x.b']) {
      const art = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MT.ociManifest,
          artifactType,
          config: { mediaType: MT.ociEmpty, digest: sha256(EMPTY_JSON), size: 2 },
          layers: [],
          subject,
          annotations: { k: artifactType },
        }),
      );
      await client.putManifest('team/app', sha256(art), art, MT.ociManifest);
    }
    assert.equal((await client.referrers('team/app', digest)).manifests.length, 2);
    const filtered = await client.referrers('team/app', digest, 'application/x.b');
    assert.deepEqual(
      filtered.manifests.map((d) => d.annotations),
      [{ k: 'application/x.b' }],
    );
  });

  void test('a digest that does not match the content is refused', async () => {
    const { url } = await wharf();
    const client = new RegistryClient({ url });
    const data = randomBlob(100);
    await assert.rejects(client.pushBlob('team/app', data, sha256('other')), (err: unknown) => {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.code, 'DIGEST_INVALID');
      return true;
    });
  });
});

void describe('RegistryClient authentication', () => {
  void test('Basic: credentials are sent after the challenge; without them a 401 RegistryError', async () => {
    const { url } = await wharf({ htpasswd: { realm: 'test', path: dir.path('htpasswd') } });
    const client = new RegistryClient({ url, username: 'alice', password: users.alice });
    const { digest } = await pushImage(client, 'team/app', 'v1');
    assert.equal((await client.getManifest('team/app', 'v1')).digest, digest);
    await assert.rejects(new RegistryClient({ url }).getManifest('team/app', 'v1'), (err: unknown) => {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.status, 401);
      assert.equal(err.code, 'UNAUTHORIZED');
      return true;
    });
    const wrong = new RegistryClient({ url, username: 'alice', password: 'wrong' });
    await assert.rejects(wrong.getManifest('team/app', 'v1'), /401 UNAUTHORIZED/);
  });

  void test('Bearer: tokens from the realm, cached per scope; a mount also asks for pull on its source', async () => {
    const { url, log } = await wharf({
      tokenserver: { enabled: true, htpasswd: dir.path('htpasswd'), signingkey: dir.path('signing.pem') },
      access: {
        rules: [
          { repositories: ['src/**'], users: ['alice'], actions: ['pull', 'push'] },
          { repositories: ['dst/**'], users: ['alice'], actions: ['pull', 'push'] },
        ],
      },
    });
    const client = new RegistryClient({ url, username: 'alice', password: users.alice });
    const { layer, digest } = await pushImage(client, 'src/app', 'v1');
    const tokenRequests = () => log.filter((l) => l.startsWith('GET /auth/token')).length;
    const before = tokenRequests();
    await client.getManifest('src/app', 'v1');
    await client.getManifest('src/app', digest);
    assert.equal(tokenRequests(), before + 1, 'one pull token, reused');
    // The challenge names only dst/app; without pull on src/app in the token, Wharf would not mount.
    assert.equal(await client.mountBlob('dst/app', sha256(layer), 'src/app'), true);
    const mountToken = log.filter((l) => l.startsWith('GET /auth/token')).at(-1) ?? '';
    assert.match(decodeURIComponent(mountToken), /scope=repository:src\/app:pull/);

    const anonymous = new RegistryClient({ url });
    await assert.rejects(anonymous.getManifest('src/app', 'v1'), (err: unknown) => {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.status, 401);
      return true;
    });
  });
});

/** A scripted registry: each handler answers one path; unknown paths 404. */
async function fake(handler: (req: IncomingMessage, res: ServerResponse) => boolean) {
  return listen(
    createServer((req, res) => {
      if (!handler(req, res)) {
        res.statusCode = 404;
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ errors: [{ code: 'NOT_FOUND', message: 'nope' }] }));
      }
    }),
  );
}

const entry = (n: number, artifactType: string) => ({
  mediaType: MT.ociManifest,
  digest: sha256(String(n)),
  size: n,
  artifactType,
});

void describe('RegistryClient against other registries', () => {
  void test('referrers: every page is read; filtered here when the registry did not', async () => {
    const url = await fake((req, res) => {
      const u = new URL(req.url ?? '', 'http://x');
      if (!u.pathname.startsWith('/v2/a/referrers/')) return false;
      res.setHeader('Content-Type', MT.ociIndex);
      if (u.searchParams.get('last') === null) {
        res.setHeader('Link', `<${u.pathname}?last=1>; rel="next"`);
        res.end(JSON.stringify({ schemaVersion: 2, manifests: [entry(1, 'x'), entry(2, 'y')] }));
      } else {
        res.end(JSON.stringify({ schemaVersion: 2, manifests: [entry(3, 'x')] }));
      }
      return true;
    });
    const client = new RegistryClient({ url });
    const subject = sha256('s');
    assert.equal((await client.referrers('a', subject)).manifests.length, 3);
    assert.deepEqual(
      (await client.referrers('a', subject, 'x')).manifests.map((d) => d.size),
      [1, 3],
    );
  });

  void test('referrers: a registry without the API is read through the sha256-<hex> tag', async () => {
    const subject = sha256('s');
    const url = await fake((req, res) => {
      if (req.url !== `/v2/a/manifests/${subject.replace(':', '-')}`) return false;
      res.setHeader('Content-Type', MT.ociIndex);
      res.end(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MT.ociIndex,
          manifests: [entry(1, 'x'), entry(2, 'y')],
        }),
      );
      return true;
    });
    const client = new RegistryClient({ url });
    assert.deepEqual(
      (await client.referrers('a', subject, 'y')).manifests.map((d) => d.size),
      [2],
    );
    assert.deepEqual((await client.referrers('b', subject)).manifests, []);
  });

  void test('content that does not match its digest is refused', async () => {
    const url = await fake((req, res) => {
      res.setHeader('Content-Type', MT.ociManifest);
      if (req.url?.includes('/manifests/')) res.end('{"schemaVersion":2}');
      else res.end('tampered');
      return true;
    });
    const client = new RegistryClient({ url });
    await assert.rejects(client.getManifest('a', sha256('x')), /digest/);
    await assert.rejects(client.getBlob('a', sha256('x')), /digest/);
  });

  void test('an expired token is renewed', async () => {
    let issued = 0;
    const url = await fake((req, res) => {
      if (req.url?.startsWith('/token')) {
        issued++;
        res.end(JSON.stringify({ access_token: `t${issued}`, expires_in: 1 }));
        return true;
      }
      if (req.headers.authorization !== `Bearer t${issued}` || issued === 0) {
        res.statusCode = 401;
        res.setHeader('WWW-Authenticate', `Bearer realm="/token",service="fake",scope="repository:a:pull"`);
        res.end();
        return true;
      }
      res.statusCode = 200;
      res.end();
      return true;
    });
    const client = new RegistryClient({ url });
    assert.ok(await client.blobExists('a', sha256('x')));
    assert.ok(await client.blobExists('a', sha256('x')));
    assert.equal(issued, 1, 'the token is reused while it lasts');
    // expires_in 1 s is renewed at once (the client renews 10 s early, never under a second).
    await new Promise((r) => setTimeout(r, 1100));
    await client.blobExists('a', sha256('x'));
    assert.equal(issued, 2);
  });

  void test('parseChallenge reads quoted and bare parameters', () => {
    assert.deepEqual(
      parseChallenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull repository:b:pull",error=insufficient_scope',
      ),
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.example/token',
          service: 'reg',
          scope: 'repository:a:pull repository:b:pull',
          error: 'insufficient_scope',
        },
      },
    );
    assert.deepEqual(parseChallenge('Basic realm="a \\"b\\""'), {
      scheme: 'basic',
      params: { realm: 'a "b"' },
    });
  });
});
