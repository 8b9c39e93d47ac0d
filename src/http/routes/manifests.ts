import type { Router, RouterMiddleware } from '@koa/router';
import { UnsupportedError } from '../../registry/errors.js';
import type { Registry } from '../../registry/registry.js';
import { readLimitedBody } from '../body.js';
import { nameParam, referenceParam } from '../params.js';

export function manifestRoutes(router: Router, registry: Registry): void {
  const fetchManifest: RouterMiddleware = async (ctx) => {
    const name = nameParam(ctx);
    const manifest = await registry.manifests.get(name, referenceParam(ctx));
    ctx.status = 200;
    ctx.type = manifest.mediaType;
    ctx.set('Docker-Content-Digest', manifest.digest.toString());
    ctx.set('ETag', `"${manifest.digest.toString()}"`);
    if (ctx.method === 'HEAD') ctx.length = manifest.content.length;
    else ctx.body = manifest.content;
  };
  router.get('/v2/*name/manifests/:reference', fetchManifest);
  router.head('/v2/*name/manifests/:reference', fetchManifest);

  router.put('/v2/*name/manifests/:reference', async (ctx) => {
    const name = nameParam(ctx);
    const reference = referenceParam(ctx);
    const content = await readLimitedBody(ctx, registry.manifests.maxSize);
    const result = await registry.manifests.put(
      name,
      reference,
      content,
      ctx.get('Content-Type') || undefined,
    );
    ctx.status = 201;
    ctx.set('Location', `/v2/${name}/manifests/${result.digest.toString()}`);
    ctx.set('Docker-Content-Digest', result.digest.toString());
    if (result.subject) ctx.set('OCI-Subject', result.subject.toString());
    ctx.body = '';
  });

  router.delete('/v2/*name/manifests/:reference', async (ctx) => {
    const name = nameParam(ctx);
    const reference = referenceParam(ctx);
    if (!registry.options.deleteEnabled) throw new UnsupportedError('deletes are disabled on this registry');
    await registry.manifests.delete(name, reference);
    ctx.status = 202;
    ctx.body = '';
  });
}
