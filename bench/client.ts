// The registry calls the bench makes, over the lean client in wire.ts: blobs stream from their
// temp files and pulled bytes are counted and dropped, so the client holds no blob in memory.
import { digestOf, type Content } from './content.js';
import { wire, type WireReply } from './wire.js';

export type Reply = WireReply;

export function send(
  method: string,
  url: string,
  headers: Record<string, string | number> = {},
  body?: Buffer,
): Promise<Reply> {
  return wire({ method, url, headers, ...(body === undefined ? {} : { body }) });
}

function expectStatus(reply: Reply, want: number, what: string): void {
  if (reply.status !== want) {
    const text = reply.body.toString('utf8').slice(0, 300);
    throw new Error(`${what}: expected ${want}, got ${reply.status}: ${text}`);
  }
}

function location(base: string, reply: Reply, what: string): string {
  const loc = reply.headers.location;
  if (loc === undefined) throw new Error(`${what}: no Location header`);
  return new URL(loc, base).toString();
}

function withDigest(loc: string, digest: string): string {
  const url = new URL(loc);
  url.searchParams.set('digest', digest);
  return url.toString();
}

async function startUpload(base: string, repo: string): Promise<string> {
  const reply = await send('POST', `${base}/v2/${repo}/blobs/uploads/`, { 'content-length': 0 });
  expectStatus(reply, 202, 'POST upload');
  return location(base, reply, 'POST upload');
}

/** POST, then one PUT ?digest= carrying the whole blob. */
export async function pushMonolithic(base: string, repo: string, c: Content): Promise<void> {
  const loc = await startUpload(base, repo);
  const reply = await wire({
    method: 'PUT',
    url: withDigest(loc, c.digest),
    headers: { 'content-type': 'application/octet-stream' },
    body: { content: c, start: 0, end: c.size },
  });
  expectStatus(reply, 201, 'PUT upload');
}

/** POST, PATCH chunks with Content-Range (following each new Location), then PUT ?digest=. */
export async function pushChunked(base: string, repo: string, c: Content, chunkSize: number): Promise<void> {
  let loc = await startUpload(base, repo);
  for (let start = 0; start < c.size; start += chunkSize) {
    const end = Math.min(c.size, start + chunkSize);
    const reply = await wire({
      method: 'PATCH',
      url: loc,
      headers: { 'content-type': 'application/octet-stream', 'content-range': `${start}-${end - 1}` },
      body: { content: c, start, end },
    });
    expectStatus(reply, 202, `PATCH ${start}-${end - 1}`);
    loc = location(base, reply, 'PATCH');
  }
  const reply = await send('PUT', withDigest(loc, c.digest), { 'content-length': 0 });
  expectStatus(reply, 201, 'PUT upload');
}

/** Pushes a small in-memory blob in one POST + PUT. */
export async function pushSmall(base: string, repo: string, data: Buffer): Promise<string> {
  const digest = digestOf(data);
  const loc = await startUpload(base, repo);
  const reply = await send(
    'PUT',
    withDigest(loc, digest),
    { 'content-type': 'application/octet-stream', 'content-length': data.length },
    data,
  );
  expectStatus(reply, 201, 'PUT upload');
  return digest;
}

/** GETs a blob, discarding the bytes; checks status, length and the digest header. */
export async function pullBlob(base: string, repo: string, c: Content): Promise<void> {
  const reply = await wire({ method: 'GET', url: `${base}/v2/${repo}/blobs/${c.digest}`, discardBody: true });
  if (reply.status !== 200) throw new Error(`GET blob: status ${reply.status}`);
  if (reply.bodyBytes !== c.size) throw new Error(`GET blob: got ${reply.bodyBytes} bytes, want ${c.size}`);
  const header = reply.headers['docker-content-digest'];
  if (header !== undefined && header !== c.digest) {
    throw new Error(`GET blob: Docker-Content-Digest ${header}, want ${c.digest}`);
  }
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** Pushes a config, one small layer and an OCI image manifest tagged `tag`; returns its digest. */
export async function pushSmallImage(base: string, repo: string, tag: string): Promise<string> {
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }),
  );
  const layer = Buffer.from(`wharf bench layer ${repo}\n`.repeat(64));
  const configDigest = await pushSmall(base, repo, config);
  const layerDigest = await pushSmall(base, repo, layer);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length },
      ],
    }),
  );
  const reply = await send(
    'PUT',
    `${base}/v2/${repo}/manifests/${tag}`,
    { 'content-type': OCI_MANIFEST, 'content-length': manifest.length },
    manifest,
  );
  expectStatus(reply, 201, 'PUT manifest');
  return digestOf(manifest);
}
