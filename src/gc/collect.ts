/**
 * Online garbage collection: it runs while the registry serves pushes, needs no read-only window, and
 * never breaks a stored image.
 *
 * INVARIANT. A manifest the registry accepted (answered 201) and still holds never references a blob,
 * or a child manifest, that GC deleted.
 *
 * RECORDS (paths.ts, `/wharf/gc/`). A *touch* per digest: a small file whose modTime says when the
 * digest was last made referenced. A *tombstone* per digest: "a sweep is deciding on this now".
 *
 * WHAT TOUCHES. Every operation that makes a blob referenced, or lets a client believe it may reference
 * it: upload completion and mount (BlobStore.link), a blob HEAD that answers "exists" (BlobStore.stat,
 * which touches *before* reading the tombstone; on one it waits for the sweep to decide and answers
 * 404 if the blob went or the tombstone stays; a GET does the same but touches in the background, as a
 * download decides nothing), and a manifest PUT, for the
 * manifest itself, its config and layers or its child manifests (ManifestStore.lostAfterWrite). A process
 * skips a touch it made less than TOUCH_SKIP_MS (1 s) ago (records.ts).
 *
 * CHECK AFTER WRITE. A manifest PUT checks its references, writes the manifest blob, the revision link,
 * the referrer entry and the tag; THEN touches everything it references; THEN, for each, reads the
 * tombstone (waiting up to a few seconds while a sweep decides) and THEN checks the thing is still there
 * (revision link or `_layers` link, and data). If anything is gone it removes what it wrote, restores the
 * tag, and answers MANIFEST_BLOB_UNKNOWN: the client pushes the blob again and retries.
 *
 * A RUN at time T0, threshold θ = T0 − grace − 1 s (the second absorbs modTime granularity and skew):
 *  1. Lease (lease.ts): one run at a time across replicas; not needed for safety, see below.
 *  2. Scan (scan.ts): walk repositories, blobs, touches and tombstones once; read tags and manifests.
 *  3. Mark (mark.ts): live = tag targets; every revision, or with --delete-untagged only those whose
 *     revision link or touch is newer than θ; closed under index children, configs, layers and
 *     referrers whose subject is live (per repository). Marked = every digest a live manifest names.
 *  4. Sweep (sweep.ts). Untagged manifests not live (with --delete-untagged), an index before its
 *     children; then every blob not marked whose data, links and touch are all older than θ. Per digest:
 *     write the tombstone; re-read the touch (and the data's modTime); if newer than θ, keep it (a spared
 *     manifest becomes a root and its closure is marked); else delete (revision link, tag history and
 *     referrer entry; or data, every `_layers` link and the touch); remove the tombstone last.
 *  5. Purge upload sessions older than `storage.maintenance.uploadpurging.age`; record the run.
 *
 * WHY IT IS SAFE. Take a manifest M accepted in repository R that references digest B, and a run G.
 * (a) If G's walk saw M's revision link, M is live (so B is marked), or, with --delete-untagged, M is
 *     a candidate: its tag was written after the walk read R's tags, so after T0, and its PUT touches M
 *     after that. Step 4 decides on M exactly as (b) below decides on B, so either G keeps M (and marks
 *     its closure before any blob is swept) or G deletes M's revision and M's PUT fails.
 * (b) Otherwise M's revision was written after G's walk passed R, so after T0, and M's PUT touched B
 *     after writing M (or skipped that, having touched B less than 1 s earlier). Both G and the PUT write one
 *     record and then read the other's: G writes the tombstone then reads the touch; the PUT writes the
 *     touch then reads the tombstone and then presence. Storage is read-after-write consistent (the
 *     filesystem; S3 since 2020), so one of them sees the other's write:
 *       - G sees the touch: it is newer than T0 − 1 s − skew, above θ = T0 − grace − 1 s whenever the
 *         grace period exceeds the clock skew between replicas and storage, so G keeps B;
 *       - the PUT sees the tombstone: it waits; if G deleted B, the PUT then finds B gone and fails;
 *       - the PUT read after G removed the tombstone: G deleted before removing it, so the PUT finds B
 *         gone and fails.
 *     In no case is M accepted while G deletes B.
 * (c) Children and referrers: a spared manifest is marked with its closure before any blob is swept,
 *     and an index is decided before its children, so a kept index never loses a child.
 * (d) Nothing else deletes references. The manifest cache holds immutable content by digest. The check
 *     after write reads storage. HEAD/GET read the tombstone every time and answer 404 on one; their
 *     lookup of link and data is reused (BlobStore.stat) only while this process's own durable touch of
 *     the digest is under TOUCH_SKIP_MS old: a run in another process deletes the blob only if that
 *     touch is older than θ, which needs a grace period above TOUCH_SKIP_MS (as for skipping touches);
 *     a run in this process forgets the touch (records.removeTouch) when it deletes. So a HEAD says
 *     "exists" about a deleted blob only if the blob went while this process linked or looked it up
 *     (whose answer said as much already), for at most TOUCH_SKIP_MS; a manifest PUT still fails.
 * The grace period is therefore a liveness bound, not a safety one: a push whose blobs sit unreferenced
 * longer than the grace period before its manifest PUT may have them collected and must retry. The
 * argument holds for two concurrent runs as well, so the lease only saves duplicate work.
 * A run that dies between writing a tombstone and removing it leaves the tombstone: requests treat that
 * digest as gone until the next run removes it (step 4 clears leftovers first).
 */
import type { Logger } from 'pino';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { pathFor } from '../registry/paths.js';
import { Lease, LEASE_TTL_MS, newOwnerId } from './lease.js';
import { Marker } from './mark.js';
import { silentProgress, type Progress } from './progress.js';
import { GcRecords } from './records.js';
import { DEFAULT_CONCURRENCY, readAllRevisions, ManifestReader, scanStorage } from './scan.js';
import {
  blobCandidates,
  removeLeftoverTombstones,
  removeOrphanTouches,
  sweepBlobs,
  sweepManifests,
  type SweepContext,
} from './sweep.js';
import type { GcSummary } from './summary.js';
import { purgeUploadsFromScan } from './uploads.js';

/** Touch modTimes may lag the clock GC reads T0 from (coarse filesystem clocks, S3's whole seconds). */
export const CLOCK_SLACK_MS = 1000;

export interface GcOptions {
  readonly dryRun?: boolean;
  readonly deleteUntagged?: boolean;
  /** How long an unreferenced blob (or untagged manifest) is kept after its last use. */
  readonly graceMs: number;
  /** Allowance for touch modTimes lagging GC's clock; CLOCK_SLACK_MS unless set (tests on one clock: 0). */
  readonly clockSlackMs?: number;
  /** Purge upload sessions started before now − this; unset to leave them alone. */
  readonly uploadPurgeAgeMs?: number;
  /** Shared with the registry in the server, so its skip-cache forgets what GC deletes. */
  readonly records?: GcRecords;
  readonly owner?: string;
  readonly leaseTtlMs?: number;
  /** Storage operations in flight (default 32); the server's scheduled runs use fewer to stay out of the way. */
  readonly concurrency?: number;
  readonly progress?: Progress;
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
}

/** Runs garbage collection once (see the protocol above). `LeaseHeldError` if another run holds the lease. */
export async function collectGarbage(driver: StorageDriver, options: GcOptions): Promise<GcSummary> {
  const started = Date.now();
  const dryRun = options.dryRun ?? false;
  const deleteUntagged = options.deleteUntagged ?? false;
  const threshold = started - options.graceMs - (options.clockSlackMs ?? CLOCK_SLACK_MS);
  const owner = options.owner ?? newOwnerId();
  const shown = options.progress ?? silentProgress;
  const signal = options.signal;
  // Every step of the run reports progress, so that is where an abort (server shutdown) stops it.
  const progress: Progress = {
    phase: (name, total) => {
      signal?.throwIfAborted();
      shown.phase(name, total);
    },
    advance: (n) => {
      signal?.throwIfAborted();
      shown.advance(n);
    },
    finish: () => {
      shown.finish();
    },
  };
  const lease = dryRun ? undefined : new Lease(driver, owner, options.leaseTtlMs ?? LEASE_TTL_MS);
  await lease?.acquire();
  try {
    const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    const scan = await scanStorage(driver, progress, concurrency);
    const reader = new ManifestReader(driver);
    await readAllRevisions(scan, reader, progress, concurrency);
    const marker = new Marker(scan, reader);
    await marker.indexReferrers();
    await marker.mark(marker.roots(deleteUntagged, threshold));
    const dead = deleteUntagged ? marker.deadManifests() : [];

    const ctx: SweepContext = {
      driver,
      records: options.records ?? new GcRecords(driver),
      owner,
      threshold,
      lease,
      signal: options.signal,
      progress,
      concurrency: Math.max(1, Math.floor(concurrency / 2)),
    };
    let removedManifests = dead;
    let candidates = blobCandidates(scan, marker.marked, threshold);
    let removedBlobs = candidates;
    let linksRemoved = candidates.reduce((n, c) => n + c.links.length, 0);
    let spared = 0;
    if (!dryRun) {
      await removeLeftoverTombstones(
        ctx,
        scan,
        new Set([...dead.map((m) => m.digest), ...candidates.map((c) => c.digest)]),
      );
      const manifests = await sweepManifests(ctx, scan, reader, marker, dead);
      removedManifests = manifests.removed;
      // Spared manifests marked more; untagged ones removed unmarked their blobs.
      candidates = blobCandidates(scan, marker.marked, threshold);
      const blobs = await sweepBlobs(ctx, candidates);
      removedBlobs = blobs.removed;
      linksRemoved = blobs.linksRemoved;
      spared = manifests.spared + blobs.spared;
      await removeLeftoverTombstones(ctx, scan, new Set());
      await removeOrphanTouches(ctx, scan, marker.marked);
    }

    let uploadsPurged = 0;
    if (options.uploadPurgeAgeMs !== undefined) {
      progress.phase('purging uploads');
      const purge = await purgeUploadsFromScan(driver, scan.repositoryDirs, {
        olderThan: new Date(Date.now() - options.uploadPurgeAgeMs),
        dryRun,
      });
      uploadsPurged = purge.purged.length;
    }

    const finished = Date.now();
    const blobsWithData = removedBlobs.filter((b) => b.hasData);
    const summary: GcSummary = {
      startedAt: new Date(started).toISOString(),
      finishedAt: new Date(finished).toISOString(),
      durationMs: finished - started,
      dryRun,
      deleteUntagged,
      graceMs: options.graceMs,
      owner,
      repositories: scan.repositories.size,
      manifests: {
        total: [...scan.repositories.values()].reduce((n, r) => n + r.revisions.size, 0),
        removed: removedManifests.length,
      },
      blobs: {
        total: scan.blobs.size,
        marked: [...scan.blobs.keys()].filter((d) => marker.marked.has(d)).length,
        removed: blobsWithData.length,
        bytesRemoved: blobsWithData.reduce((n, b) => n + b.size, 0),
        spared,
      },
      linksRemoved,
      uploadsPurged,
      removed: {
        manifests: removedManifests.map((m) => `${m.repo}@${m.digest}`).sort(),
        blobs: blobsWithData.map((b) => ({ digest: b.digest, size: b.size })),
      },
      warnings: marker.warnings,
    };
    if (!dryRun) {
      await driver.putContent(pathFor({ kind: 'gcLastRun' }), JSON.stringify(summaryRecord(summary)));
    }
    for (const warning of marker.warnings) options.logger?.warn({ warning }, 'gc warning');
    return summary;
  } finally {
    progress.finish();
    await lease?.release();
  }
}

/** What `last-run.json` keeps: the summary without the (possibly long) lists. */
function summaryRecord(summary: GcSummary): Omit<GcSummary, 'removed'> {
  const { removed: _lists, ...rest } = summary;
  return rest;
}
