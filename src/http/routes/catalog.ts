import type { Router } from '@koa/router';
import { paginate } from '../../registry/paging.js';
import type { Registry } from '../../registry/registry.js';
import { pagingQuery, setNextLink } from '../params.js';

/** Without `n`, a page holds this many names, as Distribution's `catalog.maxentries` default. */
const DEFAULT_PAGE = 1000;

export function catalogRoutes(router: Router, registry: Registry): void {
  router.get('/v2/_catalog', async (ctx) => {
    const { n = DEFAULT_PAGE, last } = pagingQuery(ctx);
    // With auth, the caller sees only what it may pull (set by the auth middleware).
    const canPull = (ctx.state as { canPull?: (name: string) => boolean }).canPull;
    const page = canPull
      ? paginate((await registry.catalog.list()).items.filter(canPull), (name) => name, n, last)
      : await registry.catalog.list(n, last);
    setNextLink(ctx, '/v2/_catalog', page.next, { n });
    ctx.body = { repositories: page.items };
  });
}
