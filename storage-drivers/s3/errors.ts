// S3 failures as the contract's typed errors, with messages that say what to fix.
import { S3ServiceException } from '@aws-sdk/client-s3';
import { StorageDriverError } from '../driver.js';

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EPIPE',
]);
const CREDENTIAL_ERRORS = new Set([
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'AccessDenied',
  'ExpiredToken',
  'InvalidToken',
  // A HEAD has no body to name the reason; 403 is what a denied or badly signed one answers.
  'Forbidden',
]);

/** The S3 error code (`NoSuchKey`, `SlowDown`, ...) or, for a network failure, the errno code. */
export function s3ErrorCode(err: unknown): string | undefined {
  if (err instanceof S3ServiceException) return err.name;
  if (err instanceof Error) {
    if ('code' in err && typeof err.code === 'string') return err.code;
    return err.name;
  }
  return undefined;
}

export function httpStatus(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null || !('$metadata' in err)) return undefined;
  const meta = err.$metadata;
  if (typeof meta !== 'object' || meta === null || !('httpStatusCode' in meta)) return undefined;
  return typeof meta.httpStatusCode === 'number' ? meta.httpStatusCode : undefined;
}

const THROTTLING_CODES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'RequestThrottled',
  'TooManyRequestsException',
  'RequestLimitExceeded',
]);
const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'TimeoutError',
  'RequestTimeout',
]);

export function isThrottling(err: unknown): boolean {
  const code = s3ErrorCode(err);
  return (code !== undefined && THROTTLING_CODES.has(code)) || httpStatus(err) === 429;
}

/** What the SDK's standard retry mode retries: throttling, 500/502/503/504, timeouts and resets. */
export function isRetryable(err: unknown): boolean {
  const code = s3ErrorCode(err);
  const status = httpStatus(err);
  return (
    isThrottling(err) ||
    (code !== undefined && TRANSIENT_CODES.has(code)) ||
    (status !== undefined && [500, 502, 503, 504].includes(status))
  );
}

/** The object is not there. (NoSuchBucket is also a 404, and is not this.) */
export function isNoSuchKey(err: unknown): boolean {
  const code = s3ErrorCode(err);
  return code === 'NoSuchKey' || (code === 'NotFound' && httpStatus(err) === 404);
}

export function isNoSuchUpload(err: unknown): boolean {
  return s3ErrorCode(err) === 'NoSuchUpload';
}

export function isInvalidRange(err: unknown): boolean {
  return s3ErrorCode(err) === 'InvalidRange' || httpStatus(err) === 416;
}

export function isPreconditionFailed(err: unknown): boolean {
  return s3ErrorCode(err) === 'PreconditionFailed' || httpStatus(err) === 412;
}

/** AWS answers 409 to a conditional write that raced another one; the answer is to try again. */
export function isConditionalConflict(err: unknown): boolean {
  return s3ErrorCode(err) === 'ConditionalRequestConflict' || httpStatus(err) === 409;
}

export interface S3ErrorContext {
  readonly driver: string;
  readonly endpoint: string;
  readonly bucket: string;
}

/** Wraps a failed S3 call as a `StorageDriverError` naming the endpoint, the bucket and the operation. */
export function s3Failure(err: unknown, where: S3ErrorContext, operation: string): StorageDriverError {
  if (err instanceof StorageDriverError) return err;
  const code = s3ErrorCode(err);
  const detail = err instanceof Error ? err.message : String(err);
  const status = httpStatus(err);
  let message: string;
  if (code !== undefined && (NETWORK_CODES.has(code) || code === 'TimeoutError')) {
    message = `s3 endpoint ${where.endpoint} is unreachable (${code}) during ${operation}: ${detail}`;
  } else if (code === 'CredentialsProviderError') {
    // The SDK's chain found nothing to sign with: no request reached S3.
    message =
      `no S3 credentials for bucket "${where.bucket}" at ${where.endpoint} (${operation}): set ` +
      'storage.s3.accesskey and secretkey, or the AWS_* environment (AWS_ACCESS_KEY_ID, ' +
      `AWS_SECRET_ACCESS_KEY), or run with an IAM role: ${detail}`;
  } else if (code === 'NoSuchBucket') {
    message = `s3 bucket "${where.bucket}" does not exist at ${where.endpoint} (${operation})`;
  } else if (code !== undefined && CREDENTIAL_ERRORS.has(code)) {
    message = `s3 endpoint ${where.endpoint} refused the credentials for bucket "${where.bucket}" (${code}) during ${operation}: ${detail}`;
  } else {
    const http = status === undefined ? '' : `, HTTP ${status}`;
    message = `s3 ${operation} failed at ${where.endpoint} (${code ?? 'error'}${http}): ${detail}`;
  }
  return new StorageDriverError(message, where.driver, { cause: err });
}
