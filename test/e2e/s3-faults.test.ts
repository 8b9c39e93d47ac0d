// Wharf when S3 fails: requests answer a clean OCI error (503 UNAVAILABLE, no internals) while the
// endpoint is gone and work again when it is back; a server started on storage it cannot use exits
// non-zero with one clear line. S3 is reached through a TCP proxy the test controls.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { freePort, repoRoot, startWharf, wharfS3Env, type RunningServer } from '../helpers/processes.js';
import { createTestBucket, s3TestSettingsOrReport, type TestBucket } from '../s3/env.js';

const settings = s3TestSettingsOrReport('wharf on s3: storage faults');

const sha256 = (data: Uint8Array): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** What the proxy does with connections: forward them, reset them at once, or refuse them (not listening). */
type ProxyMode = 'pass' | 'reset' | 'refuse';

/** A loopback TCP proxy to `target` whose behaviour the test switches. */
class FaultProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private mode: ProxyMode = 'refuse';
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async set(mode: ProxyMode): Promise<void> {
    this.mode = mode;
    // Connections the registry keeps alive would otherwise carry on as before.
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    if (mode === 'refuse') await this.close();
    else if (this.server === undefined) await this.listen();
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    await new Promise<void>((resolve) => {
      server.close(() => {
        resolve();
      });
    });
  }

  private async listen(): Promise<void> {
    const server = createServer((client) => {
      if (this.mode !== 'pass') {
        client.resetAndDestroy();
        return;
      }
      const upstream = createConnection(this.target);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    // The same port after a refuse phase, so the registry's endpoint stays valid.
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        resolve();
      });
    });
    const addr = server.address();
    assert.ok(addr !== null && typeof addr === 'object');
    this.port = addr.port;
    this.server = server;
  }
}

/** The OCI error a request got; asserts it is 503 UNAVAILABLE and gives nothing away. */
async function expectUnavailable(res: Response, what: string, secrets: string[]): Promise<void> {
  const text = await res.text();
  assert.equal(res.status, 503, `${what}: ${text}`);
  if (res.headers.get('content-length') === '0' || text === '') return; // HEAD
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, what);
  const body = JSON.parse(text) as { errors: ({ code: string; message: string } | undefined)[] };
  assert.equal(body.errors.length, 1, what);
  const [error] = body.errors;
  assert.equal(error?.code, 'UNAVAILABLE', what);
  assert.ok(error.message.length < 80, `${what}: a short message, got ${text}`);
  assert.doesNotMatch(text, /\bat .+:\d+:\d+|node_modules|Error\b|ECONN/, `${what}: no internals in ${text}`);
  for (const s of secrets) assert.ok(!text.includes(s), `${what}: the body names ${s}`);
}

/** Pushes a blob in one POST ?digest= and checks the answer. */
async function pushBlob(server: RunningServer, repo: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const res = await fetch(`${server.url}/v2/${repo}/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: data,
  });
  assert.equal(res.status, 201, await res.text());
  return digest;
}

/** Runs `wharf serve` until it exits; the exit code and everything it printed. */
async function serveUntilExit(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('WHARF_') && !k.startsWith('REGISTRY_')),
  );
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], {
    cwd: repoRoot,
    env: {
      ...clean,
      WHARF_HTTP_ADDR: `127.0.0.1:${await freePort()}`,
      WHARF_LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((resolve) => {
    child.on('exit', (c) => {
      resolve(c);
    });
  });
  clearTimeout(timer);
  return { code, output };
}

void describe('wharf when S3 fails', { skip: settings === undefined, timeout: 110_000 }, () => {
  let bucket: TestBucket | undefined;
  let proxy: FaultProxy | undefined;
  let server: RunningServer | undefined;
  const repo = 'e2e/faults/app';
  let layer = '';
  let manifest = '';

  before(async () => {
    assert.ok(settings);
    bucket = await createTestBucket(settings, 'e2e-faults');
    const rgw = new URL(settings.endpoint);
    proxy = new FaultProxy({ host: rgw.hostname, port: Number(rgw.port || 80) });
    await proxy.set('pass');
    server = await startWharf({
      storage: 's3',
      env: {
        ...wharfS3Env({ ...bucket.params, regionendpoint: proxy.url }),
        WHARF_STORAGE_REDIRECT_DISABLE: 'true',
      },
    });
  });

  after(async () => {
    await proxy?.set('pass');
    await server?.stop();
    await proxy?.close();
    await bucket?.destroy();
  });

  void test('a pushed image is served while the proxy passes', async () => {
    assert.ok(server);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
    const configDigest = await pushBlob(server, repo, config);
    const data = randomBytes(64 * 1024);
    layer = await pushBlob(server, repo, data);
    const body = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer, size: data.length }],
    });
    manifest = sha256(Buffer.from(body));
    const put = await fetch(`${server.url}/v2/${repo}/manifests/v1`, {
      method: 'PUT',
      headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      body,
    });
    assert.equal(put.status, 201, await put.text());
    const get = await fetch(`${server.url}/v2/${repo}/blobs/${layer}`);
    assert.equal(get.status, 200);
    assert.equal(sha256(new Uint8Array(await get.arrayBuffer())), layer);
  });

  for (const mode of ['refuse', 'reset'] as const) {
    void test(`S3 ${mode === 'refuse' ? 'refusing connections' : 'resetting connections'}: 503 UNAVAILABLE, then recovery`, async () => {
      assert.ok(server && proxy && bucket && manifest, 'needs the pushed image');
      const unseen = sha256(randomBytes(32));
      const base = `${server.url}/v2/${repo}`;
      const requests: [string, () => Promise<Response>][] = [
        ['GET manifest by tag', () => fetch(`${base}/manifests/v1`)],
        ['GET tags/list', () => fetch(`${base}/tags/list`)],
        ['HEAD unseen blob', () => fetch(`${base}/blobs/${unseen}`, { method: 'HEAD' })],
        ['GET blob', () => fetch(`${base}/blobs/${layer}`)],
        ['POST upload', () => fetch(`${base}/blobs/uploads/`, { method: 'POST' })],
        ['GET catalog', () => fetch(`${server!.url}/v2/_catalog`)],
      ];
      await proxy.set(mode);
      try {
        for (const [what, request] of requests) {
          await expectUnavailable(await request(), what, [proxy.url, bucket.name, settings!.accessKey]);
        }
      } finally {
        await proxy.set('pass');
      }

      const tag = await fetch(`${base}/manifests/v1`, {
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
      });
      assert.equal(tag.status, 200, await tag.clone().text());
      assert.equal(sha256(new Uint8Array(await tag.arrayBuffer())), manifest);
      const blob = await fetch(`${base}/blobs/${layer}`);
      assert.equal(sha256(new Uint8Array(await blob.arrayBuffer())), layer);
      const fresh = randomBytes(4096);
      assert.equal(await pushBlob(server, repo, fresh), sha256(fresh));

      // The operator sees what happened in the log; the client did not.
      assert.match(server.output(), /storage unavailable/);
    });
  }

  void describe('start-up on storage that cannot be used exits non-zero with one clear line', () => {
    const cases: { name: string; env: () => Promise<Record<string, string>>; expect: RegExp }[] = [
      {
        name: 'nothing listens at the endpoint',
        env: async () => {
          const endpoint = `http://127.0.0.1:${await freePort()}`;
          return wharfS3Env({ ...bucket!.params, regionendpoint: endpoint });
        },
        expect: /s3 endpoint http:\/\/127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED\)/,
      },
      {
        name: 'the bucket does not exist',
        env: () =>
          Promise.resolve(
            wharfS3Env({
              ...bucket!.params,
              bucket: `${bucket!.name}-missing`,
              regionendpoint: settings!.endpoint,
            }),
          ),
        expect: /s3 bucket "wharf-e2e-faults-[0-9a-f]+-missing" does not exist at http:\/\/127\.0\.0\.1:\d+/,
      },
      {
        name: 'the secret key is wrong',
        env: () =>
          Promise.resolve(
            wharfS3Env({
              ...bucket!.params,
              secretkey: 'not-the-secret',
              regionendpoint: settings!.endpoint,
            }),
          ),
        expect:
          /s3 endpoint http:\/\/127\.0\.0\.1:\d+ refused the credentials for bucket "wharf-e2e-faults-[0-9a-f]+"/,
      },
    ];
    for (const c of cases) {
      void test(c.name, async () => {
        const { code, output } = await serveUntilExit(await c.env());
        assert.equal(code, 1, output);
        const fatal = output
          .split('\n')
          .filter((line) => line.startsWith('{'))
          .map((line) => JSON.parse(line) as { level: number; msg: string; err?: { message?: string } })
          .filter((entry) => entry.level >= 60);
        assert.equal(fatal.length, 1, output);
        assert.equal(fatal[0]?.msg, 'server failed to start');
        const message = fatal[0].err?.message ?? '';
        assert.match(message, /^storage s3 is not usable: /);
        assert.match(message, c.expect);
        assert.doesNotMatch(message, /\n/, 'one line');
        assert.equal(message.split('stat /').length, 2, `said once: ${message}`);
        assert.ok(!output.includes('not-the-secret'), 'the secret is not logged');
      });
    }
  });
});
