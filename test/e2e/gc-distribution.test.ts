// Wharf's GC agrees with CNCF Distribution 2.8's (Debian's docker-registry): on one storage tree with
// shared layers, multi-arch indexes, untagged manifests, deleted tags and deleted manifests, both dry
// runs name the same blobs. After Wharf's real run, Distribution finds nothing left to collect.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import supertest from 'supertest';
import {
  MT,
  configBlob,
  dockerManifest,
  dockerManifestList,
  expectStatus,
  ociIndex,
  ociManifest,
  pushArtifact,
  pushBlob,
  pushManifest,
  randomBlob,
  withPlatform,
  type Client,
  type Descriptor,
  type Manifest,
} from '../helpers/oci.js';
import {
  printOutput,
  repoRoot,
  runDistributionGc,
  startWharf,
  type RunningServer,
} from '../helpers/processes.js';
import { requireTools, run } from '../helpers/tools.js';

const skip = await requireTools('docker-registry');

/** `wharf gc` from source on a filesystem root; grace 0, as Distribution has none. */
async function wharf(root: string, args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
    cwd: repoRoot,
    env: { WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY: root, WHARF_GC_GRACE: '0s', WHARF_LOG_LEVEL: 'warn' },
  });
  return stdout;
}

const distributionEligible = (output: string): string[] =>
  [...output.matchAll(/blob eligible for deletion: (sha256:[0-9a-f]{64})/g)].map((m) => m[1] ?? '').sort();

interface GcJson {
  removed: { blobs: { digest: string }[]; manifests: string[] };
  blobs: { removed: number };
}

/** Builds the tree through a running Wharf; returns the blobs that must go and some that must stay. */
async function writeTree(r: Client): Promise<{ garbage: string[]; kept: string[] }> {
  const layer = (size = 700) => randomBlob(size);
  const image = async (repo: string, layers: Descriptor[], docker = false): Promise<Manifest> => {
    const config = await pushBlob(r, repo, configBlob(), docker ? MT.dockerConfig : MT.ociConfig);
    return docker ? dockerManifest({ config, layers }) : ociManifest({ config, layers });
  };
  const configOf = (m: Manifest) =>
    (JSON.parse(m.bytes.toString('utf8')) as { config: Descriptor }).config.digest;

  // Shared layers across two repositories (one mounted).
  const shared = await pushBlob(r, 'apps/a', layer(), MT.ociLayer);
  const ownA = await pushBlob(r, 'apps/a', layer(), MT.ociLayer);
  const a1 = await image('apps/a', [shared, ownA]);
  await pushManifest(r, 'apps/a', 'v1', a1);
  // An image whose tag is deleted: untagged, kept by both without --delete-untagged.
  const a2 = await image('apps/a', [shared, await pushBlob(r, 'apps/a', layer(), MT.ociLayer)]);
  await pushManifest(r, 'apps/a', 'v2', a2);
  expectStatus(await r.delete('/v2/apps/a/manifests/v2'), 202);
  // A deleted manifest: its own layer and config become garbage, the shared layer stays.
  const gone = await pushBlob(r, 'apps/a', layer(), MT.ociLayer);
  const a3 = await image('apps/a', [shared, gone]);
  await pushManifest(r, 'apps/a', 'v3', a3);
  expectStatus(await r.delete(`/v2/apps/a/manifests/${a3.digest}`), 202);
  // A referrer of a live image (an untagged artifact).
  await pushArtifact(r, 'apps/a', { subject: a1.descriptor });

  expectStatus(await r.post(`/v2/apps/b/blobs/uploads/?mount=${shared.digest}&from=apps/a`), 201);
  const b1 = await image('apps/b', [shared], true);
  await pushManifest(r, 'apps/b', 'latest', b1);
  const b2 = await image('apps/b', [shared, await pushBlob(r, 'apps/b', layer(), MT.dockerLayer)], true);
  await pushManifest(r, 'apps/b', 'latest', b2); // b1 untagged now

  // A multi-arch OCI index and a Docker manifest list, children pushed by digest.
  const children: Manifest[] = [];
  expectStatus(await r.post(`/v2/multi/blobs/uploads/?mount=${shared.digest}`), 201);
  for (let i = 0; i < 2; i++) {
    const child = await image('multi', [await pushBlob(r, 'multi', layer(), MT.ociLayer), shared]);
    await pushManifest(r, 'multi', child.digest, child);
    children.push(child);
  }
  const [amd, arm] = children as [Manifest, Manifest];
  await pushManifest(
    r,
    'multi',
    'oci',
    ociIndex({ manifests: [withPlatform(amd.descriptor, 'amd64'), withPlatform(arm.descriptor, 'arm64')] }),
  );
  const dockerChild = await image('multi', [await pushBlob(r, 'multi', layer(), MT.dockerLayer)], true);
  await pushManifest(r, 'multi', dockerChild.digest, dockerChild);
  await pushManifest(
    r,
    'multi',
    'docker',
    dockerManifestList([withPlatform(dockerChild.descriptor, 'amd64')]),
  );
  // A deleted index: the index blob goes; its children stay (they are revisions of their own).
  const dropped = ociIndex({ manifests: [withPlatform(amd.descriptor, 'amd64')] });
  await pushManifest(r, 'multi', 'dropped', dropped);
  expectStatus(await r.delete(`/v2/multi/manifests/${dropped.digest}`), 202);

  // Blobs nothing ever referenced.
  const orphans = [await pushBlob(r, 'orphans', layer(64)), await pushBlob(r, 'apps/a', layer(64))];

  return {
    garbage: [a3.digest, configOf(a3), gone.digest, dropped.digest, ...orphans.map((o) => o.digest)].sort(),
    kept: [shared.digest, a1.digest, a2.digest, b1.digest, amd.digest, dockerChild.digest, configOf(a2)],
  };
}

describe('gc agrees with CNCF Distribution 2.8', { skip }, () => {
  let root: string;
  let server: RunningServer | undefined;
  let tree: { garbage: string[]; kept: string[] };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'wharf-e2e-gc-distribution-'));
    server = await startWharf({ root });
    tree = await writeTree(supertest(server.url));
    await server.stop();
    // Everything was written more than GC's clock slack (1 s) ago.
    await new Promise((resolve) => setTimeout(resolve, 1200));
  });
  after(async () => {
    await server?.stop();
    printOutput(server, 'wharf');
    await rm(root, { recursive: true, force: true });
  });

  test('both dry runs name the same blobs, and nothing is deleted', async () => {
    const distribution = distributionEligible(await runDistributionGc(root, { dryRun: true }));
    const summary = JSON.parse(await wharf(root, ['gc', '--dry-run', '--json'])) as GcJson;
    const named = summary.removed.blobs.map((b) => b.digest).sort();
    assert.deepEqual(named, distribution, 'Wharf and Distribution name the same blobs');
    assert.deepEqual(named, tree.garbage, 'and exactly the garbage the tree holds');
    for (const digest of tree.kept) assert.ok(!named.includes(digest), `${digest} is kept`);
    assert.deepEqual(summary.removed.manifests, [], 'untagged manifests are kept without the flag');
    // Nothing moved: Distribution still names the same set.
    assert.deepEqual(distributionEligible(await runDistributionGc(root, { dryRun: true })), distribution);
  });

  test('after wharf gc, Distribution finds nothing left to collect and du counts no garbage', async () => {
    const text = await wharf(root, ['gc']);
    assert.match(text, new RegExp(`blobs removed: ${tree.garbage.length} `));
    assert.deepEqual(distributionEligible(await runDistributionGc(root, { dryRun: true })), []);
    const usage = JSON.parse(await wharf(root, ['du', '--json'])) as {
      total: { unreferencedBytes: number; ratio: number; logicalBytes: number; storedBytes: number };
      repositories: { name: string }[];
    };
    assert.equal(usage.total.unreferencedBytes, 0);
    assert.ok(usage.total.logicalBytes > usage.total.storedBytes, 'shared layers are stored once');
    // `orphans` held nothing but a link to a collected blob, so it is gone with it.
    assert.deepEqual(
      usage.repositories.map((r) => r.name),
      ['apps/a', 'apps/b', 'multi'],
    );
  });
});
