import type { Context } from 'koa';
import type { ErrorKind } from '../registry/errors.js';

/**
 * THE error table: every failure the API reports, with its wire code (OCI distribution-spec, or
 * Distribution's where the spec has none) and HTTP status. Some kinds differ from their code because the
 * spec has no code for their status: MANIFEST_TOO_LARGE (413, sent as SIZE_INVALID), CHUNK_OUT_OF_ORDER
 * (416, sent as BLOB_UPLOAD_INVALID), ROUTE_UNKNOWN (404, sent as UNSUPPORTED), INSUFFICIENT_SCOPE (401,
 * sent as DENIED) and TOKEN_REQUEST_INVALID (400 from the token endpoint, sent as UNSUPPORTED).
 */
export const ERROR_TABLE = {
  BLOB_UNKNOWN: { code: 'BLOB_UNKNOWN', status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { code: 'BLOB_UPLOAD_INVALID', status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: {
    code: 'BLOB_UPLOAD_UNKNOWN',
    status: 404,
    message: 'blob upload unknown to registry',
  },
  DIGEST_INVALID: {
    code: 'DIGEST_INVALID',
    status: 400,
    message: 'provided digest did not match uploaded content',
  },
  MANIFEST_BLOB_UNKNOWN: {
    code: 'MANIFEST_BLOB_UNKNOWN',
    status: 400,
    message: 'manifest references a manifest or blob unknown to registry',
  },
  MANIFEST_INVALID: { code: 'MANIFEST_INVALID', status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { code: 'MANIFEST_UNKNOWN', status: 404, message: 'manifest unknown to registry' },
  MANIFEST_TOO_LARGE: { code: 'SIZE_INVALID', status: 413, message: 'manifest is larger than the limit' },
  NAME_INVALID: { code: 'NAME_INVALID', status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { code: 'NAME_UNKNOWN', status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: {
    code: 'SIZE_INVALID',
    status: 400,
    message: 'provided length did not match content length',
  },
  TAG_INVALID: { code: 'TAG_INVALID', status: 400, message: 'manifest tag did not match URI' },
  RANGE_INVALID: { code: 'RANGE_INVALID', status: 416, message: 'requested range not satisfiable' },
  CHUNK_OUT_OF_ORDER: { code: 'BLOB_UPLOAD_INVALID', status: 416, message: 'chunk out of order' },
  PAGINATION_NUMBER_INVALID: {
    code: 'PAGINATION_NUMBER_INVALID',
    status: 400,
    message: 'invalid number of results requested',
  },
  UNAUTHORIZED: { code: 'UNAUTHORIZED', status: 401, message: 'authentication required' },
  DENIED: { code: 'DENIED', status: 403, message: 'requested access to the resource is denied' },
  // A valid token without the scope: 401 so that clients fetch a broader token (the token spec), DENIED
  // so that they report a refusal, as Docker does for `error="insufficient_scope"`.
  INSUFFICIENT_SCOPE: {
    code: 'DENIED',
    status: 401,
    message: 'requested access to the resource is denied',
  },
  TOKEN_REQUEST_INVALID: { code: 'UNSUPPORTED', status: 400, message: 'invalid token request' },
  UNSUPPORTED: { code: 'UNSUPPORTED', status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { code: 'TOOMANYREQUESTS', status: 429, message: 'too many requests' },
  UNAVAILABLE: { code: 'UNAVAILABLE', status: 503, message: 'service unavailable' },
  ROUTE_UNKNOWN: { code: 'UNSUPPORTED', status: 404, message: 'no such endpoint' },
  UNKNOWN: { code: 'UNKNOWN', status: 500, message: 'unknown error' },
} as const satisfies Record<ErrorKind, { code: string; status: number; message: string }>;

/** Writes the OCI error envelope. HEAD responses get the status and no body, as HTTP requires. */
export function writeError(ctx: Context, kind: ErrorKind, message?: string, detail?: unknown): void {
  const entry = ERROR_TABLE[kind];
  ctx.status = entry.status;
  ctx.set('Content-Type', 'application/json; charset=utf-8');
  const error: { code: string; message: string; detail?: unknown } = {
    code: entry.code,
    message: message ?? entry.message,
  };
  if (detail !== undefined) error.detail = detail;
  ctx.body = { errors: [error] };
}
