// Graceful shutdown of a real `wharf serve`: SIGTERM in the middle of a slow upload. The server stops
// accepting at once, lets the upload finish within http.draintimeout, or cuts it when the timeout
// runs out; either way a second server on the same storage sees a complete blob or a session it can
// resume, never a partial blob.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { printOutput, startWharf, type RunningServer } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const repo = 'e2e/shutdown';

const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(25);
  }
}

/** The session's data file in the Distribution layout; its size is what the server has stored. */
const uploadData = (root: string, id: string): string =>
  join(root, 'docker/registry/v2/repositories', repo, '_uploads', id, 'data');

const storedBytes = async (root: string, id: string): Promise<number> =>
  (await stat(uploadData(root, id)).catch(() => undefined))?.size ?? 0;

async function startUpload(server: RunningServer): Promise<{ path: string; id: string }> {
  const res = await fetch(`${server.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  assert.equal(res.status, 202, await res.text());
  const location = res.headers.get('location');
  const id = res.headers.get('docker-upload-uuid');
  assert.ok(location && id);
  return { path: new URL(location, server.url).pathname, id };
}

interface SlowBody {
  /** Bytes handed to the socket so far. */
  readonly sent: () => number;
  /** The status, or undefined when the connection broke before an answer. */
  readonly outcome: Promise<{ status?: number; digest?: string | null }>;
}

/** Sends `data` chunked, `piece` bytes every `everyMs`, until done or the connection breaks. */
function slowBody(
  url: string,
  method: 'PATCH' | 'PUT',
  data: Buffer,
  piece: number,
  everyMs: number,
): SlowBody {
  const req = httpRequest(url, {
    method,
    headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
  });
  let sent = 0;
  const state = { broken: false };
  const outcome = new Promise<{ status?: number; digest?: string | null }>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => {
        resolve({ status: res.statusCode, digest: String(res.headers['docker-content-digest'] ?? '') });
      });
    });
    req.on('error', () => {
      state.broken = true;
      resolve({});
    });
  });
  void (async () => {
    while (sent < data.length && !state.broken) {
      const chunk = data.subarray(sent, Math.min(sent + piece, data.length));
      const flushed = req.write(chunk);
      sent += chunk.length;
      if (!flushed) await new Promise((r) => req.once('drain', r));
      await sleep(everyMs);
    }
    if (!state.broken) req.end();
  })();
  return { sent: () => sent, outcome };
}

async function refusesConnections(server: RunningServer): Promise<boolean> {
  try {
    const res = await fetch(`${server.url}/v2/`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return false;
  } catch {
    return true;
  }
}

async function getBlob(server: RunningServer, digest: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(`${server.url}/v2/${repo}/blobs/${digest}`);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

describe('SIGTERM during an upload', () => {
  let root: string;
  const started: RunningServer[] = [];
  const start = async (draintimeout: string): Promise<RunningServer> => {
    const server = await startWharf({
      root,
      env: { WHARF_HTTP_DRAINTIMEOUT: draintimeout, WHARF_LOG_LEVEL: 'info' },
    });
    started.push(server);
    return server;
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'wharf-e2e-shutdown-'));
  });
  after(async () => {
    for (const server of started) {
      await server.kill();
      if (!server.output().includes('"msg":"shut down"')) printOutput(server, `wharf ${server.host}`);
    }
    await rm(root, { recursive: true, force: true });
  });

  test('an upload that ends within the drain timeout completes; new connections are refused meanwhile', async () => {
    const first = await start('30s');
    const data = randomBytes(6 * MiB);
    const digest = sha256(data);
    const { path, id } = await startUpload(first);
    const body = slowBody(
      `${first.url}${path}?digest=${encodeURIComponent(digest)}`,
      'PUT',
      data,
      256 * 1024,
      60,
    );
    await until('the server stores the first bytes', 20_000, async () => (await storedBytes(root, id)) > 0);

    const stopped = first.stop('SIGTERM');
    await until('the server refuses new connections', 10_000, () => refusesConnections(first));
    assert.ok(body.sent() < data.length, 'the upload was still going when the server stopped accepting');

    const answer = await body.outcome;
    assert.equal(answer.status, 201, 'the in-flight upload was answered');
    assert.equal(answer.digest, digest);
    await stopped;
    assert.match(first.output(), /"msg":"shutting down"/);
    assert.match(first.output(), /"msg":"shut down"/);

    const second = await start('30s');
    const blob = await getBlob(second, digest);
    assert.equal(blob.status, 200);
    assert.equal(sha256(blob.body), digest, 'the stored blob has exactly the uploaded bytes');
    await second.stop();
  });

  test('an upload cut by the drain timeout resumes on another server and completes, never visible partial', async () => {
    const first = await start('1s');
    const data = randomBytes(8 * MiB);
    const digest = sha256(data);
    const { path, id } = await startUpload(first);
    // About 6 s of sending: far longer than the 1 s the server drains for.
    const body = slowBody(`${first.url}${path}`, 'PATCH', data, 128 * 1024, 100);
    await until('the server stores the first bytes', 20_000, async () => (await storedBytes(root, id)) > 0);
    await first.stop('SIGTERM');
    const answer = await body.outcome;
    assert.equal(answer.status, undefined, `the server cut the upload, it did not answer ${answer.status}`);
    assert.ok(body.sent() < data.length);
    assert.match(first.output(), /"msg":"shut down"/);
    assert.doesNotMatch(first.output(), /did not finish in time/);

    const second = await start('30s');
    assert.equal((await getBlob(second, digest)).status, 404, 'no partial blob is visible');
    const status = await fetch(`${second.url}${path}`);
    assert.equal(status.status, 204);
    const range = /^0-(\d+)$/.exec(status.headers.get('range') ?? '');
    assert.ok(range?.[1], `Range of the session: ${status.headers.get('range')}`);
    const offset = Number(range[1]) + 1;
    assert.ok(offset > 0 && offset <= body.sent(), `stored ${offset} of ${body.sent()} sent bytes`);

    const patch = await fetch(`${second.url}${path}`, {
      method: 'PATCH',
      headers: {
        'content-type': 'application/octet-stream',
        'content-range': `${offset}-${data.length - 1}`,
      },
      body: data.subarray(offset),
    });
    assert.equal(patch.status, 202, await patch.text());
    assert.equal(patch.headers.get('range'), `0-${data.length - 1}`);
    const location = new URL(patch.headers.get('location') ?? path, second.url);
    location.searchParams.set('digest', digest);
    const put = await fetch(`${second.url}${location.pathname}${location.search}`, { method: 'PUT' });
    assert.equal(put.status, 201, await put.text());
    const blob = await getBlob(second, digest);
    assert.equal(blob.status, 200);
    assert.equal(sha256(blob.body), digest, 'the resumed blob has exactly the uploaded bytes');
    await second.stop();
  });
});
