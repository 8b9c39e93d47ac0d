// A small OCI Distribution client on global fetch, for the agent and `wharf promote`: manifests, blobs,
// mounts and referrers, with Basic auth and the Docker token flow.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';

/** A content descriptor as it appears on the wire (digests as strings). */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: { architecture?: string; os?: string; variant?: string };
}

/** An OCI image index, as the referrers API answers. */
export interface OciIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
}

export interface ManifestResponse {
  readonly bytes: Buffer;
  readonly mediaType: string;
  readonly digest: string;
}

export interface ManifestHead {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
}

export const MANIFEST_MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

/** Every manifest type Wharf serves, for the Accept header. */
export const MANIFEST_ACCEPT: readonly string[] = Object.values(MANIFEST_MEDIA_TYPES);

export interface RegistryClientOptions {
  /** Base URL, e.g. `http://127.0.0.1:5000`. */
  readonly url: string;
  readonly username?: string;
  readonly password?: string;
  readonly logger?: Logger;
  /** Per request, in milliseconds (default 60 000); blob transfers get no timeout. */
  readonly timeoutMs?: number;
}

/** A registry answered with an error: the HTTP status and, when it sent the OCI envelope, the first code. */
export class RegistryError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code?: string,
    readonly detail?: unknown,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** `getBlob` refuses bodies above this: it is for small blobs (configs, envelopes). */
export const SMALL_BLOB_LIMIT = 16 * 1024 * 1024;

type Body = Buffer | Readable | undefined;

interface RequestSpec {
  readonly method: string;
  /** A path under the base URL, or an absolute URL (an upload Location). */
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: Body;
  /** Scopes the request needs beyond what the challenge names (a mount also reads its source). */
  readonly extraScopes?: readonly string[];
  /** Answers that are not errors; others throw RegistryError. */
  readonly ok: readonly number[];
  /** No timeout (blob transfers). */
  readonly streaming?: boolean;
}

interface Challenge {
  readonly scheme: string;
  readonly params: Record<string, string>;
}

/** Parses `WWW-Authenticate: Bearer realm="...",service="...",scope="..."`. */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/gy;
  const rest = m[2] ?? '';
  let part: RegExpExecArray | null;
  while (re.lastIndex < rest.length && (part = re.exec(rest)) !== null) {
    params[(part[1] ?? '').toLowerCase()] =
      part[2] !== undefined ? part[2].replace(/\\(.)/g, '$1') : (part[3] ?? '');
  }
  return { scheme: (m[1] ?? '').toLowerCase(), params };
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

const scopeOf = (repo: string, actions: string) => `repository:${repo}:${actions}`;

/**
 * The OCI Distribution API over HTTP. Credentials go out only after the registry asks: Basic when it
 * challenges with Basic, else a bearer token fetched from the challenge's realm (with the credentials
 * as Basic, or anonymously) and cached per scope set until it expires.
 */
export class RegistryClient {
  readonly url: string;
  private readonly base: URL;
  private readonly username: string | undefined;
  private readonly password: string | undefined;
  private readonly logger: Logger | undefined;
  private readonly timeoutMs: number;
  /** The registry challenged with Basic once: send it from then on. */
  private basic = false;
  private readonly tokens = new Map<string, { token: string; expires: number }>();

  constructor(opts: RegistryClientOptions) {
    this.url = opts.url.replace(/\/+$/, '');
    this.base = new URL(`${this.url}/`);
    this.username = opts.username;
    this.password = opts.password;
    this.logger = opts.logger;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  async getManifest(
    repo: string,
    ref: string,
    accept: readonly string[] = MANIFEST_ACCEPT,
  ): Promise<ManifestResponse> {
    const res = await this.request({
      method: 'GET',
      path: `/v2/${repo}/manifests/${ref}`,
      headers: { Accept: accept.join(', ') },
      ok: [200],
    });
    const bytes = Buffer.from(await res.arrayBuffer());
    const digest = sha256(bytes);
    const served = res.headers.get('Docker-Content-Digest');
    if (ref.includes(':') && ref !== digest) {
      throw new RegistryError(
        `manifest ${repo}@${ref}: the registry sent content with digest ${digest}`,
        200,
      );
    }
    if (served !== null && served !== '' && served.startsWith('sha256:') && served !== digest) {
      throw new RegistryError(
        `manifest ${repo}:${ref}: Docker-Content-Digest ${served} but content is ${digest}`,
        200,
      );
    }
    return { bytes, mediaType: mediaTypeOf(res, bytes), digest };
  }

  /** The manifest's descriptor, or undefined when the registry does not have it. */
  async headManifest(
    repo: string,
    ref: string,
    accept: readonly string[] = MANIFEST_ACCEPT,
  ): Promise<ManifestHead | undefined> {
    const res = await this.request({
      method: 'HEAD',
      path: `/v2/${repo}/manifests/${ref}`,
      headers: { Accept: accept.join(', ') },
      ok: [200, 404],
    });
    if (res.status === 404) return undefined;
    const digest = res.headers.get('Docker-Content-Digest') ?? '';
    const mediaType = (res.headers.get('Content-Type') ?? '').split(';')[0]?.trim() ?? '';
    return { digest, mediaType, size: Number(res.headers.get('Content-Length') ?? '0') };
  }

  /** PUTs manifest bytes as they are under a tag or digest; returns the digest the registry computed. */
  async putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<string> {
    const res = await this.request({
      method: 'PUT',
      path: `/v2/${repo}/manifests/${ref}`,
      headers: { 'Content-Type': mediaType },
      body: bytes,
      ok: [201],
    });
    await res.arrayBuffer();
    return res.headers.get('Docker-Content-Digest') ?? sha256(bytes);
  }

  async blobExists(repo: string, digest: string): Promise<boolean> {
    const res = await this.request({ method: 'HEAD', path: `/v2/${repo}/blobs/${digest}`, ok: [200, 404] });
    return res.status === 200;
  }

  /**
   * Uploads a blob: a Buffer in one monolithic `POST ?digest=`, a stream with POST then one streaming
   * PUT (the session is opened first, so authentication never needs to replay the stream).
   */
  async pushBlob(repo: string, data: Buffer | Readable, digest: string, size?: number): Promise<void> {
    if (Buffer.isBuffer(data)) {
      const res = await this.request({
        method: 'POST',
        path: `/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(digest)}`,
        headers: { 'Content-Type': 'application/octet-stream' },
        body: data,
        ok: [201, 202],
      });
      await res.arrayBuffer();
      // 202: the registry ignores monolithic POSTs; finish the session it opened with a PUT.
      if (res.status === 202) await this.finishUpload(res, digest, data, data.length);
      return;
    }
    const started = await this.request({ method: 'POST', path: `/v2/${repo}/blobs/uploads/`, ok: [202] });
    await started.arrayBuffer();
    await this.finishUpload(started, digest, data, size);
  }

  private async finishUpload(started: Response, digest: string, data: Buffer | Readable, size?: number) {
    const location = started.headers.get('Location');
    if (location === null)
      throw new RegistryError('upload session without a Location header', started.status);
    const url = new URL(location, this.base);
    url.searchParams.set('digest', digest);
    const res = await this.request({
      method: 'PUT',
      path: url.toString(),
      headers: {
        'Content-Type': 'application/octet-stream',
        ...(size !== undefined && { 'Content-Length': String(size) }),
      },
      body: data,
      ok: [201],
      streaming: true,
    });
    await res.arrayBuffer();
  }

  /**
   * Cross-repository mount of `digest` from repository `from`: true when the registry linked it (201).
   * A 202 means it opened an upload instead; that session is cancelled and false returned, so callers
   * decide themselves whether to copy bytes.
   */
  async mountBlob(repo: string, digest: string, from: string): Promise<boolean> {
    const res = await this.request({
      method: 'POST',
      path: `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`,
      extraScopes: [scopeOf(from, 'pull')],
      ok: [201, 202],
    });
    await res.arrayBuffer();
    if (res.status === 201) return true;
    const location = res.headers.get('Location');
    if (location !== null) {
      try {
        const cancel = await this.request({
          method: 'DELETE',
          path: new URL(location, this.base).toString(),
          ok: [204, 404],
        });
        await cancel.arrayBuffer();
      } catch (err) {
        this.logger?.warn({ err, repo, digest }, 'cancelling the upload a refused mount opened failed');
      }
    }
    return false;
  }

  /** A small blob's bytes, checked against the digest; refuses blobs above `limit`. */
  async getBlob(repo: string, digest: string, limit = SMALL_BLOB_LIMIT): Promise<Buffer> {
    const res = await this.request({ method: 'GET', path: `/v2/${repo}/blobs/${digest}`, ok: [200] });
    const length = Number(res.headers.get('Content-Length') ?? '0');
    if (length > limit) {
      await res.body?.cancel();
      throw new RegistryError(`blob ${digest} is ${length} bytes, more than the ${limit} this reads`, 200);
    }
    const bytes = Buffer.from(await res.arrayBuffer());
    if (bytes.length > limit) {
      throw new RegistryError(`blob ${digest} is more than the ${limit} bytes this reads`, 200);
    }
    if (digest.startsWith('sha256:') && sha256(bytes) !== digest) {
      throw new RegistryError(
        `blob ${repo}@${digest}: the registry sent content with digest ${sha256(bytes)}`,
        200,
      );
    }
    return bytes;
  }

  /** A blob as a stream, for large ones; the caller checks the digest if it needs to. */
  async openBlob(repo: string, digest: string): Promise<Readable> {
    const res = await this.request({
      method: 'GET',
      path: `/v2/${repo}/blobs/${digest}`,
      ok: [200],
      streaming: true,
    });
    if (!res.body) return Readable.from([]);
    return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
  }

  /**
   * The referrers of `digest`, every page, filtered by `artifactType` (here when the registry did not).
   * A registry without the referrers API (404) is read through the tag-schema fallback `sha256-<hex>`.
   */
  async referrers(repo: string, digest: string, artifactType?: string): Promise<OciIndex> {
    const manifests: Descriptor[] = [];
    let path: string | undefined =
      `/v2/${repo}/referrers/${digest}` +
      (artifactType !== undefined ? `?artifactType=${encodeURIComponent(artifactType)}` : '');
    let filtered = artifactType === undefined;
    while (path !== undefined) {
      const res = await this.request({
        method: 'GET',
        path,
        headers: { Accept: MANIFEST_MEDIA_TYPES.ociIndex },
        ok: [200, 404],
      });
      if (res.status === 404) {
        await res.arrayBuffer();
        return this.fallbackReferrers(repo, digest, artifactType);
      }
      const page = (await res.json()) as { manifests?: unknown };
      if (Array.isArray(page.manifests)) manifests.push(...(page.manifests as Descriptor[]));
      if (artifactType !== undefined && /artifactType/i.test(res.headers.get('OCI-Filters-Applied') ?? '')) {
        filtered = true;
      }
      path = nextLink(res.headers.get('Link'));
    }
    return {
      schemaVersion: 2,
      mediaType: MANIFEST_MEDIA_TYPES.ociIndex,
      manifests: filtered ? manifests : manifests.filter((d) => d.artifactType === artifactType),
    };
  }

  private async fallbackReferrers(repo: string, digest: string, artifactType?: string): Promise<OciIndex> {
    const tag = digest.replace(':', '-');
    let manifests: Descriptor[] = [];
    try {
      const index = JSON.parse((await this.getManifest(repo, tag)).bytes.toString('utf8')) as {
        manifests?: unknown;
      };
      if (Array.isArray(index.manifests)) manifests = index.manifests as Descriptor[];
    } catch (err) {
      if (!(err instanceof RegistryError && err.status === 404)) throw err;
    }
    if (artifactType !== undefined) manifests = manifests.filter((d) => d.artifactType === artifactType);
    return { schemaVersion: 2, mediaType: MANIFEST_MEDIA_TYPES.ociIndex, manifests };
  }

  /** Sends a request, answering one authentication challenge; throws RegistryError on other statuses. */
  private async request(spec: RequestSpec): Promise<Response> {
    const url = new URL(spec.path, this.base);
    const scopeKey = `${spec.method === 'GET' || spec.method === 'HEAD' ? 'pull' : 'push'} ${url.pathname.replace(/\/(manifests|blobs|referrers)\/.*$/, '')} ${(spec.extraScopes ?? []).join(' ')}`;
    const cached = this.tokens.get(scopeKey);
    let authorization =
      cached && cached.expires > Date.now()
        ? `Bearer ${cached.token}`
        : this.basic
          ? this.basicHeader()
          : undefined;
    let res = await this.send(url, spec, authorization);
    // A stream cannot be sent twice: its request must already carry what the registry wants.
    if (res.status === 401 && !(spec.body instanceof Readable)) {
      const challenge = parseChallenge(res.headers.get('WWW-Authenticate') ?? '');
      authorization = challenge && (await this.answer(challenge, spec, scopeKey));
      if (authorization !== undefined) {
        await res.arrayBuffer();
        res = await this.send(url, spec, authorization);
      }
    }
    if (!spec.ok.includes(res.status)) throw await errorOf(res, spec.method, url);
    return res;
  }

  private async send(url: URL, spec: RequestSpec, authorization: string | undefined): Promise<Response> {
    const headers: Record<string, string> = { ...spec.headers };
    if (authorization !== undefined) headers.Authorization = authorization;
    const body = spec.body instanceof Readable ? (Readable.toWeb(spec.body) as ReadableStream) : spec.body;
    this.logger?.debug({ method: spec.method, url: url.toString() }, 'registry request');
    const init: RequestInit & { duplex?: 'half' } = {
      method: spec.method,
      headers,
      ...(body !== undefined && { body }),
      ...(spec.body instanceof Readable && { duplex: 'half' }),
      ...(spec.streaming !== true && { signal: AbortSignal.timeout(this.timeoutMs) }),
    };
    return fetch(url, init).catch((err: unknown) => {
      throw unreachable(url, err);
    });
  }

  private basicHeader(): string | undefined {
    if (this.username === undefined) return undefined;
    return `Basic ${Buffer.from(`${this.username}:${this.password ?? ''}`).toString('base64')}`;
  }

  /** The Authorization header that answers a challenge, or undefined when there is none to give. */
  private async answer(
    challenge: Challenge,
    spec: RequestSpec,
    scopeKey: string,
  ): Promise<string | undefined> {
    if (challenge.scheme === 'basic') {
      this.basic = true;
      return this.basicHeader();
    }
    if (challenge.scheme !== 'bearer') return undefined;
    const realm = challenge.params.realm;
    if (realm === undefined || realm === '') return undefined;
    const tokenURL = new URL(realm, this.base);
    if (challenge.params.service !== undefined)
      tokenURL.searchParams.set('service', challenge.params.service);
    const scopes = new Set([
      ...(challenge.params.scope ?? '').split(' ').filter((s) => s !== ''),
      ...(spec.extraScopes ?? []),
    ]);
    for (const scope of scopes) tokenURL.searchParams.append('scope', scope);
    const basic = this.basicHeader();
    const res = await fetch(tokenURL, {
      headers: basic !== undefined ? { Authorization: basic } : {},
      signal: AbortSignal.timeout(this.timeoutMs),
    }).catch((err: unknown) => {
      throw unreachable(tokenURL, err);
    });
    if (res.status !== 200) throw await errorOf(res, 'GET', tokenURL, 'token request');
    const body = (await res.json()) as { token?: unknown; access_token?: unknown; expires_in?: unknown };
    const token = typeof body.token === 'string' ? body.token : body.access_token;
    if (typeof token !== 'string' || token === '') {
      throw new RegistryError(`token server ${tokenURL.origin} answered without a token`, res.status);
    }
    const lifetime = typeof body.expires_in === 'number' ? body.expires_in : 60;
    // Renew a little early: a token that expires in flight costs a failed request.
    this.tokens.set(scopeKey, { token, expires: Date.now() + Math.max(lifetime - 10, 1) * 1000 });
    return `Bearer ${token}`;
  }
}

/** fetch says only "fetch failed"; the reason (ECONNREFUSED, a timeout) is in its cause. */
function unreachable(url: URL, err: unknown): Error {
  const cause = (err as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
  const why =
    typeof cause?.code === 'string'
      ? cause.code
      : typeof cause?.message === 'string'
        ? cause.message
        : err instanceof Error
          ? err.message
          : String(err);
  return new Error(`cannot reach ${url.origin}: ${why}`, { cause: err });
}

function mediaTypeOf(res: Response, bytes: Buffer): string {
  const header = (res.headers.get('Content-Type') ?? '').split(';')[0]?.trim() ?? '';
  if (header !== '' && header !== 'application/json' && header !== 'application/octet-stream') return header;
  try {
    const doc = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown; manifests?: unknown };
    if (typeof doc.mediaType === 'string') return doc.mediaType;
    return doc.manifests !== undefined ? MANIFEST_MEDIA_TYPES.ociIndex : MANIFEST_MEDIA_TYPES.ociManifest;
  } catch {
    return header;
  }
}

function nextLink(header: string | null): string | undefined {
  if (header === null) return undefined;
  const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(header);
  return m?.[1];
}

async function errorOf(res: Response, method: string, url: URL, what = 'request'): Promise<RegistryError> {
  let code: string | undefined;
  let message: string | undefined;
  let detail: unknown;
  try {
    const body = (await res.json()) as { errors?: { code?: unknown; message?: unknown; detail?: unknown }[] };
    const first = body.errors?.[0];
    if (typeof first?.code === 'string') code = first.code;
    if (typeof first?.message === 'string') message = first.message;
    detail = first?.detail;
  } catch {
    // No OCI error body (HEAD, a proxy's page).
  }
  const text = `${what} ${method} ${url.pathname} failed: ${res.status}${code !== undefined ? ` ${code}` : ''}${message !== undefined ? `: ${message}` : ''}`;
  return new RegistryError(text, res.status, code, detail);
}
