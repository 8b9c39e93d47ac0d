// GET and HEAD of small objects (links, upload state, tombstones) straight over node:http(s), signed by
// sigv4.ts. Through the SDK a request cost 1.2–1.5 ms of CPU here (its middleware stack, endpoint rules
// and serde), this path 0.2–0.5 ms; a manifest GET is one or two such reads. The SDK still decides where
// requests go: the object URL layout (path or virtual-hosted style, endpoint) is learnt once from a URL
// it presigns, and credentials come from its provider (config, environment, IAM role, refreshed by it).
import http from 'node:http';
import https from 'node:https';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { answerError, rawError } from './rawget.js';
import { encodeKeyPath, SigV4Signer } from './sigv4.js';

/** A key that needs no encoding, presigned once to learn how the SDK lays out object URLs. */
const PROBE_KEY = 'wharf-url-probe';
/** An error answer's body is a small XML document; its code and message are all that is kept. */
const MAX_ERROR_BODY = 64 * 1024;
/** A server clock this far from ours (after the SDK's correction) makes S3 refuse signatures. */
const CLOCK_SKEW_MS = 4 * 60_000;

export interface DirectTimeouts {
  readonly connectMs: number;
  /** Until the answer's head has arrived. */
  readonly requestMs: number;
  /** No byte in either direction for this long. */
  readonly idleMs: number;
}

export interface DirectAnswer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  /** The body of a GET; empty for HEAD. */
  readonly body: Buffer;
}

interface ObjectURLs {
  readonly protocol: 'http:' | 'https:';
  readonly hostname: string;
  readonly port: number;
  /** Host header value. */
  readonly host: string;
  /** Path up to the key: `/bucket/` (path style) or `/` (virtual-hosted). */
  readonly prefix: string;
  readonly signer: SigV4Signer;
}

export class DirectRequests {
  private urls: Promise<ObjectURLs> | undefined;
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 128 });
  private readonly httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 128 });

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly timeouts: DirectTimeouts,
  ) {}

  /**
   * One GET (whole object) or HEAD. Resolves with any status that S3 answered: 2xx with the body,
   * others with the SDK-shaped error of `errorOf` still to be raised by the caller. Rejects on network
   * failures and timeouts with SDK-shaped errors (`code`, `$metadata`), so errors.ts classifies both.
   */
  async send(method: 'GET' | 'HEAD', key: string): Promise<DirectAnswer> {
    const urls = await this.objectURLs();
    const path = urls.prefix + encodeKeyPath(key);
    for (let signed = 1; ; signed++) {
      const credentials = await this.client.config.credentials();
      // Signed at the SDK's skew-corrected time, which its own requests keep up to date.
      const now = new Date(Date.now() + this.client.config.systemClockOffset);
      const headers = urls.signer.sign({ method, host: urls.host, path }, credentials, now);
      const answer = await this.request(urls, method, path, headers);
      if (signed > 1 || answer.status !== 403 || !this.correctClock(answer)) return answer;
    }
  }

  /** Adopts the server's clock, as the SDK does, when a refusal came from a skewed one. */
  private correctClock(answer: DirectAnswer): boolean {
    const serverTime = Date.parse(answer.headers.date ?? '');
    if (Number.isNaN(serverTime) || answer.headers.age !== undefined) return false;
    const offset = serverTime - Date.now();
    if (Math.abs(offset - this.client.config.systemClockOffset) < CLOCK_SKEW_MS) return false;
    this.client.config.systemClockOffset = offset;
    return true;
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  private objectURLs(): Promise<ObjectURLs> {
    this.urls ??= (async (): Promise<ObjectURLs> => {
      const command = new GetObjectCommand({ Bucket: this.bucket, Key: PROBE_KEY });
      const url = new URL(await getSignedUrl(this.client, command, { expiresIn: 60 }));
      if (!url.pathname.endsWith(`/${PROBE_KEY}`)) {
        throw new Error(`unexpected presigned URL layout: ${url.origin}${url.pathname}`);
      }
      const protocol = url.protocol === 'https:' ? 'https:' : 'http:';
      const region = await this.client.config.region();
      return {
        protocol,
        hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: Number(url.port || (protocol === 'https:' ? 443 : 80)),
        host: url.host,
        prefix: url.pathname.slice(0, -PROBE_KEY.length),
        signer: new SigV4Signer(region),
      };
    })();
    // A failed probe (credentials not yet available, say) is tried again by the next request.
    this.urls.catch(() => {
      this.urls = undefined;
    });
    return this.urls;
  }

  private request(
    urls: ObjectURLs,
    method: 'GET' | 'HEAD',
    path: string,
    headers: Record<string, string>,
  ): Promise<DirectAnswer> {
    const { connectMs, requestMs, idleMs } = this.timeouts;
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const finish = (err: Error | undefined, answer?: DirectAnswer): void => {
        if (settled) return;
        settled = true;
        if (timer !== undefined) clearTimeout(timer);
        if (err !== undefined) {
          req.destroy();
          reject(err);
        } else if (answer !== undefined) {
          resolve(answer);
        }
      };
      // Worded as the SDK's own timeouts, which the rest of the driver's requests raise.
      const timeout = (ms: number, setting: string): NodeJS.Timeout =>
        setTimeout(() => {
          finish(
            rawError(`${method} to ${urls.host} exceeded the configured ${ms} ms ${setting}`, 'ETIMEDOUT'),
          );
        }, ms);
      const options = {
        protocol: urls.protocol,
        hostname: urls.hostname,
        port: urls.port,
        method,
        path,
        headers,
        agent: urls.protocol === 'https:' ? this.httpsAgent : this.httpAgent,
      };
      const req = (urls.protocol === 'https:' ? https : http).request(options, (res) => {
        if (timer !== undefined) clearTimeout(timer);
        const status = res.statusCode ?? 0;
        const ok = status >= 200 && status < 300;
        const parts: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          if (!ok && size >= MAX_ERROR_BODY) return;
          parts.push(chunk);
          size += chunk.length;
        });
        res.on('error', (err) => {
          finish(err);
        });
        res.on('end', () => {
          if (!res.complete) {
            finish(rawError(`${urls.host} closed the connection mid-answer`, 'ECONNRESET'));
            return;
          }
          finish(undefined, { status, headers: res.headers, body: Buffer.concat(parts, size) });
        });
      });
      req.setTimeout(idleMs, () => {
        finish(rawError(`no data from ${urls.host} for ${idleMs} ms`, 'ETIMEDOUT'));
      });
      req.on('socket', (socket) => {
        // A kept-alive socket is connected already; a new one gets connectMs, then requestMs.
        if (socket.connecting) {
          timer = timeout(connectMs, 'connectionTimeout');
          socket.once('connect', () => {
            if (timer !== undefined) clearTimeout(timer);
            if (!settled) timer = timeout(requestMs, 'requestTimeout');
          });
        } else {
          timer = timeout(requestMs, 'requestTimeout');
        }
      });
      req.on('error', (err) => {
        finish(err);
      });
      req.end();
    });
  }
}

/** The SDK-shaped error for a non-2xx answer (rawget.ts's `answerError`). */
export function errorOf(answer: DirectAnswer): Error & { code: string } {
  return answerError(answer.status, answer.body.toString('utf8'));
}
