import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { paginate, type Page } from './paging.js';
import { baseName, REPOSITORIES_ROOT } from './paths.js';

/** Directories whose presence marks their parent as a repository. */
const REPOSITORY_MARKERS = new Set(['_layers', '_manifests']);

export class Catalog {
  constructor(private readonly driver: StorageDriver) {}

  /**
   * Every repository name, sorted. Descends one directory level at a time (one delimiter listing per
   * directory on object storage) and never into a repository's own `_` directories, so the cost is the
   * number of repositories and namespaces, not the number of stored objects.
   */
  async list(n?: number, last?: string): Promise<Page<string>> {
    const names: string[] = [];
    const pending = [REPOSITORIES_ROOT];
    for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
      const children = await this.listOrEmpty(dir);
      if (children.some((child) => REPOSITORY_MARKERS.has(baseName(child)))) {
        names.push(dir.slice(REPOSITORIES_ROOT.length + 1));
      }
      // A repository may also be a namespace (`a` and `a/b`), so keep descending past it.
      for (const child of children) if (!baseName(child).startsWith('_')) pending.push(child);
    }
    return paginate(names.sort(), (name) => name, n, last);
  }

  private async listOrEmpty(dir: string): Promise<string[]> {
    try {
      return await this.driver.list(dir);
    } catch (err) {
      // Gone since its parent was listed (a concurrent delete), or a file: not a repository.
      if (err instanceof PathNotFoundError) return [];
      throw err;
    }
  }
}
