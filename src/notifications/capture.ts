import type { Context, Middleware } from 'koa';
import type { Logger } from 'pino';
import type { AppState } from '../http/app.js';
import { parseDigest } from '../registry/digest.js';
import { isValidName } from '../registry/names.js';
import type { Registry } from '../registry/registry.js';
import {
  BLOB_MEDIA_TYPE,
  manifestReferences,
  newEvent,
  targetRecord,
  type ActorRecord,
  type Event,
  type EventAction,
  type RequestRecord,
  type SourceRecord,
  type TargetRecord,
} from './event.js';

/**
 * What a finished request did, read from its route, method, status and headers, before anything is
 * looked up in storage. Which requests count follows Distribution's notifications bridge, except that a
 * HEAD is no pull: it moves no content, and clients HEAD every layer while they push.
 */
export type Observation =
  | {
      kind: 'manifest';
      action: 'push' | 'pull';
      name: string;
      digest: string;
      tag?: string;
      mediaType?: string;
      size?: number;
    }
  | {
      kind: 'blob';
      action: 'push' | 'pull' | 'mount';
      name: string;
      digest: string;
      size?: number;
      from?: string;
    }
  | { kind: 'delete'; name: string; digest?: string; tag?: string };

const MANIFEST_PATH = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const UPLOAD_PATH = /^\/v2\/(.+)\/blobs\/uploads\/?([^/]*)$/;
const BLOB_PATH = /^\/v2\/(.+)\/blobs\/([^/]+)$/;

export function observe(ctx: Context): Observation | undefined {
  const { method, status } = ctx;
  const responseDigest = validDigest(ctx.response.get('Docker-Content-Digest'));
  let m = MANIFEST_PATH.exec(ctx.path);
  if (m) {
    const name = decode(m[1]);
    const reference = decode(m[2]);
    if (name === undefined || reference === undefined || !isValidName(name)) return undefined;
    const tag = reference.includes(':') ? undefined : reference;
    if (method === 'PUT' && status === 201 && responseDigest) {
      return { kind: 'manifest', action: 'push', name, digest: responseDigest, ...(tag && { tag }) };
    }
    if (method === 'GET' && status === 200 && responseDigest) {
      const length = Number(ctx.response.get('Content-Length'));
      return {
        kind: 'manifest',
        action: 'pull',
        name,
        digest: responseDigest,
        ...(tag && { tag }),
        mediaType: mediaTypeOf(ctx.response.get('Content-Type')),
        ...(Number.isSafeInteger(length) && length > 0 && { size: length }),
      };
    }
    if (method === 'DELETE' && status === 202) {
      return tag ? { kind: 'delete', name, tag } : { kind: 'delete', name, digest: reference };
    }
    return undefined;
  }
  m = UPLOAD_PATH.exec(ctx.path);
  if (m) {
    const name = decode(m[1]);
    if (name === undefined || !isValidName(name) || status !== 201 || !responseDigest) return undefined;
    if (method === 'PUT') return { kind: 'blob', action: 'push', name, digest: responseDigest };
    if (method !== 'POST') return undefined;
    // A POST answers 201 for a mount, or for a monolithic upload (`?digest=` with a body) when the
    // mount was not possible.
    const mount = queryValue(ctx, 'mount');
    const uploaded = queryValue(ctx, 'digest') !== undefined && hasBody(ctx);
    if (mount !== undefined && !uploaded) {
      const from = queryValue(ctx, 'from');
      return { kind: 'blob', action: 'mount', name, digest: responseDigest, ...(from && { from }) };
    }
    return { kind: 'blob', action: 'push', name, digest: responseDigest };
  }
  m = BLOB_PATH.exec(ctx.path);
  if (m) {
    const name = decode(m[1]);
    if (name === undefined || !isValidName(name) || !responseDigest) return undefined;
    if (method === 'GET' && (status === 200 || status === 206 || status === 307)) {
      return { kind: 'blob', action: 'pull', name, digest: responseDigest, ...sizeOfBlobAnswer(ctx) };
    }
    if (method === 'DELETE' && status === 202) return { kind: 'delete', name, digest: responseDigest };
  }
  return undefined;
}

/** The request and actor records: everything about the request, taken before it is gone. */
export function requestContext(ctx: Context): { request: RequestRecord; actor: ActorRecord } {
  const state = ctx.state as Partial<AppState>;
  const { remoteAddress, remotePort } = ctx.req.socket;
  // As Go prints a RemoteAddr: IPv4 clients of a dual-stack listener without the ::ffff: prefix.
  const ip = remoteAddress?.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
  const addr =
    ip === undefined
      ? undefined
      : ip.includes(':')
        ? `[${ip}]:${remotePort ?? 0}`
        : `${ip}:${remotePort ?? 0}`;
  return {
    request: {
      id: ctx.response.get('X-Request-Id'),
      ...(addr !== undefined && { addr }),
      ...(ctx.host && { host: ctx.host }),
      method: ctx.method,
      useragent: ctx.get('User-Agent'),
    },
    actor: state.user !== undefined ? { name: state.user } : {},
  };
}

export interface CaptureOptions {
  readonly registry: Registry;
  readonly logger: Logger;
  /** Takes each finished event (the endpoints' queue writers). */
  readonly emit: (event: Event) => void;
  readonly includeReferences: boolean;
  readonly source: SourceRecord;
  /** `http.host`: the base of target URLs; otherwise the request's own scheme and Host. */
  readonly externalURL?: string;
}

export interface Capture {
  readonly middleware: Middleware<AppState>;
  /** Waits (up to `timeoutMs`) for events still being completed from storage. */
  settle(timeoutMs: number): Promise<void>;
}

/**
 * The koa middleware (first in `outer`) that turns finished requests into events. It reads what it
 * needs from the context after the response is decided and finishes the event in the background (sizes
 * and references come from storage), so a request never waits for it and never fails because of it.
 */
export function createCapture(options: CaptureOptions): Capture {
  const inflight = new Set<Promise<void>>();
  const base = options.externalURL?.replace(/\/+$/, '');
  const middleware: Middleware<AppState> = async (ctx, next) => {
    await next();
    let job: Promise<void>;
    try {
      const observation = observe(ctx);
      if (!observation) return;
      const context = { ...requestContext(ctx), source: options.source };
      const urlBase = base ?? `${ctx.protocol}://${ctx.host}`;
      const now = new Date();
      job = complete(options.registry, observation, urlBase, options.includeReferences)
        .then(({ action, target }) => {
          options.emit(newEvent(action, target, context, now));
        })
        .catch((err: unknown) => {
          options.logger.error({ err, reqId: context.request.id }, 'notification event not built');
        });
    } catch (err) {
      options.logger.error({ err }, 'notification event not built');
      return;
    }
    inflight.add(job);
    void job.finally(() => inflight.delete(job));
  };
  return {
    middleware,
    settle: async (timeoutMs) => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...inflight]),
        new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
    },
  };
}

/** Looks up what the request did not say (sizes, media types, references) and builds the target. */
async function complete(
  registry: Registry,
  o: Observation,
  urlBase: string,
  includeReferences: boolean,
): Promise<{ action: EventAction; target: TargetRecord }> {
  const repository = o.name;
  if (o.kind === 'delete') {
    return { action: 'delete', target: targetRecord({ repository, digest: o.digest, tag: o.tag }) };
  }
  const digest = parseDigest(o.digest);
  if (!digest) throw new Error(`not a digest: ${o.digest}`);
  if (o.kind === 'blob') {
    const size = o.size ?? (await registry.blobs.statGlobal(digest))?.size ?? 0;
    return {
      action: o.action,
      target: targetRecord({
        mediaType: BLOB_MEDIA_TYPE,
        digest: o.digest,
        size,
        repository,
        fromRepository: o.from,
        url: `${urlBase}/v2/${repository}/blobs/${o.digest}`,
      }),
    };
  }
  // Manifests by digest are cached by the registry core: after the PUT or GET that just ran, this
  // lookup normally costs nothing.
  const needContent =
    o.action === 'push' || includeReferences || o.mediaType === undefined || o.size === undefined;
  const stored = needContent ? await registry.manifests.content(digest) : undefined;
  return {
    action: o.action,
    target: targetRecord({
      mediaType: stored?.mediaType ?? o.mediaType,
      digest: o.digest,
      size: stored?.content.length ?? o.size,
      repository,
      url: `${urlBase}/v2/${repository}/manifests/${o.digest}`,
      tag: o.tag,
      references: includeReferences && stored ? manifestReferences(stored.content) : undefined,
    }),
  };
}

function sizeOfBlobAnswer(ctx: Context): { size?: number } {
  if (ctx.status === 200) {
    const length = Number(ctx.response.get('Content-Length'));
    return Number.isSafeInteger(length) ? { size: length } : {};
  }
  // 206: the total after the slash; 307: unknown here, looked up later.
  const total = /\/(\d+)$/.exec(ctx.response.get('Content-Range'))?.[1];
  return total !== undefined ? { size: Number(total) } : {};
}

function validDigest(value: unknown): string | undefined {
  return typeof value === 'string' && parseDigest(value) ? value : undefined;
}

function mediaTypeOf(contentType: unknown): string | undefined {
  const type = typeof contentType === 'string' ? contentType.split(';')[0]?.trim() : undefined;
  return type === '' ? undefined : type;
}

function decode(part: string | undefined): string | undefined {
  if (part === undefined) return undefined;
  try {
    return decodeURIComponent(part);
  } catch {
    return undefined;
  }
}

function queryValue(ctx: Context, key: string): string | undefined {
  const value = ctx.query[key];
  const first = Array.isArray(value) ? value[0] : value;
  return first === '' ? undefined : first;
}

function hasBody(ctx: Context): boolean {
  const length = ctx.get('Content-Length');
  return (length !== '' && Number(length) > 0) || ctx.get('Transfer-Encoding') !== '';
}
