import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import type { Digest } from '../registry/digest.js';
import { deleteIfExists } from '../registry/links.js';
import { pathFor } from '../registry/paths.js';
import type { Lease } from './lease.js';
import type { ManifestRef, Marker } from './mark.js';
import { forEachLimit } from './pool.js';
import type { Progress } from './progress.js';
import type { GcRecords } from './records.js';
import { toDigest, type ManifestReader, type RepositoryScan, type StorageScan } from './scan.js';

export interface SweepContext {
  readonly driver: StorageDriver;
  readonly records: GcRecords;
  /** Written into tombstones, for whoever finds one left behind. */
  readonly owner: string;
  /** Epoch ms: a digest used after this is kept (T0 − grace − clock slack). */
  readonly threshold: number;
  readonly lease: Lease | undefined;
  readonly signal: AbortSignal | undefined;
  readonly progress: Progress;
  /** How many digests the sweep decides on at once. */
  readonly concurrency: number;
}

/** A blob (or links to one whose data is gone) that nothing marked and nobody used since the threshold. */
export interface BlobCandidate {
  readonly digest: string;
  /** Bytes of data, 0 when only dangling links are left. */
  readonly size: number;
  readonly hasData: boolean;
  /** Repositories with a `_layers` link to it. */
  readonly links: readonly string[];
}

function checkpoint(ctx: SweepContext): void {
  ctx.signal?.throwIfAborted();
  ctx.lease?.assertHeld();
}

const used = (time: Date | undefined, threshold: number): boolean =>
  time !== undefined && time.getTime() > threshold;

/**
 * The tombstone step of the protocol (src/gc/collect.ts): tombstone the digest, then ask `stillUnused`,
 * which re-reads its touch; delete only if it says so. The tombstone goes last, after the deletion.
 */
async function underTombstone(
  ctx: SweepContext,
  digest: Digest,
  stillUnused: () => Promise<boolean>,
  remove: () => Promise<void>,
): Promise<boolean> {
  await ctx.records.writeTombstone(digest, ctx.owner);
  try {
    if (!(await stillUnused())) return false;
    await remove();
    return true;
  } finally {
    await ctx.records.removeTombstone(digest);
  }
}

async function modTimeOf(driver: StorageDriver, path: string): Promise<Date | undefined> {
  try {
    return (await driver.stat(path)).modTime;
  } catch (err) {
    if (err instanceof PathNotFoundError) return undefined;
    throw err;
  }
}

export interface ManifestSweepResult {
  readonly removed: ManifestRef[];
  readonly spared: number;
}

/**
 * Deletes untagged manifests (revision link, tag history entries, referrer entries), parents before
 * children: an index the sweep spares must still find its children. A spared manifest becomes a root,
 * and what it keeps alive leaves the list.
 */
export async function sweepManifests(
  ctx: SweepContext,
  scan: StorageScan,
  reader: ManifestReader,
  marker: Marker,
  dead: readonly ManifestRef[],
): Promise<ManifestSweepResult> {
  const removed: ManifestRef[] = [];
  let spared = 0;
  let pending = dead.filter((ref) => !marker.isLive(ref));
  ctx.progress.phase('removing untagged manifests', pending.length);
  while (pending.length > 0) {
    const byDigest = groupByDigest(pending);
    const blocked = new Set<string>();
    for (const ref of pending) {
      const loaded = await reader.load(ref.digest);
      if (loaded.state !== 'ok') continue;
      for (const child of loaded.refs.children) {
        const c = child.toString();
        if (c !== ref.digest && byDigest.has(c)) blocked.add(c);
      }
    }
    let wave = [...byDigest].filter(([digest]) => !blocked.has(digest));
    // Content addressing rules out cycles; should a broken tree fake one, do not loop forever.
    if (wave.length === 0) wave = [...byDigest];
    const sparedRoots: ManifestRef[] = [];
    await forEachLimit(wave, ctx.concurrency, async ([digest, refs]) => {
      checkpoint(ctx);
      const d = toDigest(digest);
      const repos = refs.map((ref) => scan.repositories.get(ref.repo)).filter((r) => r !== undefined);
      const deleted = await underTombstone(
        ctx,
        d,
        async () => !used(await ctx.records.touchTime(d), ctx.threshold),
        async () => {
          for (const repo of repos) await removeRevision(ctx.driver, repo, d);
        },
      );
      if (deleted) removed.push(...refs);
      else {
        spared += refs.length;
        sparedRoots.push(...refs);
      }
      ctx.progress.advance(refs.length);
    });
    if (sparedRoots.length > 0) await marker.mark(sparedRoots);
    const done = new Set(wave.map(([digest]) => digest));
    pending = pending.filter((ref) => !done.has(ref.digest) && !marker.isLive(ref));
  }
  return { removed, spared };
}

function groupByDigest(refs: readonly ManifestRef[]): Map<string, ManifestRef[]> {
  const groups = new Map<string, ManifestRef[]>();
  for (const ref of refs) {
    const list = groups.get(ref.digest);
    if (list) list.push(ref);
    else groups.set(ref.digest, [ref]);
  }
  return groups;
}

async function removeRevision(driver: StorageDriver, repo: RepositoryScan, digest: Digest): Promise<void> {
  const name = repo.name;
  const key = digest.toString();
  for (const tag of repo.tagHistory.get(key) ?? []) {
    const entry = pathFor({ kind: 'tagIndexEntryLink', name, tag, digest });
    await deleteIfExists(driver, entry.slice(0, -'/link'.length));
  }
  for (const subject of repo.referrerEntries.get(key) ?? []) {
    await deleteIfExists(
      driver,
      pathFor({ kind: 'referrerEntry', name, subject: toDigest(subject), digest }),
    );
  }
  await deleteIfExists(driver, pathFor({ kind: 'manifestRevisionDir', name, digest }));
}

/**
 * Blobs to sweep: not marked, and neither their data, any repository link to them, nor their touch
 * is newer than the threshold. Digests with links but no data (left by an earlier deletion) count too.
 */
export function blobCandidates(
  scan: StorageScan,
  marked: ReadonlySet<string>,
  threshold: number,
): BlobCandidate[] {
  const links = new Map<string, { repos: string[]; newest: number }>();
  for (const repo of scan.repositories.values()) {
    for (const [digest, modTime] of repo.layers) {
      const entry = links.get(digest) ?? { repos: [], newest: 0 };
      entry.repos.push(repo.name);
      entry.newest = Math.max(entry.newest, modTime.getTime());
      links.set(digest, entry);
    }
  }
  const candidates: BlobCandidate[] = [];
  for (const digest of new Set([...scan.blobs.keys(), ...links.keys()])) {
    if (marked.has(digest)) continue;
    const data = scan.blobs.get(digest);
    const link = links.get(digest);
    const lastUse = Math.max(
      data?.modTime.getTime() ?? 0,
      link?.newest ?? 0,
      scan.touches.get(digest)?.getTime() ?? 0,
    );
    if (lastUse > threshold) continue;
    candidates.push({ digest, size: data?.size ?? 0, hasData: data !== undefined, links: link?.repos ?? [] });
  }
  return candidates.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
}

export interface BlobSweepResult {
  readonly removed: BlobCandidate[];
  readonly linksRemoved: number;
  readonly spared: number;
}

/** Deletes each candidate's data, its repository links and its touch, under a tombstone. */
export async function sweepBlobs(
  ctx: SweepContext,
  candidates: readonly BlobCandidate[],
): Promise<BlobSweepResult> {
  const removed: BlobCandidate[] = [];
  let linksRemoved = 0;
  let spared = 0;
  ctx.progress.phase('removing blobs', candidates.length);
  await forEachLimit(candidates, ctx.concurrency, async (candidate) => {
    checkpoint(ctx);
    const digest = toDigest(candidate.digest);
    const dataPath = pathFor({ kind: 'blobData', digest });
    const deleted = await underTombstone(
      ctx,
      digest,
      async () => {
        if (used(await ctx.records.touchTime(digest), ctx.threshold)) return false;
        // Data that appeared or was rewritten since the walk is a new upload.
        const dataTime = await modTimeOf(ctx.driver, dataPath);
        if (candidate.hasData ? used(dataTime, ctx.threshold) : dataTime !== undefined) return false;
        return true;
      },
      async () => {
        for (const name of candidate.links) {
          const link = pathFor({ kind: 'layerLink', name, digest });
          await deleteIfExists(ctx.driver, link.slice(0, -'/link'.length));
        }
        if (candidate.hasData) await deleteIfExists(ctx.driver, pathFor({ kind: 'blobDir', digest }));
        await ctx.records.removeTouch(digest);
      },
    );
    if (deleted) {
      removed.push(candidate);
      linksRemoved += candidate.links.length;
    } else spared++;
    ctx.progress.advance();
  });
  removed.sort((a, b) => (a.digest < b.digest ? -1 : 1));
  return { removed, linksRemoved, spared };
}

/**
 * GC's own records that outlived their use: tombstones a crashed run left (they make requests treat a
 * blob as gone, so they go first, except on digests this run will decide anyway) and touches of
 * digests with neither data nor links.
 */
export async function removeLeftoverTombstones(
  ctx: SweepContext,
  scan: StorageScan,
  keep: ReadonlySet<string>,
): Promise<void> {
  await forEachLimit(
    [...scan.tombstones].filter((d) => !keep.has(d)),
    ctx.concurrency,
    async (digest) => {
      checkpoint(ctx);
      await ctx.records.removeTombstone(toDigest(digest));
    },
  );
}

export async function removeOrphanTouches(
  ctx: SweepContext,
  scan: StorageScan,
  marked: ReadonlySet<string>,
): Promise<void> {
  const linked = new Set<string>();
  for (const repo of scan.repositories.values()) for (const d of repo.layers.keys()) linked.add(d);
  const orphans = [...scan.touches].filter(
    ([digest, time]) =>
      !scan.blobs.has(digest) &&
      !linked.has(digest) &&
      !marked.has(digest) &&
      time.getTime() <= ctx.threshold,
  );
  await forEachLimit(orphans, ctx.concurrency, async ([digest]) => {
    checkpoint(ctx);
    await ctx.records.removeTouch(toDigest(digest));
  });
}
