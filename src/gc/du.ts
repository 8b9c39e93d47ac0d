import type { StorageDriver } from '../../storage-drivers/driver.js';
import { silentProgress, type Progress } from './progress.js';
import { ManifestReader, readAllRevisions, scanStorage } from './scan.js';
import { formatBytes } from './summary.js';

export interface RepositoryUsage {
  readonly name: string;
  readonly manifests: number;
  /** Every manifest with its config and layers, as if each image were stored on its own. */
  readonly logicalBytes: number;
  /** The distinct blobs those manifests reference: what the repository stores by itself. */
  readonly storedBytes: number;
  readonly ratio: number;
}

export interface DiskUsage {
  readonly repositories: readonly RepositoryUsage[];
  readonly total: {
    readonly manifests: number;
    /** The sum of every repository's logical bytes. */
    readonly logicalBytes: number;
    /** Bytes of blob data actually in storage, each blob once. */
    readonly storedBytes: number;
    /** Of those, bytes that no manifest references (what garbage collection could reclaim). */
    readonly unreferencedBytes: number;
    readonly blobs: number;
    readonly ratio: number;
  };
}

/**
 * What deduplication saves: per repository, the bytes its manifests reference counted per image
 * (logical) against the distinct blobs behind them; in total, all repositories' logical bytes against
 * the blob data storage really holds. Sizes are the stored sizes, or the descriptor's for missing blobs.
 */
export async function diskUsage(
  driver: StorageDriver,
  progress: Progress = silentProgress,
): Promise<DiskUsage> {
  const scan = await scanStorage(driver, progress);
  const reader = new ManifestReader(driver);
  await readAllRevisions(scan, reader, progress);
  progress.finish();
  const sizeOf = (digest: string, stated: number) => scan.blobs.get(digest)?.size ?? stated;

  const referenced = new Set<string>();
  const repositories: RepositoryUsage[] = [];
  for (const repo of [...scan.repositories.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    let logical = 0;
    const distinct = new Map<string, number>();
    for (const digest of repo.revisions.keys()) {
      const loaded = await reader.load(digest);
      const size = loaded.state === 'ok' ? loaded.size : 0;
      logical += sizeOf(digest, size);
      distinct.set(digest, sizeOf(digest, size));
      if (loaded.state !== 'ok') continue;
      for (const blob of loaded.refs.blobs) {
        if (!blob.distributable) continue;
        const key = blob.digest.toString();
        logical += sizeOf(key, blob.size);
        distinct.set(key, sizeOf(key, blob.size));
      }
    }
    for (const d of distinct.keys()) referenced.add(d);
    const stored = [...distinct.values()].reduce((n, s) => n + s, 0);
    repositories.push({
      name: repo.name,
      manifests: repo.revisions.size,
      logicalBytes: logical,
      storedBytes: stored,
      ratio: ratio(logical, stored),
    });
  }
  const logicalBytes = repositories.reduce((n, r) => n + r.logicalBytes, 0);
  let storedBytes = 0;
  let unreferencedBytes = 0;
  for (const [digest, blob] of scan.blobs) {
    storedBytes += blob.size;
    if (!referenced.has(digest)) unreferencedBytes += blob.size;
  }
  return {
    repositories,
    total: {
      manifests: repositories.reduce((n, r) => n + r.manifests, 0),
      logicalBytes,
      storedBytes,
      unreferencedBytes,
      blobs: scan.blobs.size,
      ratio: ratio(logicalBytes, storedBytes),
    },
  };
}

function ratio(logical: number, stored: number): number {
  return stored === 0 ? 1 : Math.round((logical / stored) * 100) / 100;
}

/** The table `wharf du` prints. */
export function formatDiskUsage(usage: DiskUsage): string {
  const rows = [
    ['REPOSITORY', 'MANIFESTS', 'LOGICAL', 'STORED', 'RATIO'],
    ...usage.repositories.map((r) => [
      r.name,
      String(r.manifests),
      formatBytes(r.logicalBytes),
      formatBytes(r.storedBytes),
      `${r.ratio.toFixed(2)}x`,
    ]),
    [
      'TOTAL',
      String(usage.total.manifests),
      formatBytes(usage.total.logicalBytes),
      formatBytes(usage.total.storedBytes),
      `${usage.total.ratio.toFixed(2)}x`,
    ],
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length))) ?? [];
  const line = (row: string[]) =>
    row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ');
  const out = rows.map(line);
  out.splice(rows.length - 1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  out.push(
    '',
    `stored in total: ${usage.total.blobs} blobs, ${formatBytes(usage.total.storedBytes)}; ` +
      `unreferenced (reclaimable by wharf gc): ${formatBytes(usage.total.unreferencedBytes)}`,
  );
  return `${out.join('\n')}\n`;
}
