import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { parseDigest, sameDigest, type Digest } from './digest.js';
import { ManifestInvalidError, ManifestUnknownError } from './errors.js';
import { parseManifest, referrerDescriptor, type ReferrerDescriptor } from './manifest-format.js';
import type { ManifestStore } from './manifests.js';
import { paginate, type Page } from './paging.js';
import { pathFor } from './paths.js';

export interface ReferrersQuery {
  readonly artifactType?: string;
  readonly n?: number;
  readonly last?: string;
}

export const REFERRERS_PAGE_SIZE = 100;

/**
 * The referrers of a subject: the entries Wharf records when a manifest with `subject` is pushed, merged
 * with any index clients stored under the tag-schema fallback (`sha256-<hex>`), ordered by digest.
 */
export class ReferrerStore {
  constructor(
    private readonly driver: StorageDriver,
    private readonly manifests: ManifestStore,
  ) {}

  async list(name: string, subject: Digest, query: ReferrersQuery): Promise<Page<ReferrerDescriptor>> {
    const byDigest = new Map<string, ReferrerDescriptor>();
    for (const d of await this.fallbackEntries(name, subject)) byDigest.set(d.digest, d);
    for (const d of await this.recordedEntries(name, subject)) byDigest.set(d.digest, d);
    let all = [...byDigest.values()].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
    if (query.artifactType !== undefined) all = all.filter((d) => d.artifactType === query.artifactType);
    return paginate(all, (d) => d.digest, query.n ?? REFERRERS_PAGE_SIZE, query.last);
  }

  private async recordedEntries(name: string, subject: Digest): Promise<ReferrerDescriptor[]> {
    const files: string[] = [];
    try {
      await this.driver.walk(pathFor({ kind: 'referrersDir', name, subject }), {
        onEntry: (info) => {
          if (!info.isDir) files.push(info.path);
        },
      });
    } catch (err) {
      if (err instanceof PathNotFoundError) return [];
      throw err;
    }
    const entries = await Promise.all(
      files.map(async (path) => {
        try {
          return JSON.parse((await this.driver.getContent(path)).toString('utf8')) as ReferrerDescriptor;
        } catch (err) {
          // Deleted between the walk and the read.
          if (err instanceof PathNotFoundError) return undefined;
          throw err;
        }
      }),
    );
    return entries.filter((e) => e !== undefined);
  }

  /**
   * Entries of the tag-schema fallback index, kept only where the manifest is in this repository and
   * really names the subject: the index is written by clients and may be stale or wrong.
   */
  private async fallbackEntries(name: string, subject: Digest): Promise<ReferrerDescriptor[]> {
    let listed: unknown[];
    try {
      const { content } = await this.manifests.get(name, { tag: `${subject.algorithm}-${subject.hex}` });
      const index = JSON.parse(content.toString('utf8')) as { manifests?: unknown };
      listed = Array.isArray(index.manifests) ? index.manifests : [];
    } catch (err) {
      if (err instanceof ManifestUnknownError || err instanceof SyntaxError) return [];
      throw err;
    }
    const verified = await Promise.all(listed.map((entry) => this.verifiedReferrer(name, subject, entry)));
    return verified.filter((d) => d !== undefined);
  }

  private async verifiedReferrer(
    name: string,
    subject: Digest,
    entry: unknown,
  ): Promise<ReferrerDescriptor | undefined> {
    const value = (entry as { digest?: unknown } | null)?.digest;
    const digest = typeof value === 'string' ? parseDigest(value) : undefined;
    if (!digest) return undefined;
    try {
      const manifest = await this.manifests.get(name, { digest });
      const parsed = parseManifest(manifest.content, manifest.mediaType);
      if (!parsed.subject || !sameDigest(parsed.subject.digest, subject)) return undefined;
      return referrerDescriptor(parsed, digest, manifest.content.length);
    } catch (err) {
      if (err instanceof ManifestUnknownError || err instanceof ManifestInvalidError) return undefined;
      throw err;
    }
  }
}
