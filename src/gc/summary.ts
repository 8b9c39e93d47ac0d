/** The outcome of one GC run: what `--json` prints, what the server keeps as its last run. */
export interface GcSummary {
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationMs: number;
  readonly dryRun: boolean;
  readonly deleteUntagged: boolean;
  readonly graceMs: number;
  readonly owner: string;
  readonly repositories: number;
  readonly manifests: {
    /** Revisions found (a manifest held by two repositories counts twice). */
    readonly total: number;
    /** Untagged revisions removed (or that would be, on a dry run). */
    readonly removed: number;
  };
  readonly blobs: {
    readonly total: number;
    readonly marked: number;
    /** Blobs deleted (or that would be). */
    readonly removed: number;
    readonly bytesRemoved: number;
    /** Candidates a client used while the sweep decided on them, so they were kept. */
    readonly spared: number;
  };
  /** Repository links removed along with their blobs, or left dangling by an earlier deletion. */
  readonly linksRemoved: number;
  readonly uploadsPurged: number;
  /** What went (or would go): `repository@digest` for manifests, digests for blobs. */
  readonly removed: {
    readonly manifests: readonly string[];
    readonly blobs: readonly { readonly digest: string; readonly size: number }[];
  };
  readonly warnings: readonly string[];
}

/** Counters of the last run for the server to expose (issue 7 turns these into metrics). */
export interface GcStatus {
  running: boolean;
  lastRun?: GcSummary;
  lastError?: { readonly at: string; readonly message: string };
}

export function newGcStatus(): GcStatus {
  return { running: false };
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit] ?? ''}`;
}

export function formatDurationMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** The human-readable summary `wharf gc` prints; a dry run lists each thing that would go first. */
export function formatSummary(summary: GcSummary): string {
  const lines: string[] = [];
  const would = summary.dryRun ? 'to remove' : 'removed';
  if (summary.dryRun) {
    for (const m of summary.removed.manifests) lines.push(`would remove manifest ${m}`);
    for (const b of summary.removed.blobs)
      lines.push(`would remove blob ${b.digest} (${formatBytes(b.size)})`);
    if (lines.length > 0) lines.push('');
  }
  lines.push(
    `garbage collection${summary.dryRun ? ' (dry run, nothing deleted)' : ''}: ` +
      `${summary.repositories} repositories, ${summary.manifests.total} manifests, ${summary.blobs.total} blobs`,
    `  blobs ${would}: ${summary.blobs.removed} (${formatBytes(summary.blobs.bytesRemoved)})`,
    `  manifests ${would}: ${summary.manifests.removed}${summary.deleteUntagged ? '' : ' (untagged kept; --delete-untagged removes them)'}`,
    `  repository links ${would}: ${summary.linksRemoved}`,
    `  upload sessions ${summary.dryRun ? 'to purge' : 'purged'}: ${summary.uploadsPurged}`,
  );
  if (summary.blobs.spared > 0)
    lines.push(`  kept because a client used them during the sweep: ${summary.blobs.spared}`);
  lines.push(`  time taken: ${formatDurationMs(summary.durationMs)}`);
  for (const w of summary.warnings) lines.push(`warning: ${w}`);
  return `${lines.join('\n')}\n`;
}
