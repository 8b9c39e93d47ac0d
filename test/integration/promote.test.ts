// promote() against the app on loopback: mounts only (no blob bytes through the client), exact
// manifest bytes, verdicts required and copied, and every refusal with its reason.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Middleware } from 'koa';
import { pino } from 'pino';
import { createInMemoryDriver } from '../../storage-drivers/inmemory/driver.js';
import { RegistryClient, type Descriptor } from '../../src/client/registry-client.js';
import { createApp, type AppState } from '../../src/http/app.js';
import { createRegistry } from '../../src/registry/registry.js';
import { staticKeys } from '../../src/verify/decide.js';
import { promote, PromoteError, PROMOTE_EXIT_CODES, type PromoteFailure } from '../../src/verify/promote.js';
import { quarantineMiddleware } from '../../src/verify/quarantine.js';
import {
  buildStatement,
  DSSE_MEDIA_TYPE,
  envelopeBytes,
  findVerdicts,
  generateSigningKey,
  OCI_MANIFEST_MEDIA_TYPE,
  publicJwks,
  pushVerdict,
  signStatement,
  verdictManifest,
  type SigningKey,
  type VerdictResult,
} from '../../src/verify/verdict.js';
import { createTestApp } from '../helpers/app.js';
import { fixtureDir, newES256, privatePem, randomPassword, writeHtpasswd } from '../helpers/auth.js';
import { repoRoot } from '../helpers/processes.js';
import { configBlob, MT, ociIndex, ociManifest, randomBlob, sha256 } from '../helpers/oci.js';

/** Runs `wharf promote` from source with `stdin`; resolves with its exit code and output. */
function cli(
  args: string[],
  stdin: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('WHARF_')));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'promote', ...args], {
      cwd: repoRoot,
      env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(stdin);
  });
}

const logger = pino({ level: process.env.WHARF_TEST_LOG_LEVEL ?? 'silent' });
let trusted: SigningKey;
let stranger: SigningKey;
const servers: Server[] = [];

before(async () => {
  trusted = (await generateSigningKey()).key;
  stranger = (await generateSigningKey()).key;
});
after(() => {
  for (const s of servers) s.close();
});

/** The app on loopback; `log` has "METHOD path?query" of every request. */
async function registry(
  guards: Middleware<AppState>[] = [],
  build?: (r: ReturnType<typeof createRegistry>) => Middleware<AppState>[],
) {
  const core = createRegistry(createInMemoryDriver(), { deleteEnabled: true, manifestMaxSize: 4 << 20 });
  const app = createApp({ registry: core, logger, hooks: { guards: [...guards, ...(build?.(core) ?? [])] } });
  const handle = app.callback();
  const log: string[] = [];
  const server = createServer((req, res) => {
    log.push(`${req.method ?? ''} ${req.url ?? ''}`);
    void handle(req, res);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, log, client: new RegistryClient({ url }), core };
}

async function pushImage(client: RegistryClient, repo: string, tag: string, layers = 2): Promise<Descriptor> {
  const config = configBlob();
  const blobs = Array.from({ length: layers }, () => randomBlob(4096));
  await client.pushBlob(repo, config, sha256(config));
  for (const b of blobs) await client.pushBlob(repo, b, sha256(b));
  const m = ociManifest({
    config: { mediaType: MT.ociConfig, digest: sha256(config), size: config.length },
    layers: blobs.map((b) => ({ mediaType: MT.ociLayer, digest: sha256(b), size: b.length })),
  });
  await client.putManifest(repo, tag, m.bytes, m.mediaType);
  return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
}

async function attach(
  client: RegistryClient,
  repo: string,
  subject: Descriptor,
  result: VerdictResult,
  opts: { key?: SigningKey; about?: string; created?: Date } = {},
) {
  const key = opts.key ?? trusted;
  const envelope = await signStatement(
    buildStatement({
      subjectName: repo,
      digest: opts.about ?? subject.digest,
      result,
      passedTests: result === 'PASSED' ? ['exit-code'] : [],
      failedTests: result === 'FAILED' ? ['exit-code'] : [],
      policy: 'default',
    }),
    key,
  );
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

const blobUploads = (log: string[]) =>
  log.filter(
    (l) => /^(PATCH|PUT) \/v2\/.+\/blobs\/uploads\//.test(l) || /^POST .*\/blobs\/uploads\/\?digest=/.test(l),
  );

const keys = () => staticKeys(publicJwks([trusted]));

async function refused(p: Promise<unknown>, kind: PromoteFailure, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof PromoteError, String(err));
    assert.equal(err.kind, kind, err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

void describe('promote', () => {
  void test('mounts every blob, PUTs the exact bytes under the target tag, copies the verdicts', async () => {
    const { client, log } = await registry();
    const image = await pushImage(client, 'staging/app', 'v1');
    const verdict = await attach(client, 'staging/app', image, 'PASSED');
    const before = log.length;
    const result = await promote({
      client,
      from: { repo: 'staging/app', ref: 'v1' },
      to: { repo: 'prod/app', tag: '1.0' },
      trustedKeys: keys(),
    });
    const requests = log.slice(before);
    assert.deepEqual(blobUploads(requests), [], 'no blob bytes were uploaded');
    assert.equal(result.digest, image.digest);
    assert.equal(result.mounted, 5, 'config, two layers, the empty config and the envelope');
    assert.deepEqual(result.verdicts, [verdict]);
    assert.equal(requests.filter((l) => l.includes('mount=')).length, 5);
    const src = await client.getManifest('staging/app', 'v1');
    const dst = await client.getManifest('prod/app', '1.0');
    assert.deepEqual(dst.bytes, src.bytes);
    assert.equal(dst.digest, image.digest);
    // The verdict came along, and still verifies in its new home.
    const found = await findVerdicts(client, 'prod/app', image.digest, publicJwks([trusted]));
    assert.equal(found.length, 1);
    assert.equal(found[0]?.verification?.ok, true);
  });

  void test('an index: children by digest, their blobs mounted, the index under the tag', async () => {
    const { client, log } = await registry();
    const a = await pushImage(client, 'staging/multi', 'a', 1);
    const b = await pushImage(client, 'staging/multi', 'b', 1);
    const index = ociIndex({
      manifests: [
        { ...a, platform: { architecture: 'amd64', os: 'linux' } },
        { ...b, platform: { architecture: 'arm64', os: 'linux' } },
      ],
    });
    await client.putManifest('staging/multi', 'v1', index.bytes, index.mediaType);
    // Only the amd64 child needs a verdict: that is what the agent runs.
    await attach(client, 'staging/multi', a, 'PASSED');
    const before = log.length;
    const result = await promote({
      client,
      from: { repo: 'staging/multi', ref: 'v1' },
      to: { repo: 'prod/multi', tag: 'v1' },
      trustedKeys: keys(),
    });
    assert.deepEqual(blobUploads(log.slice(before)), []);
    assert.equal(result.digest, index.digest);
    assert.equal(result.mediaType, MT.ociIndex);
    assert.deepEqual((await client.getManifest('prod/multi', 'v1')).bytes, index.bytes);
    for (const child of [a, b]) assert.ok(await client.headManifest('prod/multi', child.digest));
    assert.equal(result.verdicts.length, 1);
  });

  void test('by digest, and without --require-verified nothing is checked', async () => {
    const { client } = await registry();
    const image = await pushImage(client, 'staging/app', 'v1');
    const result = await promote({
      client,
      from: { repo: 'staging/app', ref: image.digest },
      to: { repo: 'prod/app', tag: 'x' },
    });
    assert.equal(result.digest, image.digest);
    assert.equal(result.decision, undefined);
  });

  void test('refusals: no verdict, FAILED, newer FAILED, untrusted key, tampered envelope, subject mismatch', async () => {
    const { client, log } = await registry();
    const run = (tag: string) =>
      promote({
        client,
        from: { repo: 'staging/app', ref: tag },
        to: { repo: 'prod/app', tag },
        trustedKeys: keys(),
      });

    const none = await pushImage(client, 'staging/app', 'none');
    await refused(
      run('none'),
      'no-verdict',
      new RegExp(`staging/app:none \\(${none.digest}\\): no verification verdict$`),
    );

    const failed = await pushImage(client, 'staging/app', 'failed');
    await attach(client, 'staging/app', failed, 'FAILED');
    await refused(run('failed'), 'failed', /verdict FAILED \(failed tests: exit-code\)/);

    const flipped = await pushImage(client, 'staging/app', 'flipped');
    await attach(client, 'staging/app', flipped, 'PASSED', { created: new Date(Date.now() - 60_000) });
    await attach(client, 'staging/app', flipped, 'FAILED', { created: new Date(Date.now() - 30_000) });
    await refused(run('flipped'), 'failed', /verdict FAILED/);

    const foreign = await pushImage(client, 'staging/app', 'foreign');
    await attach(client, 'staging/app', foreign, 'PASSED', { key: stranger });
    await refused(
      run('foreign'),
      'untrusted',
      /signature does not verify with the trusted keys: signed by a key that is not trusted/,
    );

    // A PASSED verdict whose envelope was altered after signing (its statement now claims the image).
    const tampered = await pushImage(client, 'staging/app', 'tampered');
    const other = await pushImage(client, 'staging/app', 'other');
    const envelope = await signStatement(
      buildStatement({
        subjectName: 'x',
        digest: other.digest,
        result: 'PASSED',
        passedTests: [],
        failedTests: [],
        policy: 'p',
      }),
      trusted,
    );
    const statement = JSON.parse(Buffer.from(envelope.payload, 'base64').toString()) as {
      subject: { digest: { sha256: string } }[];
    };
    statement.subject[0]!.digest.sha256 = tampered.digest.slice(7);
    const altered = envelopeBytes({
      ...envelope,
      payload: Buffer.from(JSON.stringify(statement)).toString('base64'),
    });
    await client.pushBlob('staging/app', altered, sha256(altered));
    const manifest = verdictManifest({
      subject: tampered,
      envelopeDescriptor: { mediaType: DSSE_MEDIA_TYPE, digest: sha256(altered), size: altered.length },
      result: 'PASSED',
      keyid: trusted.kid,
      created: new Date(),
    });
    await client.putManifest('staging/app', sha256(manifest), manifest, OCI_MANIFEST_MEDIA_TYPE);
    await refused(
      run('tampered'),
      'untrusted',
      /signature does not verify with the trusted keys: signature does not verify/,
    );

    const mismatch = await pushImage(client, 'staging/app', 'mismatch');
    await attach(client, 'staging/app', mismatch, 'PASSED', { about: other.digest });
    await refused(
      run('mismatch'),
      'subject-mismatch',
      new RegExp(`subject digest ${other.digest} does not match ${mismatch.digest}`),
    );

    // Nothing reached the target.
    assert.deepEqual(
      log.filter((l) => l.includes('/v2/prod/app/')),
      [],
    );
    await refused(
      promote({ client, from: { repo: 'staging/app', ref: 'missing' }, to: { repo: 'prod/app', tag: 'x' } }),
      'not-found',
      /staging\/app:missing not found \(MANIFEST_UNKNOWN\)/,
    );
  });

  void test('a mount the registry answers with 202 fails the promotion; no bytes are copied', async () => {
    // A registry that turns mounts into plain upload sessions, as one without the source's pull right would.
    const noMounts: Middleware<AppState> = async (ctx, next) => {
      if (ctx.method === 'POST' && ctx.query.mount !== undefined) ctx.query = {};
      await next();
    };
    const { client, log } = await registry([noMounts]);
    await pushImage(client, 'staging/app', 'v1');
    const before = log.length;
    await refused(
      promote({ client, from: { repo: 'staging/app', ref: 'v1' }, to: { repo: 'prod/app', tag: 'v1' } }),
      'mount-failed',
      /could not be mounted from staging\/app into prod\/app .*202/,
    );
    const after = log.slice(before);
    assert.deepEqual(blobUploads(after), []);
    assert.ok(
      after.some((l) => l.startsWith('DELETE /v2/prod/app/blobs/uploads/')),
      'the session was cancelled',
    );
    assert.equal(await client.headManifest('prod/app', 'v1'), undefined);
  });

  void test('a promoted image is pullable by tag from a quarantined target: its verdict came along', async () => {
    const { client } = await registry([], (core) => [
      quarantineMiddleware(core, { repositories: ['prod/**'], keys: keys(), cacheTtlMs: 30_000, logger }),
    ]);
    const image = await pushImage(client, 'staging/app', 'v1');
    await attach(client, 'staging/app', image, 'PASSED');
    await promote({
      client,
      from: { repo: 'staging/app', ref: 'v1' },
      to: { repo: 'prod/app', tag: 'v1' },
      trustedKeys: keys(),
    });
    assert.equal((await client.getManifest('prod/app', 'v1')).digest, image.digest);
    await promote({
      client,
      from: { repo: 'staging/app', ref: 'v1' },
      to: { repo: 'prod/bare', tag: 'v1' },
      copyVerdicts: false,
    });
    await assert.rejects(
      client.getManifest('prod/bare', 'v1'),
      /403 DENIED: image prod\/bare:v1 .* has no passing verification verdict yet/,
    );
  });

  void test('the CLI with a token server: --password-stdin, a mount token that can read the source', async () => {
    const dir = await fixtureDir();
    try {
      const password = randomPassword();
      await writeHtpasswd(dir.path('htpasswd'), { ci: password });
      await writeFile(dir.path('signing.pem'), privatePem(newES256()));
      await writeFile(dir.path('jwks.json'), JSON.stringify(publicJwks([trusted])));
      const t = await createTestApp({
        auth: {
          tokenserver: { enabled: true, htpasswd: dir.path('htpasswd'), signingkey: dir.path('signing.pem') },
          access: {
            rules: [
              { repositories: ['staging/**'], users: ['ci'], actions: ['pull', 'push'] },
              { repositories: ['prod/**'], users: ['ci'], actions: ['pull', 'push'] },
            ],
          },
        },
      });
      const handle = t.app.callback();
      const server = createServer((req, res) => {
        void handle(req, res);
      });
      servers.push(server);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const client = new RegistryClient({ url, username: 'ci', password });
      const image = await pushImage(client, 'staging/app', 'v1');
      await attach(client, 'staging/app', image, 'PASSED');

      const args = [
        'staging/app:v1',
        'prod/app:v1',
        '--registry',
        url,
        '--username',
        'ci',
        '--password-stdin',
      ];
      const ok = await cli(
        [...args, '--require-verified', '--trusted-keys', dir.path('jwks.json')],
        `${password}\n`,
      );
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, `prod/app:v1@${image.digest}\n`);
      assert.equal((await client.getManifest('prod/app', 'v1')).digest, image.digest);

      const wrong = await cli(args, 'not-the-password\n');
      assert.equal(wrong.code, PROMOTE_EXIT_CODES.error);
      assert.match(wrong.stderr, /^wharf: promote failed: .*401/);
    } finally {
      await dir.cleanup();
    }
  });

  void test('every failure has its own exit code', () => {
    const codes = Object.values(PROMOTE_EXIT_CODES);
    assert.equal(new Set(codes).size, codes.length);
    assert.ok(codes.every((c) => c > 0));
  });
});
