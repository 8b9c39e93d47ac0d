// GetObject over a plain socket, for blob reads from http:// endpoints. node:http's client parses and
// hands on 64 KiB at a time; reading into a 1 MiB buffer (net's `onread`, as bench/wire.ts does) cut
// the server CPU per pulled byte by about a third here (bench/README.md, S3). The URL is presigned by
// the SDK, so signing and credentials are the SDK's; everything unusual is left to the SDK (driver.ts).
import net from 'node:net';
import { Readable } from 'node:stream';

const RECV_BUFFER = 1024 * 1024;
/** A read at least this large gives its buffer away instead of copying out of it. */
const HAND_OVER = RECV_BUFFER / 4;
/** S3's answer heads are a few hundred bytes; this much without an end is not S3. */
const MAX_HEAD = 64 * 1024;
/** An error answer's body is a small XML document; more of it is not needed for its code. */
const MAX_ERROR_BODY = 64 * 1024;

export interface RawGetOptions {
  readonly range?: string;
  readonly connectMs: number;
  /** Until the answer's head has arrived. */
  readonly requestMs: number;
  /** No byte in either direction for this long, also while the body is paused by backpressure. */
  readonly idleMs: number;
}

export type RawGetResult =
  /** 200 or 206: the body streams, `length` bytes. */
  | { readonly kind: 'body'; readonly status: number; readonly length: number; readonly body: Readable }
  /** Any other status: the error S3 answered (`answerError`). */
  | { readonly kind: 'error'; readonly status: number; readonly error: Error }
  /** Framing this reader does not handle (no Content-Length): ask the SDK. */
  | { readonly kind: 'unsupported'; readonly status: number };

/**
 * The SDK-shaped error for a non-2xx answer outside the SDK (here and direct-requests.ts): S3's code
 * and message from the XML body, or, for a body-less answer (a HEAD), a code from the status.
 */
export function answerError(status: number, xml: string): Error & { code: string } {
  const code =
    /<Code>([^<]*)<\/Code>/.exec(xml)?.[1] ??
    (status === 404 ? 'NotFound' : status === 403 ? 'Forbidden' : `HTTP${status}`);
  const message = /<Message>([^<]*)<\/Message>/.exec(xml)?.[1] ?? `HTTP ${status}`;
  return rawError(message, code, status);
}

/** A failure before or while reading, shaped like the SDK's errors (`code`, `$metadata`) for errors.ts. */
export function rawError(
  message: string,
  code: string,
  status?: number,
): Error & { code: string; $metadata: { httpStatusCode?: number } } {
  const err = new Error(message);
  err.name = code === 'ETIMEDOUT' ? 'TimeoutError' : code;
  return Object.assign(err, { code, $metadata: status === undefined ? {} : { httpStatusCode: status } });
}

/** One GET of a presigned http:// URL; resolves once the head is in (and, for an error, its body). */
export function rawGet(url: URL, options: RawGetOptions): Promise<RawGetResult> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.allocUnsafe(RECV_BUFFER);
    let head = '';
    let settled = false;
    let stream: BodyStream | undefined;
    let remaining = 0;
    let errorBody: { status: number; parts: Buffer[]; size: number } | undefined;
    let timer: NodeJS.Timeout | undefined;
    const clearTimer = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    };
    const fail = (err: Error): void => {
      clearTimer();
      socket.destroy();
      if (!settled) {
        settled = true;
        reject(err);
      } else if (stream && remaining > 0) {
        stream.destroy(err);
      }
    };
    const settle = (result: RawGetResult): void => {
      clearTimer();
      settled = true;
      resolve(result);
    };

    const onBody = (chunk: Buffer): boolean => {
      if (errorBody) {
        errorBody.parts.push(Buffer.from(chunk));
        errorBody.size += chunk.length;
        remaining -= chunk.length;
        if (remaining <= 0 || errorBody.size >= MAX_ERROR_BODY) {
          socket.destroy();
          settle(errorResult(errorBody.status, Buffer.concat(errorBody.parts).toString('utf8')));
        }
        return true;
      }
      if (!stream) return true;
      const take = chunk.length > remaining ? chunk.subarray(0, remaining) : chunk;
      remaining -= take.length;
      // The receive buffer is reused, so a small read is copied out; a large one takes the buffer
      // with it (no copy, and at most 4 times its bytes in memory) and the next read gets a new one.
      let out = take;
      if (take.length >= HAND_OVER) buffer = Buffer.allocUnsafe(RECV_BUFFER);
      else out = Buffer.from(take);
      const more = stream.push(out);
      if (remaining === 0) {
        stream.push(null);
        socket.destroy();
        return false;
      }
      return more;
    };

    const onHead = (end: number, chunk: Buffer, n: number): boolean => {
      const parsed = parseHead(head.slice(0, end));
      if (!parsed) {
        fail(rawError(`unexpected answer from ${url.host}: ${head.slice(0, 80)}`, 'InvalidResponse'));
        return false;
      }
      const { status, headers } = parsed;
      const rest = chunk.subarray(n - (head.length - end - 4), n);
      const length = Number(headers.get('content-length'));
      if (headers.has('transfer-encoding') || !Number.isSafeInteger(length) || length < 0) {
        socket.destroy();
        settle({ kind: 'unsupported', status });
        return false;
      }
      remaining = length;
      if (status === 200 || status === 206) {
        stream = new BodyStream(socket);
        settle({ kind: 'body', status, length, body: stream });
        if (length === 0) {
          stream.push(null);
          socket.destroy();
          return false;
        }
      } else {
        errorBody = { status, parts: [], size: 0 };
        if (length === 0) {
          socket.destroy();
          settle(errorResult(status, ''));
          return false;
        }
      }
      return rest.length > 0 ? onBody(rest) : true;
    };

    const socket = net.connect({
      host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: Number(url.port || 80),
      onread: {
        buffer: () => buffer,
        callback: (n: number, read: Uint8Array): boolean => {
          const chunk = Buffer.from(read.buffer, read.byteOffset, n);
          if (stream || errorBody) return onBody(chunk);
          head += chunk.toString('latin1');
          const end = head.indexOf('\r\n\r\n');
          if (end >= 0) return onHead(end, chunk, n);
          if (head.length > MAX_HEAD) fail(rawError(`no end of head from ${url.host}`, 'InvalidResponse'));
          return true;
        },
      },
    });
    socket.setNoDelay(true);
    socket.setTimeout(options.idleMs, () => {
      fail(rawError(`no data from ${url.host} for ${options.idleMs} ms`, 'ETIMEDOUT'));
    });
    timer = setTimeout(() => {
      fail(rawError(`no connection to ${url.host} within ${options.connectMs} ms`, 'ETIMEDOUT'));
    }, options.connectMs);
    socket.once('connect', () => {
      clearTimer();
      timer = setTimeout(() => {
        fail(rawError(`no answer from ${url.host} within ${options.requestMs} ms`, 'ETIMEDOUT'));
      }, options.requestMs);
      const lines = [
        `GET ${url.pathname}${url.search} HTTP/1.1`,
        `Host: ${url.host}`,
        'Connection: close',
        ...(options.range === undefined ? [] : [`Range: ${options.range}`]),
      ];
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    });
    socket.on('error', (err) => {
      fail(err);
    });
    socket.on('close', () => {
      if (!settled) fail(rawError(`${url.host} closed the connection before answering`, 'ECONNRESET'));
      else if (stream && remaining > 0) {
        stream.destroy(
          rawError(`${url.host} closed the connection with ${remaining} bytes unread`, 'ECONNRESET'),
        );
      }
    });
  });
}

/** The body, pulled from the socket on demand (backpressure pauses the socket). */
class BodyStream extends Readable {
  constructor(private readonly socket: net.Socket) {
    super({ highWaterMark: RECV_BUFFER });
  }

  override _read(): void {
    this.socket.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(error);
  }
}

function parseHead(text: string): { status: number; headers: Map<string, string> } | undefined {
  const lines = text.split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1]);
  if (!Number.isInteger(status)) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status, headers };
}

function errorResult(status: number, xml: string): RawGetResult {
  return { kind: 'error', status, error: answerError(status, xml) };
}
