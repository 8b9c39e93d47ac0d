import type { Router } from '@koa/router';
import type { Registry } from '../../registry/registry.js';
import { nameParam, pagingQuery, setNextLink } from '../params.js';

export function tagRoutes(router: Router, registry: Registry): void {
  router.get('/v2/*name/tags/list', async (ctx) => {
    const name = nameParam(ctx);
    const { n, last } = pagingQuery(ctx);
    const page = await registry.tags.list(name, n, last);
    setNextLink(ctx, `/v2/${name}/tags/list`, page.next, { n });
    ctx.body = { name, tags: page.items };
  });
}
