import type { Router, RouterMiddleware } from '@koa/router';
import type { Registry } from '../../registry/registry.js';
import { UnsupportedError } from '../../registry/errors.js';
import { writeError } from '../errors.js';
import { digestParam, nameParam } from '../params.js';
import { parseRangeHeader } from '../range.js';
import { ResponseBuffers } from '../response-buffers.js';

export function blobRoutes(router: Router, registry: Registry): void {
  const fetchBlob: RouterMiddleware = async (ctx) => {
    const name = nameParam(ctx);
    const isHead = ctx.method === 'HEAD';
    // A HEAD answering "exists" lets a client skip an upload, so its GC touch lands before the answer.
    const { digest, size } = await registry.blobs.stat(name, digestParam(ctx), { backgroundTouch: !isHead });

    const redirect = await registry.blobs.redirectURL(digest, isHead ? 'HEAD' : 'GET');
    if (redirect !== undefined && !isHead) {
      ctx.status = 307;
      ctx.set('Location', redirect);
      ctx.set('Docker-Content-Digest', digest.toString());
      return;
    }

    ctx.set('Docker-Content-Digest', digest.toString());
    ctx.set('ETag', `"${digest.toString()}"`);
    ctx.set('Accept-Ranges', 'bytes');
    // Content by digest never changes.
    ctx.set('Cache-Control', 'max-age=31536000');
    ctx.type = 'application/octet-stream';

    const range = parseRangeHeader(ctx.get('Range'), size);
    if (range === 'unsatisfiable') {
      ctx.set('Content-Range', `bytes */${size}`);
      writeError(ctx, 'RANGE_INVALID');
      return;
    }
    if (range) {
      ctx.status = 206;
      ctx.set('Content-Range', `bytes ${range.offset}-${range.offset + range.length - 1}/${size}`);
    } else {
      ctx.status = 200;
    }
    if (isHead) {
      ctx.length = range ? range.length : size;
      return;
    }
    ctx.body = await registry.blobs.open(digest, { ...range, buffers: new ResponseBuffers(ctx.res) });
    ctx.length = range ? range.length : size;
  };

  router.get('/v2/*name/blobs/:digest', fetchBlob);
  router.head('/v2/*name/blobs/:digest', fetchBlob);

  router.delete('/v2/*name/blobs/:digest', async (ctx) => {
    const name = nameParam(ctx);
    const digest = digestParam(ctx);
    if (!registry.options.deleteEnabled) throw new UnsupportedError('deletes are disabled on this registry');
    await registry.blobs.unlink(name, digest);
    ctx.status = 202;
    ctx.set('Docker-Content-Digest', digest.toString());
    ctx.body = '';
  });
}
