// AWS Signature Version 4 for the bodiless requests of direct-requests.ts (GET and HEAD of an object),
// signed in the Authorization header. The derived signing key is cached per day, region and secret, so
// a request costs two SHA-256 digests; the SDK's signer runs inside a middleware stack that costs far
// more per request (direct-requests.ts).
import { createHash, createHmac } from 'node:crypto';

/** SHA-256 of the empty body, which GET and HEAD send. */
export const EMPTY_BODY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export interface SigningCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export interface UnsignedRequest {
  readonly method: 'GET' | 'HEAD';
  /** Host header value: host, and port when not the scheme's default. */
  readonly host: string;
  /** The path as sent, already URI-encoded (S3 signs it as is, without encoding it again). */
  readonly path: string;
  /** Further headers to sign and send, lower-case names (e.g. `range`). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** Encodes an object key for a URL path: RFC 3986 per segment, `/` kept, as S3 and SigV4 expect. */
export function encodeKeyPath(key: string): string {
  return key
    .split('/')
    .map((segment) =>
      encodeURIComponent(segment).replace(
        /[!'()*]/g,
        (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
      ),
    )
    .join('/');
}

export class SigV4Signer {
  private cachedKey: { scope: string; secret: string; key: Buffer } | undefined;

  constructor(
    private readonly region: string,
    private readonly service = 's3',
  ) {}

  /** The headers to send: the request's own plus host, x-amz-date, x-amz-content-sha256, authorization. */
  sign(request: UnsignedRequest, credentials: SigningCredentials, now = new Date()): Record<string, string> {
    const amzDate = now
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d{3}/, '');
    const day = amzDate.slice(0, 8);
    const headers: Record<string, string> = {
      ...request.headers,
      host: request.host,
      'x-amz-content-sha256': EMPTY_BODY_SHA256,
      'x-amz-date': amzDate,
    };
    if (credentials.sessionToken !== undefined) headers['x-amz-security-token'] = credentials.sessionToken;
    const names = Object.keys(headers).sort();
    const signedHeaders = names.join(';');
    const canonicalHeaders = names.map((n) => `${n}:${(headers[n] ?? '').trim()}\n`).join('');
    const canonicalRequest = [
      request.method,
      request.path,
      '', // no query string
      canonicalHeaders,
      signedHeaders,
      EMPTY_BODY_SHA256,
    ].join('\n');
    const scope = `${day}/${this.region}/${this.service}/aws4_request`;
    const stringToSign = [
      'AWS4-HMAC-SHA256',
      amzDate,
      scope,
      createHash('sha256').update(canonicalRequest).digest('hex'),
    ].join('\n');
    const signature = createHmac('sha256', this.signingKey(scope, day, credentials.secretAccessKey))
      .update(stringToSign)
      .digest('hex');
    headers.authorization =
      `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, ` +
      `SignedHeaders=${signedHeaders}, Signature=${signature}`;
    return headers;
  }

  private signingKey(scope: string, day: string, secret: string): Buffer {
    const cached = this.cachedKey;
    if (cached !== undefined && cached.scope === scope && cached.secret === secret) return cached.key;
    let key = createHmac('sha256', `AWS4${secret}`).update(day).digest();
    for (const part of [this.region, this.service, 'aws4_request']) {
      key = createHmac('sha256', key).update(part).digest();
    }
    this.cachedKey = { scope, secret, key };
    return key;
  }
}
