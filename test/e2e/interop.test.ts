// Storage interop with CNCF Distribution 2.8 (Debian's docker-registry), both directions: one registry
// writes a tree with real clients, it stops, the other serves the same tree, and everything pulls back.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  buildImage,
  listTags,
  pushManifestList,
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
  runDistributionGc,
  startDistribution,
  startWharf,
  type RunningServer,
} from '../helpers/processes.js';
import { docker, skopeo } from '../helpers/tools.js';

const skip = await requireTools('docker', 'busybox', 'skopeo', 'docker-registry');

const ociManifest = 'application/vnd.oci.image.manifest.v1+json';

/** An image written into the tree: where, with which manifest digest, and what it must contain. */
interface StoredImage {
  repo: string;
  tags: string[];
  digest: string;
  image: BuiltImage;
}

/** Everything the writing registry stored, i.e. what the reading registry must serve. */
interface Written {
  images: StoredImage[];
  list: { repo: string; tag: string; digest: string; first: BuiltImage };
  /**
   * Deleted tags; `digest` when the manifest was deleted too, with its config and layer digests.
   * Nothing else references the manifest and config, so a garbage collection removes them.
   */
  deleted: { repo: string; tag: string; digest?: string; blobs?: { config: string; layers: string[] } }[];
  tags: Map<string, string[]>;
}

const digestOf = (out: string): string => {
  const m = /digest: (sha256:[0-9a-f]{64})/.exec(out);
  assert.ok(m?.[1], `no digest in docker push output:\n${out}`);
  return m[1];
};

/**
 * Writes the interop content set through `server` with real clients: docker push (two tags on one
 * image), skopeo copy (Docker schema2 and OCI), a multi-arch list, a manifest deleted with skopeo delete,
 * and when the registry supports it, a tag deleted on its own.
 */
async function writeContent(
  server: RunningServer,
  tagDelete: boolean,
  localRefs: string[],
): Promise<Written> {
  const h = server.host;
  const build = async (name: string, layers = 0): Promise<BuiltImage> => {
    const image = await buildImage(`local/e2e-interop:${name}`, { layers, layerBytes: 256 * 1024 });
    localRefs.push(image.id);
    return image;
  };
  const dockerPush = async (image: BuiltImage, repo: string, tag: string): Promise<string> => {
    await docker(['tag', image.id, `${h}/${repo}:${tag}`]);
    return digestOf((await docker(['push', `${h}/${repo}:${tag}`])).stdout);
  };
  const skopeoPush = async (
    image: BuiltImage,
    repo: string,
    tag: string,
    format?: 'oci',
  ): Promise<string> => {
    const fmt = format === undefined ? [] : ['--format', format];
    await skopeo([
      'copy',
      '--dest-tls-verify=false',
      ...fmt,
      `docker-daemon:${image.id}`,
      `docker://${h}/${repo}:${tag}`,
    ]);
    return (await rawManifest(`${h}/${repo}:${tag}`)).digest;
  };

  const images: StoredImage[] = [];
  const byDocker = await build('docker', 2);
  const dockerDigest = await dockerPush(byDocker, 'interop/docker', '1');
  assert.equal(await dockerPush(byDocker, 'interop/docker', '2'), dockerDigest);
  images.push({ repo: 'interop/docker', tags: ['1', '2'], digest: dockerDigest, image: byDocker });

  const bySkopeo = await build('skopeo', 1);
  const skopeoDigest = await skopeoPush(bySkopeo, 'interop/skopeo', 'v1');
  images.push({ repo: 'interop/skopeo', tags: ['v1'], digest: skopeoDigest, image: bySkopeo });

  const asOci = await build('oci', 1);
  const ociDigest = await skopeoPush(asOci, 'interop/oci', 'latest', 'oci');
  assert.equal((await rawManifest(`${h}/interop/oci:latest`)).json.mediaType, ociManifest);
  images.push({ repo: 'interop/oci', tags: ['latest'], digest: ociDigest, image: asOci });

  const amd = await build('amd64');
  const arm = await build('arm64');
  const amdDigest = await dockerPush(amd, 'interop/multi-parts', 'amd64');
  const armDigest = await dockerPush(arm, 'interop/multi-parts', 'arm64');
  images.push({ repo: 'interop/multi-parts', tags: ['amd64'], digest: amdDigest, image: amd });
  images.push({ repo: 'interop/multi-parts', tags: ['arm64'], digest: armDigest, image: arm });
  const listDigest = await pushManifestList(`${h}/interop/multi:1`, [
    { ref: `${h}/interop/multi-parts:amd64`, os: 'linux', arch: 'amd64' },
    { ref: `${h}/interop/multi-parts:arm64`, os: 'linux', arch: 'arm64' },
  ]);

  // skopeo delete resolves the tag and deletes the manifest by digest, which untags it.
  const kept = await build('kept');
  const gone = await build('gone');
  const keptDigest = await dockerPush(kept, 'interop/deleted', 'kept');
  const goneDigest = await dockerPush(gone, 'interop/deleted', 'gone');
  const goneManifest = (await rawManifest(`${h}/interop/deleted:gone`)).json;
  assert.ok(goneManifest.config);
  const goneBlobs = {
    config: goneManifest.config.digest,
    layers: (goneManifest.layers ?? []).map((l) => l.digest),
  };
  await skopeo(['delete', '--tls-verify=false', `docker://${h}/interop/deleted:gone`]);
  images.push({ repo: 'interop/deleted', tags: ['kept'], digest: keptDigest, image: kept });
  const deleted: Written['deleted'] = [
    { repo: 'interop/deleted', tag: 'gone', digest: goneDigest, blobs: goneBlobs },
  ];

  const tags = new Map<string, string[]>([
    ['interop/docker', ['1', '2']],
    ['interop/skopeo', ['v1']],
    ['interop/oci', ['latest']],
    ['interop/multi-parts', ['amd64', 'arm64']],
    ['interop/multi', ['1']],
    ['interop/deleted', ['kept']],
  ]);

  if (tagDelete) {
    // DELETE on a tag removes only the tag; the manifest stays reachable by digest and other tags.
    const tagged = await build('tagdel');
    const digest = await dockerPush(tagged, 'interop/tagdel', 'stays');
    await dockerPush(tagged, 'interop/tagdel', 'untagged');
    const res = await fetch(`${server.url}/v2/interop/tagdel/manifests/untagged`, { method: 'DELETE' });
    await res.arrayBuffer();
    assert.equal(res.status, 202, 'DELETE of a tag');
    images.push({ repo: 'interop/tagdel', tags: ['stays'], digest, image: tagged });
    deleted.push({ repo: 'interop/tagdel', tag: 'untagged' });
    tags.set('interop/tagdel', ['stays']);
  }

  return { images, list: { repo: 'interop/multi', tag: '1', digest: listDigest, first: amd }, deleted, tags };
}

interface Direction {
  name: string;
  writer: (root: string) => Promise<RunningServer>;
  reader: (root: string) => Promise<RunningServer>;
  tagDelete: boolean;
}

const directions: Direction[] = [
  {
    name: 'a tree written by Distribution is served by Wharf',
    writer: (root) => startDistribution({ root }),
    reader: (root) => startWharf({ root }),
    tagDelete: false, // Distribution 2.8 answers UNSUPPORTED to a tag DELETE.
  },
  {
    name: 'a tree written by Wharf is served by Distribution',
    writer: (root) => startWharf({ root }),
    reader: (root) => startDistribution({ root }),
    tagDelete: true,
  },
];

for (const direction of directions) {
  void describe(`interop: ${direction.name}`, { skip, timeout: 170_000 }, () => {
    let root = '';
    let work = '';
    let writer: RunningServer | undefined;
    let reader: RunningServer | undefined;
    const started: RunningServer[] = [];
    let written: Written;
    let gcOutput = '';
    const localRefs: string[] = [];

    before(async () => {
      root = await mkdtemp(join(tmpdir(), 'wharf-e2e-interop-root-'));
      work = await mkdtemp(join(tmpdir(), 'wharf-e2e-interop-'));
      writer = await direction.writer(root);
      started.push(writer);
      written = await writeContent(writer, direction.tagDelete, localRefs);
      await writer.stop();
      writer = undefined;
      // Distribution's collector must find every live blob in the tree, and only the deleted image's.
      gcOutput = await runDistributionGc(root);
      reader = await direction.reader(root);
      started.push(reader);
      // Pulls below must fetch every layer from the reader, not reuse the engine's copies.
      await removeImages(...localRefs);
    });

    after(async () => {
      await writer?.stop();
      await reader?.stop();
      for (const [i, s] of started.entries()) printOutput(s, i === 0 ? 'writer' : 'reader');
      await removeImages(...localRefs);
      for (const dir of [root, work]) if (dir !== '') await rm(dir, { recursive: true, force: true });
    });

    const ref = (repo: string, tagOrDigest: string): string => {
      assert.ok(reader);
      return tagOrDigest.startsWith('sha256:')
        ? `${reader.host}/${repo}@${tagOrDigest}`
        : `${reader.host}/${repo}:${tagOrDigest}`;
    };

    void test('every manifest is served byte for byte, by tag and by digest', async () => {
      for (const stored of written.images) {
        for (const tag of stored.tags) {
          assert.equal(
            (await rawManifest(ref(stored.repo, tag))).digest,
            stored.digest,
            `${stored.repo}:${tag}`,
          );
        }
        assert.equal((await rawManifest(ref(stored.repo, stored.digest))).digest, stored.digest);
      }
      const list = await rawManifest(ref(written.list.repo, written.list.tag));
      assert.equal(list.digest, written.list.digest);
      for (const child of list.json.manifests ?? []) {
        assert.equal((await rawManifest(ref(written.list.repo, child.digest))).digest, child.digest);
      }
    });

    void test('docker pulls and runs every image', async () => {
      for (const stored of written.images) {
        const r = ref(stored.repo, stored.tags[0] ?? '');
        await docker(['pull', r]);
        localRefs.push(r);
        assert.equal(await verifyImageContent(r, stored.image), undefined, r);
      }
      const listRef = ref(written.list.repo, written.list.tag);
      await removeImages(written.list.first.id);
      await docker(['pull', listRef]);
      localRefs.push(listRef);
      assert.equal(await runImage(listRef), written.list.first.marker);
    });

    void test('skopeo copies every image to an OCI layout with the same content', async () => {
      for (const [i, stored] of written.images.entries()) {
        const layout = join(work, `layout-${i}`);
        const r = ref(stored.repo, stored.tags[0] ?? '');
        await skopeo(['copy', '--src-tls-verify=false', `docker://${r}`, `oci:${layout}:t`]);
        const copied = await readOciLayout(layout, 't');
        assert.equal(verifyLayoutContent(copied, stored.image), undefined, r);
        const served = await rawManifest(r);
        // skopeo converts Docker schema2 into OCI (manifest and config) on the way into a layout; layer
        // blobs are copied as they are. An OCI image arrives unchanged.
        assert.deepEqual(
          copied.manifest.layers?.map((l) => l.digest),
          served.json.layers?.map((l) => l.digest),
        );
        if (served.json.mediaType === ociManifest) {
          assert.equal(copied.manifestDigest, stored.digest);
          assert.equal(copied.manifest.config?.digest, served.json.config?.digest);
        }
      }
    });

    void test('tags and catalog list what was written', async () => {
      assert.ok(reader);
      for (const [repo, tags] of written.tags) {
        assert.deepEqual(await listTags(`${reader.host}/${repo}`), [...tags].sort(), repo);
      }
      const res = await fetch(`${reader.url}/v2/_catalog`);
      assert.equal(res.status, 200);
      const { repositories } = (await res.json()) as { repositories: string[] };
      assert.deepEqual(repositories, [...written.tags.keys()].sort());
    });

    void test('deleted tags and manifests stay deleted, collected blobs are gone', async () => {
      for (const d of written.deleted) {
        await assert.rejects(rawManifest(ref(d.repo, d.tag)), `${d.repo}:${d.tag}`);
        if (d.digest !== undefined) await assert.rejects(rawManifest(ref(d.repo, d.digest)), d.digest);
        if (d.digest !== undefined && d.blobs !== undefined) {
          // Only the deleted image's manifest, config and its own layers may be collected.
          const eligible = [...gcOutput.matchAll(/blob eligible for deletion: (sha256:[0-9a-f]{64})/g)].map(
            (m) => m[1] ?? '',
          );
          const allowed = new Set([d.digest, d.blobs.config, ...d.blobs.layers]);
          assert.ok(eligible.includes(d.digest) && eligible.includes(d.blobs.config), gcOutput);
          for (const blob of eligible) {
            assert.ok(allowed.has(blob), `collector would delete ${blob}:\n${gcOutput}`);
          }
          assert.ok(reader);
          const res = await fetch(`${reader.url}/v2/${d.repo}/blobs/${d.blobs.config}`, { method: 'HEAD' });
          assert.equal(res.status, 404, `collected blob ${d.blobs.config}`);
        }
      }
    });
  });
}
