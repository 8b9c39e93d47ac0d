import type { Router } from '@koa/router';
import { MediaTypes } from '../../registry/manifest-format.js';
import type { Registry } from '../../registry/registry.js';
import { digestParam, nameParam, optionalQuery, pagingQuery, setNextLink } from '../params.js';

export function referrerRoutes(router: Router, registry: Registry): void {
  // Never 404: a subject nobody refers to (or that does not exist) has an empty list.
  router.get('/v2/*name/referrers/:digest', async (ctx) => {
    const name = nameParam(ctx);
    const subject = digestParam(ctx);
    const artifactType = optionalQuery(ctx, 'artifactType');
    const { n, last } = pagingQuery(ctx);
    const page = await registry.referrers.list(name, subject, {
      ...(artifactType !== undefined && { artifactType }),
      ...(n !== undefined && { n }),
      ...(last !== undefined && { last }),
    });
    if (artifactType !== undefined) ctx.set('OCI-Filters-Applied', 'artifactType');
    setNextLink(ctx, `/v2/${name}/referrers/${subject.toString()}`, page.next, { artifactType, n });
    ctx.type = MediaTypes.ociIndex;
    ctx.body = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: page.items };
  });
}
