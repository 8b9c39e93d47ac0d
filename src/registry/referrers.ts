import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import type { Digest } from './digest.js';
import { ManifestUnknownError } from './errors.js';
import type { ReferrerDescriptor } from './manifest-format.js';
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

  private async fallbackEntries(name: string, subject: Digest): Promise<ReferrerDescriptor[]> {
    try {
      const { content } = await this.manifests.get(name, { tag: `${subject.algorithm}-${subject.hex}` });
      const index = JSON.parse(content.toString('utf8')) as { manifests?: unknown };
      return Array.isArray(index.manifests) ? (index.manifests as ReferrerDescriptor[]) : [];
    } catch (err) {
      if (err instanceof ManifestUnknownError || err instanceof SyntaxError) return [];
      throw err;
    }
  }
}
