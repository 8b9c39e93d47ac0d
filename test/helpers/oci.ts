// Helpers for the HTTP integration tests: digests, OCI/Docker manifest builders, pushes, and the one
// assertion every error response goes through (`expectOciError`).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import supertest from 'supertest';
import type { Response } from 'supertest';
import { z } from 'zod';
import { createTestApp } from './app.js';

export type Client = ReturnType<typeof supertest>;
export type Request = ReturnType<Client['get']>;
export type TestAppOptions = NonNullable<Parameters<typeof createTestApp>[0]>;

/** A fresh registry (in-memory storage, delete enabled unless overridden) and a client for it. */
export async function newRegistry(opts: TestAppOptions = {}): Promise<Client> {
  const t = await createTestApp({ deleteEnabled: true, ...opts });
  return supertest(t.app.callback());
}

// ---- media types ----------------------------------------------------------------------------------

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  octet: 'application/octet-stream',
} as const;

/** What a client that understands every manifest type sends (Distribution 404s OCI types not accepted). */
export const ACCEPT_ALL = [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList].join(', ');

// ---- digests and blobs ----------------------------------------------------------------------------

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function hexOf(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1);
}

export function randomBlob(size = 1024): Buffer {
  return randomBytes(size);
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; variant?: string };
  data?: string;
}

export function descriptorOf(mediaType: string, content: Buffer): Descriptor {
  return { mediaType, digest: sha256(content), size: content.length };
}

/** The empty JSON blob `{}` and its descriptor, as the image-spec defines them for artifacts. */
export const EMPTY_JSON = Buffer.from('{}');
export const EMPTY_DESCRIPTOR: Descriptor = {
  mediaType: MT.ociEmpty,
  digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
  size: 2,
  data: 'e30=',
};

/** A small, unique image config blob. */
export function configBlob(): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [sha256(randomBlob(16))] },
      config: { Env: [`NONCE=${randomBytes(8).toString('hex')}`] },
    }),
  );
}

// ---- manifests ------------------------------------------------------------------------------------

/** A manifest as pushed: the exact bytes, their digest, and the media type to send as Content-Type. */
export interface Manifest {
  mediaType: string;
  bytes: Buffer;
  digest: string;
  descriptor: Descriptor;
}

export function manifestFromBytes(mediaType: string, bytes: Buffer | string): Manifest {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  const descriptor: Descriptor = { mediaType, digest: sha256(buf), size: buf.length };
  return { mediaType, bytes: buf, digest: descriptor.digest, descriptor };
}

export function manifestFromJson(mediaType: string, json: object): Manifest {
  return manifestFromBytes(mediaType, JSON.stringify(json));
}

interface ImageManifestOptions {
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export function ociManifest(opts: ImageManifestOptions): Manifest {
  return manifestFromJson(MT.ociManifest, {
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    ...(opts.artifactType !== undefined && { artifactType: opts.artifactType }),
    config: opts.config,
    layers: opts.layers,
    ...(opts.subject && { subject: opts.subject }),
    ...(opts.annotations && { annotations: opts.annotations }),
  });
}

/** An artifact: image manifest with `artifactType` and the empty config (its blob must be pushed). */
export function artifactManifest(
  opts: Omit<ImageManifestOptions, 'config' | 'layers'> & { layers?: Descriptor[] },
): Manifest {
  return ociManifest({ ...opts, config: EMPTY_DESCRIPTOR, layers: opts.layers ?? [EMPTY_DESCRIPTOR] });
}

export function ociIndex(opts: {
  manifests: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}): Manifest {
  return manifestFromJson(MT.ociIndex, {
    schemaVersion: 2,
    mediaType: MT.ociIndex,
    ...(opts.artifactType !== undefined && { artifactType: opts.artifactType }),
    manifests: opts.manifests,
    ...(opts.subject && { subject: opts.subject }),
    ...(opts.annotations && { annotations: opts.annotations }),
  });
}

export function dockerManifest(opts: { config: Descriptor; layers: Descriptor[] }): Manifest {
  return manifestFromJson(MT.dockerManifest, {
    schemaVersion: 2,
    mediaType: MT.dockerManifest,
    config: opts.config,
    layers: opts.layers,
  });
}

export function dockerManifestList(manifests: Descriptor[]): Manifest {
  return manifestFromJson(MT.dockerList, { schemaVersion: 2, mediaType: MT.dockerList, manifests });
}

export function withPlatform(d: Descriptor, architecture: string, os = 'linux'): Descriptor {
  return { ...d, platform: { architecture, os } };
}

// ---- HTTP helpers ---------------------------------------------------------------------------------

/** A header value, or undefined when absent (superagent's typings claim it is always a string). */
export function header(res: Response, name: string): string | undefined {
  const value: unknown = res.get(name);
  return typeof value === 'string' ? value : undefined;
}

/** Makes superagent hand back the body as a Buffer, whatever its Content-Type. */
export function raw<T extends Request>(req: T): T {
  return req.buffer(true).parse((res, callback) => {
    const chunks: Buffer[] = [];
    res.on('data', (chunk: Buffer) => chunks.push(chunk));
    res.on('end', () => {
      callback(null, Buffer.concat(chunks));
    });
  });
}

/**
 * Sends `body` as is. superagent would otherwise JSON-encode a Buffer sent with a JSON-ish
 * Content-Type (every manifest type ends in +json) into {"type":"Buffer","data":[…]}.
 */
export function sendBytes<T extends Request>(req: T, body: Buffer | string): T {
  return req.serialize((value: unknown) => value as string).send(body);
}

export function bodyBytes(res: Response): Buffer {
  const body: unknown = res.body;
  if (Buffer.isBuffer(body)) return body;
  const text: unknown = res.text;
  return Buffer.from(typeof text === 'string' ? text : '');
}

export function bodyJson<T extends z.ZodType>(res: Response, schema: T): z.infer<T> {
  const text = bodyBytes(res).toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    assert.fail(`response body is not JSON: ${dump(res)}`);
  }
  return schema.parse(parsed);
}

/** Status, interesting headers and the start of the body, for assertion messages. */
export function dump(res: Response): string {
  const headers = Object.entries(res.headers as Record<string, unknown>)
    .filter(([k]) => !['date', 'connection', 'keep-alive'].includes(k))
    .map(([k, v]) => `${k}: ${String(v)}`)
    .join('; ');
  const text = bodyBytes(res).toString('utf8');
  return `${res.status} [${headers}] ${text.length > 300 ? `${text.slice(0, 300)}…` : text}`;
}

export function expectStatus(res: Response, status: number): void {
  assert.equal(res.status, status, `expected ${status}, got ${dump(res)}`);
}

export function mediaTypeOf(contentType: string | undefined): string | undefined {
  return contentType?.split(';')[0]?.trim().toLowerCase();
}

const OciErrorBody = z.object({
  errors: z
    .array(
      z.object({
        code: z.string().regex(/^[A-Z_]+$/),
        message: z.string().optional(),
        detail: z.unknown().optional(),
      }),
    )
    .min(1),
});

/**
 * Asserts an OCI error response: the status, `Content-Type: application/json`, and a body
 * `{"errors":[{"code","message"?,"detail"?}]}` whose every code is `code` (or one of `code` when
 * the spec leaves the choice open).
 */
export function expectOciError(res: Response, status: number, code: string | readonly string[]): void {
  const codes: readonly string[] = typeof code === 'string' ? [code] : code;
  assert.equal(res.status, status, `expected ${status} ${codes.join('|')}, got ${dump(res)}`);
  assert.equal(
    mediaTypeOf(header(res, 'content-type')),
    'application/json',
    `error Content-Type: ${dump(res)}`,
  );
  const body = bodyJson(res, OciErrorBody);
  for (const e of body.errors) {
    assert.ok(codes.includes(e.code), `expected code ${codes.join('|')}, got ${dump(res)}`);
  }
}

/** The path (and query) of a Location, which may be absolute or relative; not normalised, on purpose. */
export function locationOf(res: Response): string {
  const location = header(res, 'location');
  assert.ok(location, `no Location header: ${dump(res)}`);
  return stripOrigin(location);
}

function stripOrigin(url: string): string {
  return url.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]*/i, '');
}

/** Adds query parameters to a path that may already carry some (a Location may). */
export function withQuery(path: string, params: Record<string, string>): string {
  const [pathname = '', query = ''] = path.split('?', 2);
  const search = new URLSearchParams(query);
  for (const [k, v] of Object.entries(params)) search.set(k, v);
  return `${pathname}?${search.toString()}`;
}

/** The path of the RFC 5988 `rel="next"` link, or undefined when there is none. */
export function nextLink(res: Response): string | undefined {
  const link = header(res, 'link');
  if (link === undefined) return undefined;
  const match = /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
  assert.ok(match?.[1], `Link header without rel="next": ${link}`);
  return stripOrigin(match[1]);
}

// ---- pushes ---------------------------------------------------------------------------------------

/** Pushes a blob with POST then PUT `?digest=` (the monolithic flow every registry must support). */
export async function pushBlob(
  r: Client,
  name: string,
  content: Buffer,
  mediaType: string = MT.octet,
): Promise<Descriptor> {
  const post = await r.post(`/v2/${name}/blobs/uploads/`);
  expectStatus(post, 202);
  const digest = sha256(content);
  const put = await r
    .put(withQuery(locationOf(post), { digest }))
    .set('Content-Type', MT.octet)
    .send(content);
  expectStatus(put, 201);
  return { mediaType, digest, size: content.length };
}

export function putManifest(
  r: Client,
  name: string,
  reference: string,
  m: Manifest,
  contentType = m.mediaType,
): Request {
  return sendBytes(r.put(`/v2/${name}/manifests/${reference}`).set('Content-Type', contentType), m.bytes);
}

export async function pushManifest(
  r: Client,
  name: string,
  reference: string,
  m: Manifest,
): Promise<Response> {
  const res = await putManifest(r, name, reference, m);
  expectStatus(res, 201);
  return res;
}

export function getManifest(r: Client, name: string, reference: string): Request {
  return raw(r.get(`/v2/${name}/manifests/${reference}`).set('Accept', ACCEPT_ALL));
}

/** Pushes a config and one random layer, and builds (does not push) an image manifest over them. */
export async function prepareImage(
  r: Client,
  name: string,
  opts: {
    docker?: boolean;
    subject?: Descriptor;
    annotations?: Record<string, string>;
    artifactType?: string;
  } = {},
): Promise<Manifest> {
  const config = await pushBlob(r, name, configBlob(), opts.docker ? MT.dockerConfig : MT.ociConfig);
  const layer = await pushBlob(r, name, randomBlob(512), opts.docker ? MT.dockerLayer : MT.ociLayer);
  return opts.docker
    ? dockerManifest({ config, layers: [layer] })
    : ociManifest({ config, layers: [layer], ...opts });
}

/** Pushes an image (OCI unless `docker`) under `tag`, or by digest when no tag is given. */
export async function pushImage(
  r: Client,
  name: string,
  tag?: string,
  opts: Parameters<typeof prepareImage>[2] = {},
): Promise<Manifest> {
  const manifest = await prepareImage(r, name, opts);
  await pushManifest(r, name, tag ?? manifest.digest, manifest);
  return manifest;
}

/** Pushes an artifact (empty config, pushed first) that refers to `subject`. */
export async function pushArtifact(
  r: Client,
  name: string,
  opts: {
    subject: Descriptor;
    artifactType?: string;
    annotations?: Record<string, string>;
    reference?: string;
  },
): Promise<Manifest> {
  await pushBlob(r, name, EMPTY_JSON, MT.ociEmpty);
  const m = artifactManifest({
    subject: opts.subject,
    artifactType: opts.artifactType ?? 'application/vnd.example.sbom.v1',
    annotations: opts.annotations,
  });
  await pushManifest(r, name, opts.reference ?? m.digest, m);
  return m;
}

// ---- response shapes ------------------------------------------------------------------------------

export const DescriptorSchema = z.object({
  mediaType: z.string(),
  digest: z.string(),
  size: z.number().int().nonnegative(),
  artifactType: z.string().optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

export const IndexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.literal(MT.ociIndex),
  manifests: z.array(DescriptorSchema),
});

export const TagListSchema = z.object({ name: z.string(), tags: z.array(z.string()) });

export const CatalogSchema = z.object({ repositories: z.array(z.string()) });
