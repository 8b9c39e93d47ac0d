// skopeo against a running Wharf: copies between repositories and through OCI layouts, inspect,
// list-tags and delete; and one push/pull round trip run with every pair of clients.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  buildImage,
  clients,
  listTags,
  pushManifestList,
  rawManifest,
  readOciLayout,
  removeImages,
  requireTools,
  verifyImageContent,
  verifyLayoutContent,
  type BuiltImage,
} from '../helpers/images.js';
import { startRegistryUnderTest, printOutput, type RunningServer } from '../helpers/processes.js';
import { docker, skopeo } from '../helpers/tools.js';

const skip = await requireTools('docker', 'busybox', 'skopeo');

const ociManifest = 'application/vnd.oci.image.manifest.v1+json';
const ociIndex = 'application/vnd.oci.image.index.v1+json';
const noTls = ['--src-tls-verify=false', '--dest-tls-verify=false'];

void describe('skopeo against wharf', { skip, timeout: 170_000 }, () => {
  let server: RunningServer | undefined;
  let host = '';
  let work = '';
  let source: BuiltImage;
  let sourceRef = '';
  const localRefs: string[] = [];

  before(async () => {
    server = await startRegistryUnderTest();
    host = server.host;
    work = await mkdtemp(join(tmpdir(), 'wharf-e2e-skopeo-'));
    sourceRef = `${host}/e2e/source:1`;
    source = await buildImage(sourceRef, { layers: 2, layerBytes: 256 * 1024 });
    localRefs.push(source.id);
    await docker(['push', sourceRef]);
  });

  after(async () => {
    await removeImages(...localRefs);
    await server?.stop();
    printOutput(server, 'registry');
    if (work !== '') await rm(work, { recursive: true, force: true });
  });

  void describe('push with one client, pull with another, content intact', () => {
    for (const pusher of clients) {
      for (const puller of clients) {
        void test(`push with ${pusher.name}, pull with ${puller.name}`, async () => {
          const ref = `${host}/e2e/roundtrip/${pusher.name}-${puller.name}:1`;
          const image = await buildImage(`local/e2e-roundtrip:${pusher.name}-${puller.name}`, {
            layers: 1,
            layerBytes: 128 * 1024,
          });
          localRefs.push(image.id);
          await pusher.push(image, ref);
          await removeImages(image.id);
          await puller.pull(ref);
          assert.equal(await verifyImageContent(ref, image), undefined);
        });
      }
    }
  });

  void test('copy docker:// to docker:// keeps the manifest bytes', async () => {
    const dest = `${host}/e2e/copies/one:copied`;
    await skopeo(['copy', ...noTls, `docker://${sourceRef}`, `docker://${dest}`]);
    const [src, dst] = await Promise.all([rawManifest(sourceRef), rawManifest(dest)]);
    assert.equal(dst.raw, src.raw);
    assert.equal(dst.digest, src.digest);
  });

  void test('copy to an OCI layout and back', async () => {
    const layout = join(work, 'layout');
    await skopeo(['copy', '--src-tls-verify=false', `docker://${sourceRef}`, `oci:${layout}:v1`]);
    const image = await readOciLayout(layout, 'v1');
    assert.equal(verifyLayoutContent(image, source), undefined);

    const back = `${host}/e2e/from-oci:v1`;
    await skopeo(['copy', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${back}`]);
    const served = await rawManifest(back);
    assert.equal(served.json.mediaType, ociManifest);
    assert.equal(served.digest, image.manifestDigest, 'the OCI manifest is stored byte for byte');

    await removeImages(back);
    await docker(['pull', back]);
    localRefs.push(back);
    assert.equal(await verifyImageContent(back, source), undefined);
  });

  void test('inspect reports digest, platform, layers and tags', async () => {
    const { stdout } = await skopeo(['inspect', '--tls-verify=false', `docker://${sourceRef}`]);
    const info = JSON.parse(stdout) as {
      Digest: string;
      RepoTags: string[];
      Architecture: string;
      Os: string;
      Layers: string[];
    };
    assert.equal(info.Digest, (await rawManifest(sourceRef)).digest);
    assert.equal(info.Os, 'linux');
    assert.equal(info.Architecture, 'amd64');
    assert.equal(info.Layers.length, 4, 'busybox, marker and two data layers');
    assert.deepEqual(info.RepoTags, ['1']);
  });

  void test('list-tags lists every tag, and fails for an unknown repository', async () => {
    const repo = `${host}/e2e/tagged`;
    for (const tag of ['b', 'a', 'v1.0', 'latest']) {
      await skopeo(['copy', ...noTls, `docker://${sourceRef}`, `docker://${repo}:${tag}`]);
    }
    assert.deepEqual(await listTags(repo), ['a', 'b', 'latest', 'v1.0']);
    await assert.rejects(listTags(`${host}/e2e/never-pushed`));
  });

  void test('delete removes the manifest and its tag, and leaves other tags', async () => {
    const repo = `${host}/e2e/deleting`;
    const other = await buildImage(`local/e2e-delete:other`);
    localRefs.push(other.id);
    await skopeo(['copy', ...noTls, `docker://${sourceRef}`, `docker://${repo}:gone`]);
    await skopeo(['copy', '--dest-tls-verify=false', `docker-daemon:${other.id}`, `docker://${repo}:kept`]);
    const gone = await rawManifest(`${repo}:gone`);

    await skopeo(['delete', '--tls-verify=false', `docker://${repo}:gone`]);

    assert.deepEqual(await listTags(repo), ['kept']);
    await assert.rejects(rawManifest(`${repo}:gone`));
    await assert.rejects(rawManifest(`${repo}@${gone.digest}`));
    // The same manifest in another repository is untouched.
    assert.equal((await rawManifest(sourceRef)).digest, gone.digest);
    await removeImages(other.id);
    await docker(['pull', `${repo}:kept`]);
    localRefs.push(`${repo}:kept`);
    assert.equal(await verifyImageContent(`${repo}:kept`, other), undefined);
  });

  void test('copy --all of a multi-arch list between repositories and through an OCI layout', async () => {
    const amdRef = `${host}/e2e/multi-parts:amd64`;
    const armRef = `${host}/e2e/multi-parts:arm64`;
    const amd = await buildImage(amdRef);
    const arm = await buildImage(armRef);
    localRefs.push(amd.id, arm.id);
    await docker(['push', amdRef]);
    await docker(['push', armRef]);
    const listRef = `${host}/e2e/multi:1`;
    const listDigest = await pushManifestList(listRef, [
      { ref: amdRef, os: 'linux', arch: 'amd64' },
      { ref: armRef, os: 'linux', arch: 'arm64' },
    ]);

    const copyRef = `${host}/e2e/multi-copy:1`;
    await skopeo(['copy', '--all', ...noTls, `docker://${listRef}`, `docker://${copyRef}`]);
    const copied = await rawManifest(copyRef);
    assert.equal(copied.digest, listDigest);
    for (const child of copied.json.manifests ?? []) {
      assert.equal((await rawManifest(`${host}/e2e/multi-copy@${child.digest}`)).digest, child.digest);
    }

    // An OCI layout holds OCI media types, so skopeo converts the list into an OCI index.
    const layout = join(work, 'multi-layout');
    await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://${listRef}`, `oci:${layout}:multi`]);
    const ociRef = `${host}/e2e/multi-oci:1`;
    await skopeo(['copy', '--all', '--dest-tls-verify=false', `oci:${layout}:multi`, `docker://${ociRef}`]);
    const index = await rawManifest(ociRef);
    assert.equal(index.json.mediaType, ociIndex);
    assert.deepEqual(
      index.json.manifests?.map((m) => [m.mediaType, m.platform?.architecture]),
      [
        [ociManifest, 'amd64'],
        [ociManifest, 'arm64'],
      ],
    );
    const arm64 = (index.json.manifests ?? [])[1];
    assert.ok(arm64);
    const layoutArm = join(work, 'arm-layout');
    await skopeo([
      'copy',
      '--src-tls-verify=false',
      `docker://${host}/e2e/multi-oci@${arm64.digest}`,
      `oci:${layoutArm}:arm`,
    ]);
    assert.equal(verifyLayoutContent(await readOciLayout(layoutArm, 'arm'), arm), undefined);

    // Docker resolves the OCI index to its linux/amd64 child.
    await removeImages(amd.id, arm.id);
    await docker(['pull', ociRef]);
    localRefs.push(ociRef);
    assert.equal(await verifyImageContent(ociRef, amd), undefined);
  });
});
