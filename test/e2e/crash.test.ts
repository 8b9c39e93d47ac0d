// Uploads interrupted the hard way, over real HTTP: Wharf SIGKILLed in the middle of a request body, and
// a client that drops its connection mid-PATCH. No partial blob may become visible, the session must
// still complete with the right digest, and content stored before must stay intact.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startWharf, printOutput, type RunningServer } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const repo = 'e2e/crash';

const sha256 = (data: Buffer | string): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Upload URLs survive a restart on another port: keep path and query, swap the base. */
function uploadUrl(server: RunningServer, location: string): string {
  const u = new URL(location, server.url);
  return `${server.url}${u.pathname}${u.search}`;
}

function withDigest(url: string, digest: string): string {
  return `${url}${url.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;
}

async function describeResponse(res: Response): Promise<string> {
  const headers = [...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n');
  return `${res.status}\n${headers}\n\n${await res.text()}`;
}

async function expectStatus(res: Response, status: number, what: string): Promise<void> {
  if (res.status !== status) {
    assert.fail(`${what}: want ${status}, got:\n${await describeResponse(res)}`);
  }
}

/** POST a new upload session; returns its absolute URL. */
async function startUpload(server: RunningServer): Promise<string> {
  const res = await fetch(`${server.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await expectStatus(res, 202, `POST /v2/${repo}/blobs/uploads/`);
  await res.arrayBuffer();
  const location = res.headers.get('location');
  assert.ok(location, 'POST answers a Location');
  return uploadUrl(server, location);
}

/** PATCH one chunk with Content-Range; returns the session URL for the next request. */
async function patchChunk(server: RunningServer, url: string, data: Buffer, start: number): Promise<string> {
  const res = await fetch(url, {
    method: 'PATCH',
    headers: {
      'content-type': 'application/octet-stream',
      'content-range': `${start}-${start + data.length - 1}`,
    },
    body: data,
  });
  await expectStatus(res, 202, `PATCH ${start}-${start + data.length - 1}`);
  await res.arrayBuffer();
  assert.equal(res.headers.get('range'), `0-${start + data.length - 1}`);
  return uploadUrl(server, res.headers.get('location') ?? url);
}

/** PUT ?digest= with an optional final body; asserts 201 and the digest header. */
async function finishUpload(url: string, digest: string, body?: Buffer): Promise<void> {
  const res = await fetch(withDigest(url, digest), {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream' },
    body: body ?? Buffer.alloc(0),
  });
  await expectStatus(res, 201, `PUT ?digest=${digest}`);
  await res.arrayBuffer();
  assert.equal(res.headers.get('docker-content-digest'), digest);
}

async function pushBlob(server: RunningServer, data: Buffer): Promise<string> {
  const digest = sha256(data);
  await finishUpload(await startUpload(server), digest, data);
  return digest;
}

async function blobStatus(server: RunningServer, digest: string): Promise<number> {
  const res = await fetch(`${server.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
  return res.status;
}

async function getBlob(server: RunningServer, digest: string): Promise<Buffer> {
  const res = await fetch(`${server.url}/v2/${repo}/blobs/${digest}`);
  await expectStatus(res, 200, `GET blob ${digest}`);
  return Buffer.from(await res.arrayBuffer());
}

/** The committed offset of a session: GET answers 204 with `Range: 0-<last>` (absent when empty). */
async function uploadOffset(server: RunningServer, url: string): Promise<{ offset: number; url: string }> {
  const res = await fetch(url);
  await expectStatus(res, 204, `GET upload status ${url}`);
  const range = res.headers.get('range');
  const next = uploadUrl(server, res.headers.get('location') ?? url);
  if (range === null) return { offset: 0, url: next };
  const m = /^0-(\d+)$/.exec(range);
  assert.ok(m?.[1], `malformed Range: ${range}`);
  return { offset: Number(m[1]) + 1, url: next };
}

/**
 * Sends `data` as the body of a request, slowly, and calls `interrupt` once `cutAt` bytes are written
 * and have had time to reach the server. Resolves when the request has failed or been answered.
 */
async function interruptedBody(
  url: string,
  method: 'PATCH' | 'PUT',
  headers: Record<string, string>,
  data: Buffer,
  cutAt: number,
  interrupt: (req: ClientRequest) => Promise<void>,
): Promise<{ sent: number; answered?: number }> {
  const req = httpRequest(url, {
    method,
    headers: {
      ...headers,
      'content-type': 'application/octet-stream',
      'content-length': String(data.length),
    },
  });
  const outcome = new Promise<number | undefined>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => {
      resolve(undefined);
    });
    req.on('close', () => {
      resolve(undefined);
    });
  });
  const piece = 128 * 1024;
  let sent = 0;
  while (sent < cutAt) {
    const chunk = data.subarray(sent, Math.min(sent + piece, cutAt));
    const flushed = req.write(chunk);
    sent += chunk.length;
    if (!flushed) await new Promise((r) => req.once('drain', r));
    await sleep(20);
  }
  // Let the server read and store what was sent before cutting it off.
  await sleep(500);
  await interrupt(req);
  const answered = await outcome;
  return answered === undefined ? { sent } : { sent, answered };
}

/** Finishes an interrupted session from wherever the server says it stands, and checks the result. */
async function resumeAndComplete(
  server: RunningServer,
  url: string,
  data: Buffer,
  maxOffset: number,
): Promise<number> {
  const digest = sha256(data);
  const status = await uploadOffset(server, url);
  assert.ok(
    status.offset >= MiB && status.offset <= maxOffset,
    `offset ${status.offset} must lie between the acknowledged chunk (${MiB}) and the bytes sent (${maxOffset})`,
  );
  const next = await patchChunk(server, status.url, data.subarray(status.offset), status.offset);
  await finishUpload(next, digest);
  assert.equal(await blobStatus(server, digest), 200);
  assert.ok(
    (await getBlob(server, digest)).equals(data),
    'the completed blob has exactly the uploaded bytes',
  );
  return status.offset;
}

interface StoredImage {
  tag: string;
  manifest: string;
  digest: string;
  blobs: Map<string, Buffer>;
}

/** An OCI image (config + one layer of random bytes) pushed over plain HTTP. */
async function pushImage(server: RunningServer, tag: string): Promise<StoredImage> {
  const layer = randomBytes(MiB);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [sha256(layer)] },
    }),
  );
  const blobs = new Map<string, Buffer>();
  for (const data of [config, layer]) blobs.set(await pushBlob(server, data), data);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: sha256(config),
      size: config.length,
    },
    layers: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length },
    ],
  });
  const res = await fetch(`${server.url}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    body: manifest,
  });
  await expectStatus(res, 201, `PUT manifest ${tag}`);
  await res.arrayBuffer();
  return { tag, manifest, digest: sha256(manifest), blobs };
}

/** Every stored image still pulls in full: manifest by tag and digest, each blob byte for byte. */
async function assertIntact(server: RunningServer, images: StoredImage[]): Promise<void> {
  for (const image of images) {
    for (const ref of [image.tag, image.digest]) {
      const res = await fetch(`${server.url}/v2/${repo}/manifests/${ref}`, {
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
      });
      await expectStatus(res, 200, `GET manifest ${ref}`);
      assert.equal(await res.text(), image.manifest);
      assert.equal(res.headers.get('docker-content-digest'), image.digest);
    }
    for (const [digest, data] of image.blobs) {
      assert.ok((await getBlob(server, digest)).equals(data), `blob ${digest} intact`);
    }
  }
}

void describe('wharf SIGKILLed during an upload', { timeout: 150_000 }, () => {
  let root = '';
  let server: RunningServer | undefined;
  const started: RunningServer[] = [];
  const images: StoredImage[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'wharf-e2e-crash-'));
    server = await startWharf({ root });
    started.push(server);
    images.push(await pushImage(server, 'before-crash'));
  });

  after(async () => {
    await server?.stop();
    for (const [i, s] of started.entries()) printOutput(s, `wharf run ${i + 1}`);
    if (root !== '') await rm(root, { recursive: true, force: true });
  });

  // The rest of the blob after a first acknowledged 1 MiB chunk travels in a PATCH or in the closing PUT.
  const cases = [
    { name: 'mid-PATCH', method: 'PATCH' as const },
    { name: 'mid-PUT with the final chunk', method: 'PUT' as const },
  ];
  for (const { name, method } of cases) {
    void test(`killed ${name}: no partial blob, the session resumes, stored images intact`, async (t) => {
      assert.ok(server);
      const data = randomBytes(4 * MiB);
      const digest = sha256(data);
      const url = await patchChunk(server, await startUpload(server), data.subarray(0, MiB), 0);

      const rest = data.subarray(MiB);
      const headers: Record<string, string> =
        method === 'PATCH' ? { 'content-range': `${MiB}-${data.length - 1}` } : {};
      const target = method === 'PATCH' ? url : withDigest(url, digest);
      const running = server;
      const { sent, answered } = await interruptedBody(target, method, headers, rest, MiB, () =>
        running.kill(),
      );
      assert.equal(answered, undefined, 'the server died before answering');

      server = await startWharf({ root });
      started.push(server);
      assert.equal(await blobStatus(server, digest), 404, 'the whole blob is not visible');
      assert.equal(await blobStatus(server, sha256(data.subarray(0, MiB))), 404, 'nor its first chunk');
      assert.equal(await blobStatus(server, sha256(data.subarray(0, MiB + sent))), 404, 'nor what was sent');
      const offset = await resumeAndComplete(server, uploadUrl(server, url), data, MiB + sent);
      t.diagnostic(`sent ${MiB + sent} bytes before the kill; the session resumed at ${offset}`);
      await assertIntact(server, images);
      images.push(await pushImage(server, `after-${method.toLowerCase()}`));
    });
  }

  void test('a client that disconnects mid-PATCH: nothing visible, the session resumes', async (t) => {
    assert.ok(server);
    const data = randomBytes(4 * MiB);
    const url = await patchChunk(server, await startUpload(server), data.subarray(0, MiB), 0);
    const { sent, answered } = await interruptedBody(
      url,
      'PATCH',
      { 'content-range': `${MiB}-${data.length - 1}` },
      data.subarray(MiB),
      MiB,
      (req) => {
        req.destroy();
        return Promise.resolve();
      },
    );
    assert.equal(answered, undefined);
    const settled = await settledOffset(server, url);
    assert.equal(await blobStatus(server, sha256(data)), 404);
    assert.ok(settled <= MiB + sent);
    const offset = await resumeAndComplete(server, url, data, MiB + sent);
    t.diagnostic(`sent ${MiB + sent} bytes before the disconnect; the session resumed at ${offset}`);
    await assertIntact(server, images);
  });

  void test('a client that disconnects mid-PATCH can cancel the session', async () => {
    assert.ok(server);
    const data = randomBytes(2 * MiB);
    const url = await startUpload(server);
    await interruptedBody(url, 'PATCH', {}, data, MiB, (req) => {
      req.destroy();
      return Promise.resolve();
    });
    await settledOffset(server, url);
    const res = await fetch(url, { method: 'DELETE' });
    await expectStatus(res, 204, 'DELETE upload');
    await res.arrayBuffer();
    const gone = await fetch(url);
    await expectStatus(gone, 404, 'GET cancelled upload');
    const body = (await gone.json()) as { errors: { code: string }[] };
    assert.equal(body.errors[0]?.code, 'BLOB_UPLOAD_UNKNOWN');
    assert.equal(await blobStatus(server, sha256(data)), 404);
    assert.equal(await blobStatus(server, sha256(data.subarray(0, MiB))), 404);
  });
});

/** Waits until the server has finished with an aborted request: two status reads 200 ms apart agree. */
async function settledOffset(server: RunningServer, url: string): Promise<number> {
  let last = -1;
  for (let i = 0; i < 25; i++) {
    const { offset } = await uploadOffset(server, url);
    if (offset === last) return offset;
    last = offset;
    await sleep(200);
  }
  assert.fail(`upload offset still changing after 5 s (last ${last})`);
}
