// Wharf on S3 (Ceph RGW in CI) with the real clients: docker push/pull/run and skopeo copy, blob GETs
// redirected to presigned URLs by default and streamed by Wharf with storage.redirect.disable.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import {
  buildImage,
  imageExists,
  rawManifest,
  readOciLayout,
  removeImages,
  requireTools,
  runImage,
  verifyImageContent,
  verifyLayoutContent,
  type BuiltImage,
} from '../helpers/images.js';
import {
  printOutput,
  startDistribution,
  startWharf,
  wharfS3Env,
  type RunningServer,
} from '../helpers/processes.js';
import { docker, skopeo } from '../helpers/tools.js';
import { createTestBucket, s3TestSettingsOrReport, type TestBucket } from '../s3/env.js';

const settings = s3TestSettingsOrReport('wharf on s3: docker and skopeo end to end');
const skip =
  settings === undefined ? true : await requireTools('docker', 'busybox', 'skopeo', 'docker-registry');

const MiB = 1024 * 1024;
const V2 = 'docker/registry/v2';

const sha256 = (data: Uint8Array): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

function pushedDigest(out: string): string {
  const m = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(out);
  assert.ok(m?.[1], `no digest in docker push output:\n${out}`);
  return m[1];
}

void describe('wharf on s3 with docker and skopeo', { skip, timeout: 115_000 }, () => {
  let bucket: TestBucket | undefined;
  // Two servers on one bucket: redirects on (the default) and off.
  let redirecting: RunningServer | undefined;
  let streaming: RunningServer | undefined;
  let image: BuiltImage | undefined;
  let manifestDigest = '';
  const localRefs: string[] = [];
  const repo = 'e2e/s3/busybox';

  before(async () => {
    assert.ok(settings);
    bucket = await createTestBucket(settings, 'e2e-s3');
    const env = wharfS3Env({ ...bucket.params, regionendpoint: settings.endpoint });
    [redirecting, streaming] = await Promise.all([
      startWharf({ storage: 's3', env }),
      startWharf({ storage: 's3', env: { ...env, WHARF_STORAGE_REDIRECT_DISABLE: 'true' } }),
    ]);
  });

  after(async () => {
    await removeImages(...localRefs);
    await Promise.all([redirecting?.stop(), streaming?.stop()]);
    printOutput(redirecting, 'wharf (redirect)');
    printOutput(streaming, 'wharf (redirect disabled)');
    await bucket?.destroy();
  });

  const manifestLayers = async (server: RunningServer): Promise<{ digest: string; size: number }[]> => {
    const res = await fetch(`${server.url}/v2/${repo}/manifests/${manifestDigest}`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' },
    });
    assert.equal(res.status, 200);
    const json = (await res.json()) as { layers: { digest: string; size: number }[] };
    return json.layers;
  };

  void test('docker push, rmi, pull through the presigned redirect, run', async () => {
    assert.ok(redirecting && bucket);
    const ref = `${redirecting.host}/${repo}:1`;
    // A layer over the 10 MiB chunk size, so the push goes through a multipart upload of several parts.
    image = await buildImage(ref, { layers: 2, layerBytes: 12 * MiB });
    localRefs.push(image.id);

    manifestDigest = pushedDigest((await docker(['push', ref])).stdout);
    await removeImages(image.id);
    assert.equal(await imageExists(ref), false);

    await docker(['pull', ref]);
    const { stdout: id } = await docker(['image', 'inspect', '--format', '{{.Id}}', ref]);
    assert.equal(id.trim(), image.id, 'the pulled image has the pushed config');
    assert.equal(await runImage(ref), image.marker, 'default command prints the marker');
    assert.equal(await verifyImageContent(ref, image), undefined);

    // The bucket holds Distribution's layout: the tag link and the manifest's blob.
    const link = await bucket.client.send(
      new GetObjectCommand({
        Bucket: bucket.name,
        Key: `${V2}/repositories/${repo}/_manifests/tags/1/current/link`,
      }),
    );
    assert.equal(await link.Body?.transformToString(), manifestDigest);
    const hex = manifestDigest.slice('sha256:'.length);
    const blob = await bucket.client.send(
      new GetObjectCommand({ Bucket: bucket.name, Key: `${V2}/blobs/sha256/${hex.slice(0, 2)}/${hex}/data` }),
    );
    assert.equal(sha256(await blob.Body!.transformToByteArray()), manifestDigest);
  });

  void test('blob GET answers 307 to a presigned URL on the S3 endpoint; HEAD answers 200', async () => {
    assert.ok(redirecting && settings && manifestDigest, 'needs the pushed image');
    const layers = await manifestLayers(redirecting);
    const big = layers.reduce((a, b) => (b.size > a.size ? b : a));
    const url = `${redirecting.url}/v2/${repo}/blobs/${big.digest}`;

    const res = await fetch(url, { redirect: 'manual' });
    await res.arrayBuffer();
    assert.equal(res.status, 307);
    assert.equal(res.headers.get('docker-content-digest'), big.digest);
    const location = res.headers.get('location');
    assert.ok(location, 'a Location header');
    const target = new URL(location);
    assert.equal(target.origin, new URL(settings.endpoint).origin, 'redirects to the S3 endpoint');
    assert.ok(target.searchParams.has('X-Amz-Signature'), `a presigned URL: ${location}`);

    const direct = await fetch(location);
    assert.equal(direct.status, 200);
    assert.equal(sha256(new Uint8Array(await direct.arrayBuffer())), big.digest);

    const head = await fetch(url, { method: 'HEAD', redirect: 'manual' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(big.size));
  });

  void test('with storage.redirect.disable, blob GET answers 200 with the bytes; docker pull works', async () => {
    assert.ok(streaming && image && manifestDigest, 'needs the pushed image');
    const layers = await manifestLayers(streaming);
    for (const layer of layers) {
      const res = await fetch(`${streaming.url}/v2/${repo}/blobs/${layer.digest}`, { redirect: 'manual' });
      assert.equal(res.status, 200, layer.digest);
      assert.equal(res.headers.get('location'), null);
      assert.equal(sha256(new Uint8Array(await res.arrayBuffer())), layer.digest);
    }
    const big = layers.reduce((a, b) => (b.size > a.size ? b : a));
    const ranged = await fetch(`${streaming.url}/v2/${repo}/blobs/${big.digest}`, {
      headers: { range: 'bytes=10485700-10485799' },
    });
    assert.equal(ranged.status, 206);
    assert.equal((await ranged.arrayBuffer()).byteLength, 100);

    const ref = `${streaming.host}/${repo}:1`;
    await docker(['pull', ref]);
    localRefs.push(ref);
    assert.equal(await verifyImageContent(ref, image), undefined);
  });

  void test('skopeo copy to another repository and to an OCI layout', async () => {
    assert.ok(redirecting && image && manifestDigest, 'needs the pushed image');
    const src = `docker://${redirecting.host}/${repo}:1`;
    const copyRef = `${redirecting.host}/e2e/s3/copy:1`;
    await skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', src, `docker://${copyRef}`]);
    assert.equal((await rawManifest(copyRef)).digest, manifestDigest, 'the copy has the same manifest');

    const dir = await mkdtemp(join(tmpdir(), 'wharf-e2e-s3-oci-'));
    try {
      await skopeo(['copy', '--src-tls-verify=false', `docker://${copyRef}`, `oci:${dir}:copied`]);
      const layout = await readOciLayout(dir, 'copied');
      assert.equal(verifyLayoutContent(layout, image), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  void test('Distribution 2.8 on the same bucket serves what Wharf wrote', async () => {
    assert.ok(bucket && settings && image && manifestDigest, 'needs the pushed image');
    const distribution = await startDistribution({
      s3: { ...bucket.params, regionendpoint: settings.endpoint },
    });
    try {
      const ref = `${distribution.host}/${repo}:1`;
      assert.equal((await rawManifest(ref)).digest, manifestDigest);
      const dir = await mkdtemp(join(tmpdir(), 'wharf-e2e-s3-oci-'));
      try {
        await skopeo(['copy', '--src-tls-verify=false', `docker://${ref}`, `oci:${dir}:from-distribution`]);
        assert.equal(verifyLayoutContent(await readOciLayout(dir, 'from-distribution'), image), undefined);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    } finally {
      await distribution.stop();
      printOutput(distribution, 'distribution');
    }
  });
});
