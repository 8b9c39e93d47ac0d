import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { NameUnknownError } from './errors.js';
import { exists } from './links.js';
import { paginate, type Page } from './paging.js';
import { baseName, pathFor } from './paths.js';

export class TagStore {
  constructor(private readonly driver: StorageDriver) {}

  async list(name: string, n?: number, last?: string): Promise<Page<string>> {
    let dirs: string[];
    try {
      dirs = await this.driver.list(pathFor({ kind: 'tagsDir', name }));
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
      // A repository whose last tag was deleted still exists, with no tags.
      if (!(await exists(this.driver, pathFor({ kind: 'repository', name })))) {
        throw new NameUnknownError(undefined, { name });
      }
      dirs = [];
    }
    const tags = dirs.map(baseName).sort();
    return paginate(tags, (t) => t, n, last);
  }
}
