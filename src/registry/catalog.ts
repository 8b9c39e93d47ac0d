import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { paginate, type Page } from './paging.js';
import { baseName, REPOSITORIES_ROOT } from './paths.js';

/** Directories whose presence marks their parent as a repository. */
const REPOSITORY_MARKERS = new Set(['_layers', '_manifests']);

export class Catalog {
  constructor(private readonly driver: StorageDriver) {}

  /** Every repository name, sorted. Walks the tree, skipping each repository's own `_` directories. */
  async list(n?: number, last?: string): Promise<Page<string>> {
    const names = new Set<string>();
    try {
      await this.driver.walk(REPOSITORIES_ROOT, {
        onEntry: (info) => {
          if (!info.isDir) return;
          const base = baseName(info.path);
          if (!base.startsWith('_')) return;
          if (REPOSITORY_MARKERS.has(base)) {
            names.add(info.path.slice(REPOSITORIES_ROOT.length + 1, -(base.length + 1)));
          }
          return 'skip';
        },
      });
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
    return paginate([...names].sort(), (name) => name, n, last);
  }
}
