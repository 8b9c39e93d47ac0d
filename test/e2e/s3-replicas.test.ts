// Two Wharf processes on one bucket: every request may go to either replica, because upload sessions
// and all other state live in the bucket. One upload hops between them; then both take pushes at once
// and each serves everything.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  buildImage,
  clients,
  rawManifest,
  removeImages,
  requireTools,
  verifyImageContent,
  type BuiltImage,
} from '../helpers/images.js';
import { printOutput, startWharf, wharfS3Env, type RunningServer } from '../helpers/processes.js';
import { docker } from '../helpers/tools.js';
import { createTestBucket, s3TestSettingsOrReport, type TestBucket } from '../s3/env.js';

const settings = s3TestSettingsOrReport('wharf on s3: two replicas on one bucket');
const skip = settings === undefined ? true : await requireTools('docker', 'busybox', 'skopeo');

const KiB = 1024;
const MiB = 1024 * KiB;

const sha256 = (data: Uint8Array): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** The next request's URL on `server`, from a Location that another replica may have answered. */
function at(server: RunningServer, location: string | null): URL {
  assert.ok(location, 'a Location header');
  const url = new URL(location, server.url);
  return new URL(`${url.pathname}${url.search}`, server.url);
}

async function send(
  method: string,
  url: URL | string,
  body?: Buffer,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(url, {
    method,
    headers: { ...(body !== undefined && { 'content-type': 'application/octet-stream' }), ...headers },
    ...(body !== undefined && { body }),
  });
}

async function expectStatus(res: Response, want: number, what: string): Promise<void> {
  if (res.status !== want) assert.fail(`${what}: expected ${want}, got ${res.status}: ${await res.text()}`);
}

void describe('two wharf replicas on one bucket', { skip, timeout: 115_000 }, () => {
  let bucket: TestBucket | undefined;
  let first: RunningServer | undefined;
  let second: RunningServer | undefined;
  const localRefs: string[] = [];

  before(async () => {
    assert.ok(settings);
    bucket = await createTestBucket(settings, 'e2e-replicas');
    const env = wharfS3Env({ ...bucket.params, regionendpoint: settings.endpoint });
    [first, second] = await Promise.all([
      startWharf({ storage: 's3', env }),
      startWharf({ storage: 's3', env }),
    ]);
  });

  after(async () => {
    await removeImages(...localRefs);
    await Promise.all([first?.stop(), second?.stop()]);
    printOutput(first, 'wharf replica 1');
    printOutput(second, 'wharf replica 2');
    await bucket?.destroy();
  });

  // Chunks over S3's 5 MiB part minimum go straight to parts; small ones are buffered in the bucket.
  const uploads = [
    { name: 'large chunks', chunks: [6 * MiB, 7 * MiB, 1 * MiB] },
    { name: 'small chunks', chunks: [100 * KiB, 300 * KiB, 5] },
  ];
  for (const { name, chunks } of uploads) {
    void test(`one upload across replicas (${name}): POST 1, PATCH 2, PATCH 1, PUT 2 with the last chunk`, async () => {
      assert.ok(first && second);
      const repo = `e2e/replicas/upload-${name.replace(' ', '-')}`;
      const parts = chunks.map((n) => randomBytes(n));
      const blob = Buffer.concat(parts);
      const digest = sha256(blob);
      const [c1, c2, c3] = parts as [Buffer, Buffer, Buffer];

      const post = await send('POST', `${first.url}/v2/${repo}/blobs/uploads/`);
      await expectStatus(post, 202, 'POST on replica 1');

      const patch1 = await send('PATCH', at(second, post.headers.get('location')), c1, {
        'content-range': `0-${c1.length - 1}`,
      });
      await expectStatus(patch1, 202, 'PATCH on replica 2');
      assert.equal(patch1.headers.get('range'), `0-${c1.length - 1}`);

      const patch2 = await send('PATCH', at(first, patch1.headers.get('location')), c2, {
        'content-range': `${c1.length}-${c1.length + c2.length - 1}`,
      });
      await expectStatus(patch2, 202, 'PATCH on replica 1');
      const uploaded = c1.length + c2.length;
      assert.equal(patch2.headers.get('range'), `0-${uploaded - 1}`);

      // Either replica reports the session's progress.
      const status = await send('GET', at(second, patch2.headers.get('location')));
      await expectStatus(status, 204, 'GET upload status on replica 2');
      assert.equal(status.headers.get('range'), `0-${uploaded - 1}`);

      const put = at(second, patch2.headers.get('location'));
      put.searchParams.set('digest', digest);
      const done = await send('PUT', put, c3);
      await expectStatus(done, 201, 'PUT on replica 2');
      assert.equal(done.headers.get('docker-content-digest'), digest);

      for (const [label, server] of [
        ['replica 1', first],
        ['replica 2', second],
      ] as const) {
        const url = `${server.url}/v2/${repo}/blobs/${digest}`;
        const head = await send('HEAD', url);
        await expectStatus(head, 200, `HEAD on ${label}`);
        assert.equal(head.headers.get('content-length'), String(blob.length));
        // GET follows the redirect to the bucket.
        const res = await send('GET', url);
        await expectStatus(res, 200, `GET on ${label}`);
        assert.equal(sha256(new Uint8Array(await res.arrayBuffer())), digest, label);
      }
    });
  }

  void test('different images pushed through both replicas at once, then pulled through each', async () => {
    assert.ok(first && second);
    const replicas = [first, second];
    const images: BuiltImage[] = [];
    for (let i = 0; i < 4; i++) {
      const image = await buildImage(`local/e2e-replicas-${i}:1`, { layers: 1, layerBytes: (i + 1) * MiB });
      localRefs.push(image.id);
      images.push(image);
    }
    // docker and skopeo, each through each replica; the first image also goes to a second repository
    // through the other replica at the same time, so both replicas upload the same blobs at once.
    const pushes = images.map((image, i) => ({
      image,
      repo: `e2e/replicas/image-${i}`,
      client: clients[i % clients.length]!,
      server: replicas[Math.floor(i / 2) % 2]!,
    }));
    pushes.push({ ...pushes[0]!, repo: 'e2e/replicas/shared', server: second });
    await Promise.all(pushes.map((p) => p.client.push(p.image, `${p.server.host}/${p.repo}:1`)));

    for (const { image, repo } of pushes) {
      const digests = new Set<string>();
      for (const server of replicas) {
        const ref = `${server.host}/${repo}:1`;
        digests.add((await rawManifest(ref)).digest);
        await removeImages(image.id, ref);
        await docker(['pull', ref]);
        localRefs.push(ref);
        assert.equal(await verifyImageContent(ref, image), undefined, ref);
      }
      assert.equal(digests.size, 1, `both replicas serve the same manifest for ${repo}`);
    }

    for (const server of replicas) {
      const res = await fetch(`${server.url}/v2/_catalog`);
      const { repositories } = (await res.json()) as { repositories: string[] };
      for (const { repo } of pushes)
        assert.ok(repositories.includes(repo), `${repo} in ${server.host}'s catalog`);
    }
  });
});
