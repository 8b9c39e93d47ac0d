import type { ManifestReader, StorageScan } from './scan.js';

/** A manifest in one repository. */
export interface ManifestRef {
  readonly repo: string;
  readonly digest: string;
}

/**
 * Marking: which manifests each repository keeps, and every blob they reference. Roots are the tags'
 * targets, plus every revision unless untagged manifests are being deleted (then only the recently
 * pushed or used ones). From each live manifest: its own blob, config and layers, its index children
 * (live in the same repository, whatever their own state), and the referrers whose subject it is.
 * Marking is incremental: a manifest the sweep spares is added as a root and its closure marked too.
 */
export class Marker {
  /** repository → digests of the manifests it keeps. */
  readonly live = new Map<string, Set<string>>();
  /** Every digest whose blob must stay. */
  readonly marked = new Set<string>();
  readonly warnings: string[] = [];
  /** repository → subject → referrer digests held in that repository. */
  private readonly referrers = new Map<string, Map<string, Set<string>>>();

  constructor(
    private readonly scan: StorageScan,
    private readonly reader: ManifestReader,
  ) {}

  /** Indexes who refers to whom; call once after every revision has been read. */
  async indexReferrers(): Promise<void> {
    for (const repo of this.scan.repositories.values()) {
      const bySubject = new Map<string, Set<string>>();
      const add = (subject: string, digest: string) => {
        let set = bySubject.get(subject);
        if (!set) bySubject.set(subject, (set = new Set()));
        set.add(digest);
      };
      for (const digest of repo.revisions.keys()) {
        const loaded = await this.reader.load(digest);
        if (loaded.state === 'ok' && loaded.refs.subject) add(loaded.refs.subject.toString(), digest);
      }
      for (const [digest, subjects] of repo.referrerEntries) {
        if (repo.revisions.has(digest)) for (const s of subjects) add(s, digest);
      }
      this.referrers.set(repo.name, bySubject);
    }
  }

  /** The roots of marking at `threshold` (epoch ms): see the class comment. */
  roots(deleteUntagged: boolean, threshold: number): ManifestRef[] {
    const roots: ManifestRef[] = [];
    for (const repo of this.scan.repositories.values()) {
      for (const digest of repo.tags.values()) roots.push({ repo: repo.name, digest });
      for (const [digest, modTime] of repo.revisions) {
        if (!deleteUntagged || this.usedSince(digest, modTime, threshold)) {
          roots.push({ repo: repo.name, digest });
        }
      }
    }
    return roots;
  }

  /** Pushed (revision link written) or touched after the threshold. */
  private usedSince(digest: string, modTime: Date, threshold: number): boolean {
    const touched = this.scan.touches.get(digest);
    return modTime.getTime() > threshold || (touched !== undefined && touched.getTime() > threshold);
  }

  /**
   * Marks `roots` and everything reachable from them. A live manifest whose bytes are not JSON stops
   * the run (`UnreadableManifestError`): what it references cannot be known, so nothing may be swept.
   */
  async mark(roots: readonly ManifestRef[]): Promise<void> {
    const queue = [...roots];
    for (let item = queue.pop(); item !== undefined; item = queue.pop()) {
      const { repo, digest } = item;
      let kept = this.live.get(repo);
      if (!kept) this.live.set(repo, (kept = new Set()));
      if (kept.has(digest)) continue;
      kept.add(digest);
      this.marked.add(digest);
      const loaded = await this.reader.load(digest);
      if (loaded.state === 'unreadable') throw loaded.error;
      if (loaded.state === 'missing') {
        this.warnings.push(`${repo}@${digest}: the manifest's data is missing; its references are unknown`);
        continue;
      }
      for (const blob of loaded.refs.blobs) this.marked.add(blob.digest.toString());
      for (const child of loaded.refs.children) queue.push({ repo, digest: child.toString() });
      for (const referrer of this.referrers.get(repo)?.get(digest) ?? [])
        queue.push({ repo, digest: referrer });
    }
  }

  /** Revisions no repository keeps: untagged manifests to delete. */
  deadManifests(): ManifestRef[] {
    const dead: ManifestRef[] = [];
    for (const repo of this.scan.repositories.values()) {
      const kept = this.live.get(repo.name);
      for (const digest of repo.revisions.keys()) {
        if (!kept?.has(digest)) dead.push({ repo: repo.name, digest });
      }
    }
    return dead;
  }

  isLive(ref: ManifestRef): boolean {
    return this.live.get(ref.repo)?.has(ref.digest) ?? false;
  }
}
