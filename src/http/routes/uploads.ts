import type { Router, RouterMiddleware } from '@koa/router';
import type { Context } from 'koa';
import type { BlobDescriptor } from '../../registry/blobs.js';
import type { Digest } from '../../registry/digest.js';
import {
  BlobUnknownError,
  BlobUploadInvalidError,
  ChunkOutOfOrderError,
  SizeInvalidError,
} from '../../registry/errors.js';
import type { Registry } from '../../registry/registry.js';
import { isValidName } from '../../registry/names.js';
import { hasBody } from '../body.js';
import { digestValue, nameParam, optionalQuery, uploadIdParam } from '../params.js';
import { parseContentRange } from '../range.js';

function uploadLocation(name: string, id: string): string {
  return `/v2/${name}/blobs/uploads/${id}`;
}

/** Headers every answer about a session carries, so the client can always resume. */
function describeSession(ctx: Context, name: string, id: string, size: number): void {
  ctx.set('Location', uploadLocation(name, id));
  ctx.set('Range', `0-${size > 0 ? size - 1 : 0}`);
  ctx.set('Docker-Upload-UUID', id);
  ctx.body = '';
}

function blobCreated(ctx: Context, name: string, digest: string): void {
  ctx.status = 201;
  ctx.set('Location', `/v2/${name}/blobs/${digest}`);
  ctx.set('Docker-Content-Digest', digest);
  ctx.body = '';
}

/** The chunk's start from `Content-Range`, checked against `Content-Length` when both are given. */
function chunkStart(ctx: Context): number | undefined {
  const header = ctx.get('Content-Range');
  if (header === '') return undefined;
  const range = parseContentRange(header);
  if (!range) throw new BlobUploadInvalidError(`malformed Content-Range: ${header}`);
  if (range.end < range.start)
    throw new ChunkOutOfOrderError(`Content-Range ${header} ends before it starts`);
  const length = ctx.get('Content-Length');
  if (length !== '' && Number(length) !== range.end - range.start + 1) {
    throw new SizeInvalidError('Content-Range does not match Content-Length');
  }
  return range.start;
}

/** The blob if repository `name` holds it; storage failures still propagate. */
async function linkedBlob(
  registry: Registry,
  name: string,
  digest: Digest,
): Promise<BlobDescriptor | undefined> {
  try {
    return await registry.blobs.stat(name, digest);
  } catch (err) {
    if (err instanceof BlobUnknownError) return undefined;
    throw err;
  }
}

export function uploadRoutes(router: Router, registry: Registry): void {
  const startUpload: RouterMiddleware = async (ctx) => {
    const name = nameParam(ctx);
    const mount = optionalQuery(ctx, 'mount');
    if (mount !== undefined) {
      const digest = digestValue(mount);
      const from = optionalQuery(ctx, 'from');
      // Without `from`, any blob in storage may be mounted; the spec leaves that choice to the registry.
      const source =
        from === undefined
          ? await registry.blobs.statGlobal(digest)
          : isValidName(from)
            ? await linkedBlob(registry, from, digest)
            : undefined;
      if (source) {
        await registry.blobs.link(name, digest);
        blobCreated(ctx, name, digest.toString());
        return;
      }
      // Not mountable: fall through to a new session, as the spec asks.
    }

    const digestQuery = optionalQuery(ctx, 'digest');
    const id = await registry.uploads.start(name);
    if (digestQuery !== undefined) {
      const blob = await registry.uploads.complete(name, id, digestValue(digestQuery), ctx.req);
      blobCreated(ctx, name, blob.digest.toString());
      return;
    }
    ctx.status = 202;
    describeSession(ctx, name, id, 0);
  };
  // Docker and most clients POST with the trailing slash; the spec's path has none.
  router.post('/v2/*name/blobs/uploads/', startUpload);
  router.post('/v2/*name/blobs/uploads', startUpload);

  router.get('/v2/*name/blobs/uploads/:id', async (ctx) => {
    const name = nameParam(ctx);
    const id = uploadIdParam(ctx);
    const size = await registry.uploads.size(name, id);
    ctx.status = 204;
    describeSession(ctx, name, id, size);
  });

  router.patch('/v2/*name/blobs/uploads/:id', async (ctx) => {
    const name = nameParam(ctx);
    const id = uploadIdParam(ctx);
    const size = await registry.uploads.append(name, id, ctx.req, chunkStart(ctx));
    ctx.status = 202;
    describeSession(ctx, name, id, size);
  });

  router.put('/v2/*name/blobs/uploads/:id', async (ctx) => {
    const name = nameParam(ctx);
    const id = uploadIdParam(ctx);
    const digest = digestValue(optionalQuery(ctx, 'digest'));
    let blob;
    if (hasBody(ctx)) {
      const start = chunkStart(ctx);
      if (start !== undefined) await registry.uploads.append(name, id, ctx.req, start);
      blob = await registry.uploads.complete(name, id, digest, start === undefined ? ctx.req : undefined);
    } else {
      blob = await registry.uploads.complete(name, id, digest);
    }
    blobCreated(ctx, name, blob.digest.toString());
  });

  router.delete('/v2/*name/blobs/uploads/:id', async (ctx) => {
    const name = nameParam(ctx);
    await registry.uploads.cancel(name, uploadIdParam(ctx));
    ctx.status = 204;
    ctx.body = '';
  });
}
