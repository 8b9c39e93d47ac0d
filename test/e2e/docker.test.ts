// The real Docker engine against a running Wharf: push, remove, pull, run; multi-layer; a multi-arch list.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  buildImage,
  clients,
  imageExists,
  pushManifestList,
  rawManifest,
  removeImages,
  requireTools,
  runImage,
  verifyImageContent,
} from '../helpers/images.js';
import { startRegistryUnderTest, printOutput, type RunningServer } from '../helpers/processes.js';
import { docker } from '../helpers/tools.js';

const skip = await requireTools('docker', 'busybox', 'skopeo');

const dockerSchema2 = 'application/vnd.docker.distribution.manifest.v2+json';
const dockerList = 'application/vnd.docker.distribution.manifest.list.v2+json';

/** The digest `docker push` reports for the tag it pushed. */
function pushedDigest(out: string): string {
  const m = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(out);
  assert.ok(m?.[1], `no digest in docker push output:\n${out}`);
  return m[1];
}

void describe('docker client against wharf', { skip, timeout: 170_000 }, () => {
  let server: RunningServer | undefined;
  let host = '';
  const localRefs: string[] = [];

  before(async () => {
    server = await startRegistryUnderTest();
    host = server.host;
  });

  after(async () => {
    await removeImages(...localRefs);
    await server?.stop();
    printOutput(server, 'registry');
  });

  void test('push, rmi, pull and run a busybox image', async () => {
    const ref = `${host}/e2e/busybox:1`;
    const image = await buildImage(ref);
    localRefs.push(image.id);

    const { stdout } = await docker(['push', ref]);
    const digest = pushedDigest(stdout);
    await removeImages(image.id);
    assert.equal(await imageExists(ref), false);

    await docker(['pull', ref]);
    const { stdout: id } = await docker(['image', 'inspect', '--format', '{{.Id}}', ref]);
    assert.equal(id.trim(), image.id, 'the pulled image has the pushed config');
    assert.equal(await runImage(ref, ['busybox', 'echo', 'hello']), 'hello\n');
    assert.equal(await runImage(ref), image.marker, 'default command prints the marker');

    const manifest = await rawManifest(ref);
    assert.equal(manifest.digest, digest, 'served bytes hash to the digest docker pushed');
    assert.equal(manifest.json.mediaType, dockerSchema2);
  });

  void test('multi-layer image: push, pull by digest, content intact, re-push is a no-op', async () => {
    const ref = `${host}/e2e/layers:v1`;
    const image = await buildImage(ref, { layers: 4, layerBytes: 1024 * 1024 });
    localRefs.push(image.id);

    const digest = pushedDigest((await docker(['push', ref])).stdout);
    const manifest = await rawManifest(ref);
    assert.equal(manifest.json.layers?.length, 6, 'busybox, marker and 4 data layers');

    // All blobs are present now, so a second push uploads nothing and yields the same manifest.
    const again = await docker(['push', ref]);
    assert.equal(pushedDigest(again.stdout), digest);
    assert.doesNotMatch(again.stdout, /: Pushed/);

    await removeImages(image.id);
    const byDigest = `${host}/e2e/layers@${digest}`;
    await docker(['pull', byDigest]);
    assert.equal(await verifyImageContent(byDigest, image), undefined);
  });

  void test('an image shared by two repositories is pushed once (cross-repository mount)', async () => {
    const first = `${host}/e2e/shared-a:1`;
    const second = `${host}/e2e/shared-b:1`;
    const image = await buildImage(first, { layers: 1, layerBytes: 512 * 1024 });
    localRefs.push(image.id);
    const digest = pushedDigest((await docker(['push', first])).stdout);

    await docker(['tag', image.id, second]);
    const out = (await docker(['push', second])).stdout;
    assert.equal(pushedDigest(out), digest);
    assert.doesNotMatch(out, /: Pushed/, 'every layer is mounted or already exists');

    await removeImages(image.id);
    await docker(['pull', second]);
    assert.equal(await verifyImageContent(second, image), undefined);
  });

  void test('large layers stream through intact', async () => {
    const ref = `${host}/e2e/large:1`;
    const image = await buildImage(ref, { layers: 2, layerBytes: 24 * 1024 * 1024 });
    localRefs.push(image.id);
    await docker(['push', ref]);
    await removeImages(image.id);
    await docker(['pull', ref]);
    assert.equal(await verifyImageContent(ref, image), undefined);
  });

  void test('one image pushed to several repositories at once, by docker and skopeo', async () => {
    const image = await buildImage(`local/e2e-concurrent:1`, { layers: 2, layerBytes: 2 * 1024 * 1024 });
    localRefs.push(image.id);
    const targets = ['a', 'b', 'c', 'd'].map((r) => `${host}/e2e/concurrent/${r}:1`);
    await Promise.all(
      targets.map((ref, i) => {
        const client = clients[i % clients.length];
        assert.ok(client);
        return client.push(image, ref);
      }),
    );
    for (const ref of targets) {
      await removeImages(image.id);
      await docker(['pull', ref]);
      assert.equal(await verifyImageContent(ref, image), undefined, ref);
    }
  });

  void test('multi-arch manifest list: docker manifest push, pull by tag, inspect raw', async () => {
    const amdRef = `${host}/e2e/multi-parts:amd64`;
    const armRef = `${host}/e2e/multi-parts:arm64`;
    const listRef = `${host}/e2e/multi:1`;
    // The legacy builder cannot build for another architecture; the list annotates the second image.
    const amd = await buildImage(amdRef);
    const arm = await buildImage(armRef);
    localRefs.push(amd.id, arm.id);
    const amdDigest = pushedDigest((await docker(['push', amdRef])).stdout);
    const armDigest = pushedDigest((await docker(['push', armRef])).stdout);

    const listDigest = await pushManifestList(listRef, [
      { ref: amdRef, os: 'linux', arch: 'amd64' },
      { ref: armRef, os: 'linux', arch: 'arm64' },
    ]);

    const list = await rawManifest(listRef);
    assert.equal(list.digest, listDigest);
    assert.equal(list.json.mediaType, dockerList);
    assert.deepEqual(
      list.json.manifests?.map((m) => [m.digest, m.platform?.os, m.platform?.architecture]),
      [
        [amdDigest, 'linux', 'amd64'],
        [armDigest, 'linux', 'arm64'],
      ],
    );
    // Children are reachable by digest in the list's repository.
    const child = await rawManifest(`${host}/e2e/multi@${armDigest}`);
    assert.equal(child.digest, armDigest);

    await removeImages(amd.id, arm.id);
    await docker(['pull', listRef]);
    assert.equal(await runImage(listRef), amd.marker, 'docker picks the linux/amd64 child');
    const { stdout } = await docker(['image', 'inspect', '--format', '{{join .RepoDigests ","}}', listRef]);
    assert.ok(stdout.includes(`${host}/e2e/multi@${listDigest}`), stdout);
  });
});
