// The `storage.s3` section (Distribution's keys) and the S3 client built from it.
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';

const MiB = 1024 * 1024;
/** S3's smallest part, except the last. */
export const MIN_PART_SIZE = 5 * MiB;
/** S3's largest part, and the largest object CopyObject copies in one request. */
export const MAX_PART_SIZE = 5 * 1024 * MiB;
/** S3's limit on parts in one multipart upload. */
export const MAX_PARTS = 10_000;

export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
export const DEFAULT_MAX_RETRIES = 4;
const MAX_RETRIES = 20;

const optionalText = z
  .string()
  .optional()
  .transform((v) => (v === '' ? undefined : v));

const s3ParametersSchema = z
  .object({
    bucket: z.string().min(1),
    region: z.string().min(1).default('us-east-1'),
    regionendpoint: optionalText.pipe(z.url().optional()),
    forcepathstyle: z.boolean().default(false),
    accesskey: optionalText,
    secretkey: optionalText,
    rootdirectory: z.string().default(''),
    encrypt: z.boolean().default(false),
    // Distribution's spelling for "send no storage class header".
    storageclass: z.string().min(1).default('STANDARD'),
    chunksize: z
      .int()
      .min(MIN_PART_SIZE)
      .max(MAX_PART_SIZE)
      .default(10 * MiB),
    // Wharf's own (Distribution's s3 driver has none), in milliseconds here; the config file takes
    // durations ("5s"). See `S3Timeouts`.
    connecttimeout: z.int().min(1).default(DEFAULT_CONNECT_TIMEOUT_MS),
    requesttimeout: z.int().min(1).default(DEFAULT_REQUEST_TIMEOUT_MS),
    // Retries of a request that failed in a way worth retrying (throttling, 5xx, timeouts, resets).
    maxretries: z.int().min(0).max(MAX_RETRIES).default(DEFAULT_MAX_RETRIES),
  })
  .refine((p) => (p.accesskey === undefined) === (p.secretkey === undefined), {
    message: 'set both accesskey and secretkey, or neither (to use the SDK default credential chain)',
  });

export type S3DriverParameters = z.output<typeof s3ParametersSchema>;
export type S3DriverParametersInput = z.input<typeof s3ParametersSchema>;

/** Checks the `storage.s3` section and fills in Distribution's defaults. */
export function parseS3Parameters(raw: unknown): S3DriverParameters {
  const result = s3ParametersSchema.safeParse(raw ?? {});
  if (!result.success) {
    const detail = result.error.issues
      .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(section)'}: ${i.message}`)
      .join('; ');
    throw new Error(`storage.s3: ${detail}`);
  }
  return result.data;
}

/** Where requests go, for error messages: the configured endpoint or AWS's regional one. */
export function endpointName(params: S3DriverParameters): string {
  return params.regionendpoint ?? `https://s3.${params.region}.amazonaws.com`;
}

export interface S3Timeouts {
  /** To establish a TCP (and TLS) connection. */
  readonly connectMs: number;
  /** From sending a request until the response headers arrive (a copy may take longer: see `slowMs`). */
  readonly requestMs: number;
  /** For server-side copies and CompleteMultipartUpload, which answer only when done. */
  readonly slowMs: number;
  /** No byte in either direction on a socket for this long, also while streaming a body. */
  readonly idleMs: number;
}

export const DEFAULT_TIMEOUTS: S3Timeouts = {
  connectMs: DEFAULT_CONNECT_TIMEOUT_MS,
  requestMs: DEFAULT_REQUEST_TIMEOUT_MS,
  slowMs: 15 * 60_000,
  // Long enough that a reader paused by a slow client (backpressure) is not cut off.
  idleMs: 120_000,
};

/** The timeouts `storage.s3.connecttimeout` and `requesttimeout` set; the others are fixed. */
export function timeoutsOf(params: S3DriverParameters): S3Timeouts {
  const { connecttimeout: connectMs, requesttimeout: requestMs } = params;
  // Copies answer only when done: never less time than any request.
  return { ...DEFAULT_TIMEOUTS, connectMs, requestMs, slowMs: Math.max(DEFAULT_TIMEOUTS.slowMs, requestMs) };
}

export function createS3Client(
  params: S3DriverParameters,
  timeouts: S3Timeouts = timeoutsOf(params),
  maxAttempts = params.maxretries + 1,
): S3Client {
  const agentOptions = { keepAlive: true, maxSockets: 128 };
  return new S3Client({
    region: params.region,
    ...(params.regionendpoint !== undefined && { endpoint: params.regionendpoint }),
    forcePathStyle: params.forcepathstyle,
    // Without keys in the config, the SDK's default chain: environment, shared files, IAM role.
    ...(params.accesskey !== undefined &&
      params.secretkey !== undefined && {
        credentials: { accessKeyId: params.accesskey, secretAccessKey: params.secretkey },
      }),
    // The SDK's default checksums make streaming uploads fail on S3-compatible servers (411 on RGW).
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Standard mode retries throttling (503 SlowDown), 5xx, timeouts and connection errors with
    // exponential backoff and jitter.
    retryMode: 'standard',
    maxAttempts,
    requestHandler: {
      connectionTimeout: timeouts.connectMs,
      requestTimeout: timeouts.requestMs,
      throwOnRequestTimeout: true,
      socketTimeout: timeouts.idleMs,
      httpAgent: new HttpAgent(agentOptions),
      httpsAgent: new HttpsAgent(agentOptions),
    },
  });
}
