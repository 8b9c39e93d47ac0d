// `wharf promote` as a process against a running Wharf, with images built and pushed by the Docker
// engine and verdicts signed as the agent signs them: a passed image is promoted with mounts only (the
// server's request log shows no blob upload, its storage no new blob), the rest are refused with their
// reason and exit code.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { RegistryClient, type Descriptor } from '../../src/client/registry-client.js';
import {
  buildStatement,
  DSSE_MEDIA_TYPE,
  envelopeBytes,
  generateSigningKey,
  OCI_MANIFEST_MEDIA_TYPE,
  publicJwks,
  pushVerdict,
  signStatement,
  verdictManifest,
  type SigningKey,
  type VerdictResult,
} from '../../src/verify/verdict.js';
import { fixtureDir } from '../helpers/auth.js';
import {
  buildImage,
  removeImages,
  requireTools,
  sha256Digest,
  verifyImageContent,
  type BuiltImage,
} from '../helpers/images.js';
import { printOutput, repoRoot, startWharf, type RunningServer } from '../helpers/processes.js';
import { docker } from '../helpers/tools.js';

const skip = await requireTools('docker', 'busybox');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `wharf promote ...` from source, as a user would; never throws on a non-zero exit. */
function wharfPromote(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('WHARF_')));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'promote', ...args], {
      cwd: repoRoot,
      env: { ...clean, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The access log entries (JSON lines at level info) in a slice of the registry output. */
function requestsIn(output: string): { method: string; path: string; status: number }[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg?: string; method?: string; path?: string; status?: number })
    .filter((e) => e.msg === 'request')
    .map((e) => ({ method: e.method ?? '', path: e.path ?? '', status: e.status ?? 0 }));
}

async function countBlobData(root: string): Promise<number> {
  const entries = await readdir(join(root, 'docker/registry/v2/blobs'), { recursive: true });
  return entries.filter((e) => e.endsWith('/data') || e === 'data').length;
}

void describe('wharf promote against a running wharf', { skip, timeout: 240_000 }, () => {
  let server: RunningServer | undefined;
  let keysServer: Server | undefined;
  let dir: Awaited<ReturnType<typeof fixtureDir>>;
  let client: RegistryClient;
  let trusted: SigningKey;
  let stranger: SigningKey;
  let keysURL = '';
  let keysFile = '';
  const localRefs: string[] = [];
  const images = new Map<string, { built: BuiltImage; descriptor: Descriptor }>();

  /** Builds (FROM scratch, busybox) and `docker push`es an image to staging/app:<tag>. */
  const pushStaging = async (tag: string) => {
    const built = await buildImage(`wharf-verify-test/promote-e2e:${tag}`, {
      layers: 1,
      layerBytes: 256 * 1024,
    });
    localRefs.push(built.ref);
    const ref = `${server?.host ?? ''}/staging/app:${tag}`;
    await docker(['tag', built.id, ref]);
    localRefs.push(ref);
    await docker(['push', ref]);
    const head = await client.headManifest('staging/app', tag);
    assert.ok(head);
    const descriptor = { mediaType: head.mediaType, digest: head.digest, size: head.size };
    images.set(tag, { built, descriptor });
    return descriptor;
  };

  const attach = async (subject: Descriptor, result: VerdictResult, key = trusted) => {
    const statement = buildStatement({
      subjectName: `${server?.host ?? ''}/staging/app`,
      digest: subject.digest,
      result,
      passedTests: result === 'PASSED' ? ['exit-code'] : [],
      failedTests: result === 'FAILED' ? ['exit-code'] : [],
      policy: 'default',
      details: { exitCode: result === 'PASSED' ? 0 : 1 },
    });
    return pushVerdict(client, 'staging/app', subject, await signStatement(statement, key), result, key.kid);
  };

  const promoteArgs = (tag: string, keys = keysURL) => [
    `staging/app:${tag}`,
    `prod/app:${tag}`,
    '--registry',
    server?.url ?? '',
    '--require-verified',
    '--trusted-keys',
    keys,
  ];

  before(async () => {
    // Level info: every request is logged, which is how the test sees that no blob was uploaded.
    server = await startWharf({ env: { WHARF_LOG_LEVEL: 'info' } });
    client = new RegistryClient({ url: server.url });
    dir = await fixtureDir();
    trusted = (await generateSigningKey()).key;
    stranger = (await generateSigningKey()).key;
    keysFile = dir.path('jwks.json');
    await writeFile(keysFile, JSON.stringify(publicJwks([trusted])));
    // The agent serves its keys this way.
    keysServer = createServer((req, res) => {
      res.setHeader('Content-Type', 'application/json');
      res.end(req.url === '/.well-known/jwks.json' ? JSON.stringify(publicJwks([trusted])) : '{}');
    });
    await new Promise<void>((resolve) => keysServer?.listen(0, '127.0.0.1', resolve));
    keysURL = `http://127.0.0.1:${(keysServer.address() as AddressInfo).port}/.well-known/jwks.json`;
  });

  after(async () => {
    await removeImages(...localRefs);
    keysServer?.close();
    await server?.stop();
    printOutput(
      server && {
        ...server,
        output: () =>
          server
            ?.output()
            .split('\n')
            .filter((l) => !l.includes('"msg":"request"'))
            .join('\n') ?? '',
      },
      'registry',
    );
    await dir.cleanup();
  });

  void test('a passed image is promoted with mounts only: no blob bytes uploaded, no new blob stored', async () => {
    const image = await pushStaging('passed');
    await attach(image, 'PASSED');
    const blobsBefore = await countBlobData(server?.root ?? '');
    const logBefore = server?.output().length ?? 0;

    const run = await wharfPromote(promoteArgs('passed'));
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `prod/app:passed@${image.digest}\n`);
    assert.match(
      run.stderr,
      /promoted staging\/app:passed to prod\/app:passed \(6 blobs mounted, 1 verdict copied, verified\)/,
    );

    const requests = requestsIn(server?.output().slice(logBefore) ?? '');
    const uploads = requests.filter(
      (r) => (r.method === 'PATCH' || r.method === 'PUT') && r.path.includes('/blobs/uploads/'),
    );
    assert.deepEqual(uploads, [], 'no blob upload reached the server');
    const mounts = requests.filter((r) => r.method === 'POST' && r.path === '/v2/prod/app/blobs/uploads/');
    assert.ok(mounts.length === 6 && mounts.every((r) => r.status === 201), JSON.stringify(mounts));
    assert.equal(await countBlobData(server?.root ?? ''), blobsBefore, 'only links were written');

    // Same bytes under the new name, and the image runs from there.
    const [src, dst] = await Promise.all([
      client.getManifest('staging/app', 'passed'),
      client.getManifest('prod/app', 'passed'),
    ]);
    assert.deepEqual(dst.bytes, src.bytes);
    assert.equal(sha256Digest(dst.bytes), image.digest);
    const promotedRef = `${server?.host ?? ''}/prod/app:passed`;
    await docker(['pull', promotedRef]);
    localRefs.push(promotedRef);
    const built = images.get('passed')?.built;
    assert.ok(built);
    assert.equal(await verifyImageContent(promotedRef, built), undefined);
  });

  void test('the trusted keys may be a JWKS file, the source a digest, the registry from $WHARF_REGISTRY', async () => {
    const image = await pushStaging('by-digest');
    await attach(image, 'PASSED');
    const run = await wharfPromote(
      [`staging/app@${image.digest}`, 'prod/app:by-digest', '--require-verified', '--trusted-keys', keysFile],
      { WHARF_REGISTRY: server?.url ?? '' },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `prod/app:by-digest@${image.digest}\n`);
  });

  const refusals: {
    name: string;
    tag: string;
    prepare: (image: Descriptor) => Promise<unknown>;
    code: number;
    message: RegExp;
  }[] = [
    {
      name: 'an unverified image',
      tag: 'unverified',
      prepare: () => Promise.resolve(),
      code: 10,
      message: /promote refused: staging\/app:unverified \(sha256:[0-9a-f]{64}\): no verification verdict$/m,
    },
    {
      name: 'a FAILED image',
      tag: 'failed',
      prepare: (image) => attach(image, 'FAILED'),
      code: 11,
      message: /promote refused: .*: verdict FAILED \(failed tests: exit-code\)$/m,
    },
    {
      name: 'an image whose verdict is signed by another key',
      tag: 'foreign-key',
      prepare: (image) => attach(image, 'PASSED', stranger),
      code: 12,
      message: /verdict signature does not verify with the trusted keys: signed by a key that is not trusted/,
    },
    {
      name: 'an image whose verdict envelope was altered (a modified copy pushed)',
      tag: 'tampered',
      prepare: async (image) => {
        // A FAILED verdict, rewritten to PASSED after signing and pushed as a new verdict.
        const envelope = await signStatement(
          buildStatement({
            subjectName: 'staging/app',
            digest: image.digest,
            result: 'FAILED',
            passedTests: [],
            failedTests: ['exit-code'],
            policy: 'default',
          }),
          trusted,
        );
        const statement = JSON.parse(Buffer.from(envelope.payload, 'base64').toString()) as {
          predicate: { result: string; failedTests: string[] };
        };
        statement.predicate.result = 'PASSED';
        statement.predicate.failedTests = [];
        const altered = envelopeBytes({
          ...envelope,
          payload: Buffer.from(JSON.stringify(statement)).toString('base64'),
        });
        await client.pushBlob('staging/app', altered, sha256Digest(altered));
        const manifest = verdictManifest({
          subject: image,
          envelopeDescriptor: {
            mediaType: DSSE_MEDIA_TYPE,
            digest: sha256Digest(altered),
            size: altered.length,
          },
          result: 'PASSED',
          keyid: trusted.kid,
          created: new Date(),
        });
        await client.putManifest('staging/app', sha256Digest(manifest), manifest, OCI_MANIFEST_MEDIA_TYPE);
      },
      code: 12,
      message: /verdict signature does not verify with the trusted keys: signature does not verify/,
    },
  ];
  for (const refusal of refusals) {
    void test(`refused: ${refusal.name} (exit ${refusal.code})`, async () => {
      const image = await pushStaging(refusal.tag);
      await refusal.prepare(image);
      const run = await wharfPromote(promoteArgs(refusal.tag));
      assert.equal(run.code, refusal.code, run.stderr);
      assert.equal(run.stdout, '');
      assert.match(run.stderr, refusal.message);
      assert.equal(run.stderr.trim().split('\n').length, 1, 'one line saying why');
      assert.equal(await client.headManifest('prod/app', refusal.tag), undefined, 'nothing was promoted');
    });
  }

  void test('usage errors exit 2; --help documents the exit codes', async () => {
    const noKeys = await wharfPromote([
      'staging/app:x',
      'prod/app:x',
      '--require-verified',
      '--registry',
      server?.url ?? '',
    ]);
    assert.equal(noKeys.code, 2);
    assert.match(noKeys.stderr, /--require-verified needs --trusted-keys/);
    const badRef = await wharfPromote(['staging/app', 'prod/app:x', '--registry', server?.url ?? '']);
    assert.equal(badRef.code, 2);
    assert.match(badRef.stderr, /give a tag/);
    const help = await wharfPromote(['--help']);
    assert.equal(help.code, 0);
    for (const code of [10, 11, 12, 13, 14])
      assert.match(help.stdout, new RegExp(`^\\s+${code}\\s+refused`, 'm'));
  });
});
