// A lean HTTP/1.1 client on raw sockets. node:http costs the client about 0.4 CPU-seconds per
// 256 MiB pulled, measured here, which on 2 cores caps what the bench can see of either server;
// reading into one reused buffer (net `onread`) and sending from a small ring of reused buffers
// cuts that roughly eightfold. One connection per request (Connection: close) keeps it simple.
import { open } from 'node:fs/promises';
import net from 'node:net';
import type { Content } from './content.js';

const RECV_BUFFER = 1024 * 1024;
const SEND_BUFFER = 1024 * 1024;
const SEND_RING = 4;
const IDLE_TIMEOUT_MS = 60_000;

/** Bytes [start, end) of a file-backed blob, sent without holding the blob in memory. */
export interface Slice {
  content: Content;
  start: number;
  end: number;
}

export interface WireReply {
  status: number;
  /** Lower-cased names; repeated headers are joined with ', '. */
  headers: Record<string, string>;
  /** The body, or empty when it was discarded. */
  body: Buffer;
  /** Body bytes received. */
  bodyBytes: number;
}

export interface WireRequest {
  method: string;
  url: string;
  headers?: Record<string, string | number>;
  body?: Buffer | Slice;
  /** Count the body bytes but keep none of them (blob GETs). */
  discardBody?: boolean;
}

function parseHead(head: string): { status: number; headers: Record<string, string> } {
  const lines = head.split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? NaN);
  if (!Number.isFinite(status)) throw new Error(`bad status line: ${lines[0] ?? ''}`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { status, headers };
}

function dechunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = data.indexOf('\r\n', at);
    if (eol < 0) break;
    const size = parseInt(data.toString('latin1', at, eol), 16);
    if (!Number.isFinite(size) || size === 0) break;
    parts.push(data.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/** Writes the slice from a ring of reused buffers; each is refilled once the kernel has its bytes. */
async function sendSlice(sock: net.Socket, slice: Slice): Promise<void> {
  const { content, start, end } = slice;
  const file = await open(content.path, 'r');
  try {
    const ring = Array.from({ length: SEND_RING }, () => Buffer.allocUnsafe(SEND_BUFFER));
    const flushed: Promise<void>[] = ring.map(() => Promise.resolve());
    for (let pos = start, i = 0; pos < end && !sock.destroyed; i = (i + 1) % SEND_RING) {
      await flushed[i];
      const buf = ring[i]!;
      const n = Math.min(buf.length, end - pos);
      let filled = 0;
      const header = content.header;
      if (header !== undefined && pos < header.length) {
        filled = header.copy(buf, 0, pos, Math.min(header.length, pos + n));
      }
      while (filled < n) {
        const { bytesRead } = await file.read(buf, filled, n - filled, pos + filled);
        if (bytesRead === 0) throw new Error(`${content.path} is shorter than ${end} bytes`);
        filled += bytesRead;
      }
      // Resolves on error too: the reply (an early error status) or the socket error decides.
      flushed[i] = new Promise((resolve) => {
        sock.write(buf.subarray(0, n), () => {
          resolve();
        });
      });
      pos += n;
    }
    await Promise.all(flushed);
  } finally {
    await file.close();
  }
}

export function wire(req: WireRequest): Promise<WireReply> {
  const url = new URL(req.url);
  const body = req.body;
  const length = body === undefined ? 0 : Buffer.isBuffer(body) ? body.length : body.end - body.start;
  const head = [
    `${req.method} ${url.pathname}${url.search} HTTP/1.1`,
    `Host: ${url.host}`,
    'Connection: close',
  ];
  for (const [name, value] of Object.entries(req.headers ?? {})) {
    if (name.toLowerCase() !== 'content-length') head.push(`${name}: ${value}`);
  }
  if (body !== undefined || req.method === 'PUT' || req.method === 'POST' || req.method === 'PATCH') {
    head.push(`Content-Length: ${length}`);
  }
  const headText = `${head.join('\r\n')}\r\n\r\n`;

  return new Promise((resolve, reject) => {
    let headBuf = '';
    let parsed: { status: number; headers: Record<string, string> } | undefined;
    let expected = -1;
    let received = 0;
    const kept: Buffer[] = [];
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      sock.destroy();
      if (err !== undefined) reject(err);
      else if (parsed === undefined)
        reject(new Error(`${req.method} ${req.url}: connection closed before a reply`));
      else {
        let data: Buffer = Buffer.concat(kept);
        if (parsed.headers['transfer-encoding']?.includes('chunked') === true) data = dechunk(data);
        resolve({ ...parsed, body: data, bodyBytes: received });
      }
    };
    const onBody = (chunk: Buffer): void => {
      received += chunk.length;
      if (req.discardBody !== true) kept.push(Buffer.from(chunk));
      if (expected >= 0 && received >= expected) finish();
    };
    const sock = net.connect({
      host: url.hostname,
      port: Number(url.port || 80),
      onread: {
        buffer: Buffer.allocUnsafe(RECV_BUFFER),
        callback: (n: number, buf: Uint8Array): boolean => {
          const chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
          if (parsed !== undefined) {
            onBody(chunk);
            return true;
          }
          headBuf += chunk.toString('latin1');
          const end = headBuf.indexOf('\r\n\r\n');
          if (end < 0) return true;
          try {
            parsed = parseHead(headBuf.slice(0, end));
          } catch (err) {
            finish(err instanceof Error ? err : new Error(String(err)));
            return false;
          }
          const cl = parsed.headers['content-length'];
          expected =
            req.method === 'HEAD' || parsed.status === 204 || parsed.status === 304 ? 0 : Number(cl ?? -1);
          const restBytes = headBuf.length - (end + 4);
          if (expected === 0) finish();
          else onBody(chunk.subarray(n - restBytes));
          return true;
        },
      },
    });
    sock.setNoDelay(true);
    // A server that stops answering fails the measurement instead of hanging the bench.
    sock.setTimeout(IDLE_TIMEOUT_MS, () => {
      finish(new Error(`${req.method} ${req.url}: no progress for ${IDLE_TIMEOUT_MS / 1000} s`));
    });
    sock.on('error', (err) => {
      // A server that answers early and closes makes our remaining writes fail; the reply stands.
      if (parsed !== undefined) finish();
      else finish(err);
    });
    sock.on('end', () => {
      finish();
    });
    sock.on('connect', () => {
      sock.write(headText);
      if (Buffer.isBuffer(body)) sock.write(body);
      else if (body !== undefined)
        sendSlice(sock, body).catch((err: unknown) => {
          finish(err instanceof Error ? err : new Error(String(err)));
        });
    });
  });
}
