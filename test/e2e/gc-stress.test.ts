// GC under load: two Wharf replicas share one storage root and run GC every second (grace 2 s,
// untagged manifests deleted) while clients push images that share layers, mount across repositories,
// trust blobs they pushed earlier without asking, re-tag, push indexes and referrers, and delete.
// Afterwards every manifest the registry holds pulls completely, no manifest PUT was ever accepted that
// references a missing blob, and a final GC leaves exactly the referenced blobs in storage.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { printOutput, repoRoot, startWharf, type RunningServer } from '../helpers/processes.js';
import { run } from '../helpers/tools.js';

const CLIENTS = 6;
const CLIENT_SECONDS = Number(process.env.GC_STRESS_SECONDS ?? 25);
const GRACE = '2s';
const REPOS = ['stress/a', 'stress/b', 'stress/c'];
const POOL_SIZE = 40;

const MT = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar',
  empty: 'application/vnd.oci.empty.v1+json',
};

const sha256 = (data: Buffer | string): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const pick = <T>(items: readonly T[]): T => {
  const item = items[Math.floor(Math.random() * items.length)];
  if (item === undefined) throw new Error('empty list');
  return item;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string };
}
interface Blob {
  data: Buffer;
  descriptor: Descriptor;
}
interface Manifest {
  bytes: Buffer;
  digest: string;
  mediaType: string;
  /** Blobs to push first (config and layers), or child manifests for an index. */
  blobs: Blob[];
  children: Manifest[];
}

const blob = (data: Buffer, mediaType: string): Blob => ({
  data,
  descriptor: { mediaType, digest: sha256(data), size: data.length },
});

function manifestOf(mediaType: string, doc: object, blobs: Blob[], children: Manifest[] = []): Manifest {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, ...doc }));
  return { bytes, digest: sha256(bytes), mediaType, blobs, children };
}

/** What went wrong, for one assertion at the end (an exception would stop the other clients' load). */
const violations: string[] = [];
const stats = { accepted: 0, blobUnknownRetries: 0, deletes: 0, pullChecks: 0, mounts: 0, trusted: 0 };

class StressClient {
  /** repo:tag → the manifest this client put there; only this client moves or deletes these tags. */
  readonly owned = new Map<string, Manifest>();
  /** Blobs this client pushed before: it sometimes trusts they are still there, as docker's cache does. */
  private readonly known = new Set<string>();
  private tagCounter = 0;

  constructor(
    private readonly id: number,
    private readonly servers: readonly RunningServer[],
    private readonly pool: readonly Blob[],
  ) {}

  private fetch(path: string, init: RequestInit = {}): Promise<Response> {
    return fetch(`${pick(this.servers).url}${path}`, { ...init, signal: AbortSignal.timeout(30_000) });
  }

  private async uploadBlob(repo: string, b: Blob): Promise<void> {
    const post = await this.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    await post.arrayBuffer();
    if (post.status !== 202) throw new Error(`POST upload: ${post.status}`);
    const location = new URL(post.headers.get('location') ?? '', 'http://x');
    location.searchParams.set('digest', b.descriptor.digest);
    const put = await this.fetch(`${location.pathname}${location.search}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: b.data,
    });
    await put.arrayBuffer();
    if (put.status !== 201) throw new Error(`PUT upload: ${put.status}`);
    this.known.add(`${repo}@${b.descriptor.digest}`);
  }

  /** Makes a blob available in `repo` the way clients do: trust, HEAD, mount, or upload. */
  private async ensureBlob(repo: string, b: Blob, force: boolean): Promise<void> {
    const key = `${repo}@${b.descriptor.digest}`;
    if (!force && this.known.has(key) && Math.random() < 0.5) {
      stats.trusted++;
      return;
    }
    if (!force) {
      const head = await this.fetch(`/v2/${repo}/blobs/${b.descriptor.digest}`, { method: 'HEAD' });
      if (head.status === 200) {
        this.known.add(key);
        return;
      }
      const from = pick(REPOS);
      if (from !== repo) {
        const mount = await this.fetch(
          `/v2/${repo}/blobs/uploads/?mount=${b.descriptor.digest}&from=${from}`,
          {
            method: 'POST',
          },
        );
        await mount.arrayBuffer();
        if (mount.status === 201) {
          stats.mounts++;
          this.known.add(key);
          return;
        }
      }
    }
    await this.uploadBlob(repo, b);
  }

  /** Pushes what a manifest needs, then the manifest; retries on MANIFEST_BLOB_UNKNOWN by re-uploading. */
  async push(repo: string, reference: string, m: Manifest): Promise<boolean> {
    for (let attempt = 0; attempt < 6; attempt++) {
      const force = attempt > 0;
      for (const child of m.children) {
        if (!(await this.push(repo, child.digest, child))) return false;
      }
      for (const b of m.blobs) await this.ensureBlob(repo, b, force);
      const res = await this.fetch(`/v2/${repo}/manifests/${reference}`, {
        method: 'PUT',
        headers: { 'content-type': m.mediaType },
        body: m.bytes,
      });
      const text = await res.text();
      if (res.status === 201) {
        stats.accepted++;
        await this.verifyAccepted(repo, m);
        return true;
      }
      if (res.status === 400 && text.includes('MANIFEST_BLOB_UNKNOWN')) {
        stats.blobUnknownRetries++;
        continue;
      }
      throw new Error(`PUT manifest ${repo}:${reference}: ${res.status} ${text}`);
    }
    violations.push(`client ${this.id}: ${repo} ${m.digest} still MANIFEST_BLOB_UNKNOWN after 6 attempts`);
    return false;
  }

  /** Right after a 201 nothing may be missing: the manifest is held, so every blob must be there. */
  private async verifyAccepted(repo: string, m: Manifest): Promise<void> {
    for (const child of m.children) {
      const res = await this.fetch(`/v2/${repo}/manifests/${child.digest}`, {
        headers: { accept: `${MT.manifest}, ${MT.index}` },
      });
      await res.arrayBuffer();
      if (res.status !== 200)
        violations.push(`accepted ${repo}@${m.digest} but child ${child.digest}: ${res.status}`);
    }
    for (const b of m.blobs) {
      const problem = await this.pullBlob(repo, b.descriptor.digest);
      if (problem) violations.push(`accepted ${repo}@${m.digest} but ${problem}`);
    }
  }

  async pullBlob(repo: string, digest: string): Promise<string | undefined> {
    const res = await this.fetch(`/v2/${repo}/blobs/${digest}`);
    const data = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200) return `blob ${digest}: ${res.status}`;
    if (sha256(data) !== digest) return `blob ${digest}: wrong content`;
    return undefined;
  }

  private image(): Manifest {
    const config = blob(
      Buffer.from(JSON.stringify({ client: this.id, nonce: randomBytes(8).toString('hex') })),
      MT.config,
    );
    const layers = [
      ...new Set(Array.from({ length: 1 + Math.floor(Math.random() * 2) }, () => pick(this.pool))),
    ];
    if (Math.random() < 0.5)
      layers.push(blob(randomBytes(1024 + Math.floor(Math.random() * 4096)), MT.layer));
    return manifestOf(MT.manifest, { config: config.descriptor, layers: layers.map((l) => l.descriptor) }, [
      config,
      ...layers,
    ]);
  }

  private ownedIn(repo: string): [string, Manifest][] {
    return [...this.owned].filter(([key]) => key.startsWith(`${repo}:`));
  }

  /** One random action. */
  async step(): Promise<void> {
    const repo = pick(REPOS);
    const roll = Math.random();
    const mine = this.ownedIn(repo);
    const tag = (): string => `c${this.id}-t${this.tagCounter++ % 2}`;
    if (roll < 0.3 || mine.length === 0) {
      const t = tag();
      const m = this.image();
      if (await this.push(repo, t, m)) this.owned.set(`${repo}:${t}`, m);
    } else if (roll < 0.38) {
      // A multi-arch index over two children pushed by digest.
      const [amd, arm] = [this.image(), this.image()];
      const index = manifestOf(
        MT.index,
        {
          manifests: [
            {
              mediaType: MT.manifest,
              digest: amd.digest,
              size: amd.bytes.length,
              platform: { architecture: 'amd64', os: 'linux' },
            },
            {
              mediaType: MT.manifest,
              digest: arm.digest,
              size: arm.bytes.length,
              platform: { architecture: 'arm64', os: 'linux' },
            },
          ],
        },
        [],
        [amd, arm],
      );
      const t = tag();
      if (await this.push(repo, t, index)) this.owned.set(`${repo}:${t}`, index);
    } else if (roll < 0.45) {
      // A referrer (untagged) of one of this client's images: alive as long as its subject is.
      const [, subject] = pick(mine);
      const empty = blob(Buffer.from('{}'), MT.empty);
      const sbom = blob(randomBytes(256), 'application/vnd.example.sbom');
      const artifact = manifestOf(
        MT.manifest,
        {
          artifactType: 'application/vnd.example.sbom',
          config: empty.descriptor,
          layers: [sbom.descriptor],
          subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.bytes.length },
        },
        [empty, sbom],
      );
      await this.push(repo, artifact.digest, artifact);
    } else if (roll < 0.55) {
      // Re-tag: the same manifest under another of this client's tags.
      const [, m] = pick(mine);
      const t = tag();
      if (await this.push(repo, t, m)) this.owned.set(`${repo}:${t}`, m);
    } else if (roll < 0.85) {
      // Delete by digest (every tag on it goes) or just the tag.
      const [key, m] = pick(mine);
      const byDigest = Math.random() < 0.6;
      const ref = byDigest ? m.digest : key.slice(repo.length + 1);
      const res = await this.fetch(`/v2/${repo}/manifests/${ref}`, { method: 'DELETE' });
      await res.arrayBuffer();
      if (res.status !== 202) throw new Error(`DELETE ${repo}:${ref}: ${res.status}`);
      stats.deletes++;
      for (const [k, held] of this.ownedIn(repo)) {
        if (k === key || (byDigest && held.digest === m.digest)) this.owned.delete(k);
      }
    } else {
      const [key, m] = pick(mine);
      stats.pullChecks++;
      const problem = await this.pullOwned(key, m);
      if (problem) violations.push(`client ${this.id}: ${key}: ${problem}`);
    }
  }

  /** A tag this client owns must name its manifest, and everything below it must pull. */
  async pullOwned(key: string, m: Manifest): Promise<string | undefined> {
    const repo = key.slice(0, key.lastIndexOf(':'));
    const tag = key.slice(key.lastIndexOf(':') + 1);
    const res = await this.fetch(`/v2/${repo}/manifests/${tag}`, {
      headers: { accept: `${MT.manifest}, ${MT.index}` },
    });
    const bytes = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200) return `manifest: ${res.status}`;
    if (sha256(bytes) !== m.digest) return `tag names ${sha256(bytes)}, not ${m.digest}`;
    return pullAll(this, repo, m);
  }
}

async function pullAll(client: StressClient, repo: string, m: Manifest): Promise<string | undefined> {
  for (const child of m.children) {
    const problem = await pullAll(client, repo, child);
    if (problem) return problem;
  }
  for (const b of m.blobs) {
    const problem = await client.pullBlob(repo, b.descriptor.digest);
    if (problem) return problem;
  }
  return undefined;
}

// ---- reading the storage root directly, independent of Wharf's code ----

async function filesUnder(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(path)));
    else out.push(path);
  }
  return out;
}

interface StoredTree {
  blobs: Set<string>;
  /** repo → manifest digests (revisions). */
  revisions: Map<string, string[]>;
  /** repo → `_layers` digests. */
  links: Map<string, string[]>;
}

async function readTree(root: string): Promise<StoredTree> {
  const v2 = join(root, 'docker/registry/v2');
  const blobs = new Set<string>();
  for (const f of await filesUnder(join(v2, 'blobs'))) {
    const m = /\/sha256\/[0-9a-f]{2}\/([0-9a-f]{64})\/data$/.exec(f);
    if (m) blobs.add(`sha256:${m[1] ?? ''}`);
  }
  const revisions = new Map<string, string[]>();
  const links = new Map<string, string[]>();
  for (const f of await filesUnder(join(v2, 'repositories'))) {
    const rev = /repositories\/(.+?)\/_manifests\/revisions\/sha256\/([0-9a-f]{64})\/link$/.exec(f);
    if (rev) revisions.set(rev[1] ?? '', [...(revisions.get(rev[1] ?? '') ?? []), `sha256:${rev[2] ?? ''}`]);
    const layer = /repositories\/(.+?)\/_layers\/sha256\/([0-9a-f]{64})\/link$/.exec(f);
    if (layer) links.set(layer[1] ?? '', [...(links.get(layer[1] ?? '') ?? []), `sha256:${layer[2] ?? ''}`]);
  }
  return { blobs, revisions, links };
}

/** Every digest the held manifests reference: themselves, configs, layers (children are revisions). */
async function referencedBy(root: string, tree: StoredTree): Promise<Set<string>> {
  const referenced = new Set<string>();
  for (const digests of tree.revisions.values()) {
    for (const digest of digests) {
      referenced.add(digest);
      const data = await readFile(
        join(root, 'docker/registry/v2/blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data'),
      );
      const doc = JSON.parse(data.toString('utf8')) as {
        config?: Descriptor;
        layers?: Descriptor[];
        manifests?: Descriptor[];
      };
      for (const d of [doc.config, ...(doc.layers ?? []), ...(doc.manifests ?? [])])
        if (d) referenced.add(d.digest);
    }
  }
  return referenced;
}

interface RunRecord {
  startedAt: string;
  blobs: { removed: number };
  manifests: { removed: number };
}

describe('gc stress: GC in a loop while clients push, share, re-tag and delete', () => {
  let root: string;
  const servers: RunningServer[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'wharf-e2e-gc-stress-'));
    const env = { WHARF_GC_INTERVAL: '1s', WHARF_GC_GRACE: GRACE, WHARF_GC_DELETEUNTAGGED: 'true' };
    servers.push(...(await Promise.all([startWharf({ root, env }), startWharf({ root, env })])));
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    servers.forEach((s, i) => {
      printOutput(s, `wharf replica ${i}`);
    });
    await rm(root, { recursive: true, force: true });
  });

  test(
    'no accepted manifest ever loses a blob, and a final GC leaves exactly what is referenced',
    { timeout: 150_000 },
    async () => {
      const pool = Array.from({ length: POOL_SIZE }, () =>
        blob(randomBytes(2048 + Math.floor(Math.random() * 8192)), MT.layer),
      );
      const clients = Array.from({ length: CLIENTS }, (_, i) => new StressClient(i, servers, pool));

      // Watch GC runs through the record each run leaves.
      const runs = new Map<string, RunRecord>();
      const watch = { on: true };
      const watcher = (async () => {
        while (watch.on) {
          try {
            const record = JSON.parse(
              await readFile(join(root, 'wharf/gc/last-run.json'), 'utf8'),
            ) as RunRecord;
            runs.set(record.startedAt, record);
          } catch {
            // not written yet, or being replaced
          }
          await sleep(200);
        }
      })();

      const deadline = Date.now() + CLIENT_SECONDS * 1000;
      await Promise.all(
        clients.map(async (client) => {
          while (Date.now() < deadline) {
            try {
              await client.step();
            } catch (err) {
              violations.push(`client error: ${err instanceof Error ? err.message : String(err)}`);
            }
          }
        }),
      );

      // No clients now. Let the scheduled GC collect everything older than the grace period.
      await sleep(5_000);
      watch.on = false;
      await watcher;
      const removedDuringRun = [...runs.values()].reduce((n, r) => n + r.blobs.removed, 0);
      const manifestsRemoved = [...runs.values()].reduce((n, r) => n + r.manifests.removed, 0);
      console.log(
        JSON.stringify({ ...stats, gcRuns: runs.size, blobsRemoved: removedDuringRun, manifestsRemoved }),
      );

      // Every tag a client still owns names its manifest and pulls completely.
      for (const client of clients) {
        for (const [key, m] of client.owned) {
          const problem = await client.pullOwned(key, m);
          if (problem) violations.push(`final: ${key}: ${problem}`);
        }
      }
      // Every manifest the registry holds pulls completely, by digest.
      const held = await readTree(root);
      const probe = clients[0];
      assert.ok(probe);
      for (const [repo, digests] of held.revisions) {
        for (const digest of digests) {
          const res = await fetch(`${servers[0]?.url ?? ''}/v2/${repo}/manifests/${digest}`, {
            headers: { accept: `${MT.manifest}, ${MT.index}` },
          });
          const bytes = Buffer.from(await res.arrayBuffer());
          if (res.status !== 200) {
            violations.push(`held ${repo}@${digest}: ${res.status}`);
            continue;
          }
          const doc = JSON.parse(bytes.toString('utf8')) as {
            config?: Descriptor;
            layers?: Descriptor[];
            manifests?: Descriptor[];
          };
          for (const d of [doc.config, ...(doc.layers ?? [])]) {
            const problem = d ? await probe.pullBlob(repo, d.digest) : undefined;
            if (problem) violations.push(`held ${repo}@${digest}: ${problem}`);
          }
          for (const child of doc.manifests ?? []) {
            if (!held.revisions.get(repo)?.includes(child.digest))
              violations.push(`held index ${repo}@${digest} lost child ${child.digest}`);
          }
        }
      }
      assert.deepEqual(violations, []);

      // A final GC with no clients and no servers: storage holds exactly the referenced blobs.
      await Promise.all(servers.map((s) => s.stop()));
      // The checks above downloaded blobs of untagged manifests too, and a download touches its blob:
      // wait out the grace period (2 s) and GC's clock slack (1 s) so that no touch protects them.
      await sleep(3500);
      const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'gc', '--json'], {
        cwd: repoRoot,
        env: {
          WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY: root,
          WHARF_GC_GRACE: GRACE,
          WHARF_GC_DELETEUNTAGGED: 'true',
          WHARF_LOG_LEVEL: 'warn',
        },
      });
      const final = JSON.parse(stdout) as { blobs: { removed: number } };
      const tree = await readTree(root);
      const referenced = await referencedBy(root, tree);
      assert.deepEqual(
        [...tree.blobs].sort(),
        [...referenced].sort(),
        'storage holds exactly the referenced blobs',
      );
      for (const [repo, digests] of tree.links) {
        for (const d of digests) assert.ok(tree.blobs.has(d), `${repo} links ${d}, which is not stored`);
      }
      await assert.rejects(stat(join(root, 'wharf/gc/lease')), 'the lease is released');
      console.log(JSON.stringify({ finalRemoved: final.blobs.removed, blobsLeft: tree.blobs.size }));

      // The load did what it is for: GC ran in a loop and removed things while clients raced it.
      assert.ok(runs.size >= 3, `gc runs seen: ${runs.size}`);
      assert.ok(
        removedDuringRun > 0 && manifestsRemoved > 0,
        'GC removed blobs and manifests during the run',
      );
      assert.ok(stats.accepted > 50, `accepted PUTs: ${stats.accepted}`);
    },
  );
});
