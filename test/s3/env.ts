// S3 settings for tests, from the environment that test/s3/start-rgw.sh prints:
//
//   eval "$(test/s3/start-rgw.sh)"    # TEST_S3_ENDPOINT, _ACCESS_KEY, _SECRET_KEY (, _REGION)
//
// Each test file makes its own bucket (`createTestBucket`) and removes it at the end. Without the
// settings a test fails in CI (CI=true) and is skipped elsewhere, saying how to get them.
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import {
  createS3Client,
  parseS3Parameters,
  type S3DriverParametersInput,
} from '../../storage-drivers/s3/config.js';

export interface S3TestSettings {
  readonly endpoint: string;
  readonly accessKey: string;
  readonly secretKey: string;
  readonly region: string;
}

const HOW_TO =
  'start a local Ceph RGW with `eval "$(test/s3/start-rgw.sh)"` (needs root and ceph-mon ceph-osd radosgw ceph-common)';

/** The settings, or why they are missing. */
export function readS3TestSettings(
  env: NodeJS.ProcessEnv = process.env,
): { settings: S3TestSettings } | { missing: string } {
  const endpoint = env.TEST_S3_ENDPOINT;
  const accessKey = env.TEST_S3_ACCESS_KEY;
  const secretKey = env.TEST_S3_SECRET_KEY;
  const unset = Object.entries({
    TEST_S3_ENDPOINT: endpoint,
    TEST_S3_ACCESS_KEY: accessKey,
    TEST_S3_SECRET_KEY: secretKey,
  }).flatMap(([name, value]) => (value ? [] : [name]));
  if (!endpoint || !accessKey || !secretKey) {
    return { missing: `S3 tests need ${unset.join(', ')}: ${HOW_TO}` };
  }
  return { settings: { endpoint, accessKey, secretKey, region: env.TEST_S3_REGION || 'us-east-1' } };
}

/**
 * The settings for a test file's S3 tests. When they are missing, registers one test named `title`
 * that fails in CI and is skipped elsewhere, and returns undefined: the caller then registers nothing.
 */
export function s3TestSettingsOrReport(title: string): S3TestSettings | undefined {
  const read = readS3TestSettings();
  if ('settings' in read) return read.settings;
  if (process.env.CI === 'true') {
    void test(title, () => {
      throw new Error(`${read.missing} (CI=true: S3 tests must run)`);
    });
  } else {
    void test(title, (t) => {
      t.skip(read.missing);
    });
  }
  return undefined;
}

export interface TestBucket {
  readonly name: string;
  readonly client: S3Client;
  /** Driver parameters for this bucket; spread and add `rootdirectory`, `chunksize`, ... as needed. */
  readonly params: S3DriverParametersInput & { bucket: string };
  /** Keys of objects and of unfinished multipart uploads still in the bucket. */
  leftovers(): Promise<{ objects: string[]; uploads: string[] }>;
  /** Aborts every upload, deletes every object and the bucket. */
  destroy(): Promise<void>;
}

/** A new, empty bucket named after `label`, on the server the settings point at. */
export async function createTestBucket(settings: S3TestSettings, label: string): Promise<TestBucket> {
  const name = `wharf-${label
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, 30)}-${randomBytes(6).toString('hex')}`;
  const params = {
    bucket: name,
    region: settings.region,
    regionendpoint: settings.endpoint,
    forcepathstyle: true,
    accesskey: settings.accessKey,
    secretkey: settings.secretKey,
  };
  const client = createS3Client(parseS3Parameters(params));
  await client.send(new CreateBucketCommand({ Bucket: name }));

  const listUploads = async (): Promise<{ Key: string; UploadId: string }[]> => {
    const out = await client.send(new ListMultipartUploadsCommand({ Bucket: name }));
    return (out.Uploads ?? []).flatMap((u) =>
      u.Key !== undefined && u.UploadId !== undefined ? [{ Key: u.Key, UploadId: u.UploadId }] : [],
    );
  };
  const listObjects = async (): Promise<string[]> => {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(
        new ListObjectsV2Command({ Bucket: name, ...(token !== undefined && { ContinuationToken: token }) }),
      );
      for (const obj of page.Contents ?? []) if (obj.Key !== undefined) keys.push(obj.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    return keys;
  };

  return {
    name,
    client,
    params,
    leftovers: async () => ({
      objects: await listObjects(),
      uploads: (await listUploads()).map((u) => u.Key),
    }),
    destroy: async () => {
      for (const u of await listUploads()) {
        await client.send(
          new AbortMultipartUploadCommand({ Bucket: name, Key: u.Key, UploadId: u.UploadId }),
        );
      }
      for (const key of await listObjects()) {
        await client.send(new DeleteObjectCommand({ Bucket: name, Key: key }));
      }
      await client.send(new DeleteBucketCommand({ Bucket: name }));
      client.destroy();
    },
  };
}
