// The S3 driver: files are objects under `rootdirectory` (keys have no leading slash, as Distribution's
// s3-aws driver writes them), directories are key prefixes. It runs on AWS and on S3-compatible servers
// (Ceph RGW in CI). Uploads are multipart uploads that survive the process (see writer.ts); a file an
// ended writer left as an unfinished upload is seen by `stat`, `writer(path, true)` and `delete`, not
// by `fileExists`, `list`, `walk` or reads, which see objects only. They find such uploads through the
// upload marker (bucket.ts), so only paths a writer used pay for the multipart listing. Uploads without
// a marker (a multipart copy a crash interrupted, an upload by a Wharf before markers) are invisible to
// the driver: a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes them.
import { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, type GetObjectCommandOutput } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import {
  InvalidOffsetError,
  PathNotFoundError,
  StorageDriverError,
  type FileInfo,
  type FileWriter,
  type ReadOptions,
  type StorageDriver,
  type WalkOptions,
} from '../driver.js';
import { wrapDriver, type WrapOptions } from '../base.js';
import { isUploadMarker, S3Bucket, uploadMarkerKey, type S3Tuning } from './bucket.js';
import {
  createS3Client,
  endpointName,
  parseS3Parameters,
  timeoutsOf,
  type S3Timeouts,
  type S3DriverParameters,
  type S3DriverParametersInput,
} from './config.js';
import {
  isConditionalConflict,
  isInvalidRange,
  isNoSuchKey,
  isPreconditionFailed,
  isRetryable,
  isThrottling,
} from './errors.js';
import { DirectRequests, errorOf, type DirectAnswer } from './direct-requests.js';
import { rawGet } from './rawget.js';
import { CoalescingReader } from './reader.js';
import { S3Writer } from './writer.js';

export { parseS3Parameters, type S3DriverParameters, type S3DriverParametersInput } from './config.js';
export type { S3Tuning } from './bucket.js';

const DRIVER_NAME = 's3';
/** Presigned URLs live this long: enough to start a large download, short enough to not be shared. */
const REDIRECT_EXPIRY_SECONDS = 20 * 60;
/** A blob read's presigned URL is used at once (and by its retries), never handed out. */
const RAW_URL_EXPIRY_SECONDS = 15 * 60;
// The SDK's standard retry mode: base delays, cap.
const RETRY_DELAY_MS = 100;
const THROTTLING_DELAY_MS = 500;
const MAX_RETRY_DELAY_MS = 20_000;
/** Tries for a conditional write that AWS answered with 409 (a concurrent conditional write). */
const CONDITIONAL_TRIES = 5;
/** One path component as PATH_PATTERN allows it. */
const COMPONENT = /^[A-Za-z0-9._:-]+$/;

export interface S3DriverOptions extends WrapOptions {
  /**
   * Answer `redirectURL` with presigned URLs. Off by default: the registry turns it on when
   * `storage.redirect.disable` is false and it wants clients sent to the bucket.
   */
  readonly redirect?: boolean;
  readonly tuning?: S3Tuning;
}

export function createS3Driver(
  params: S3DriverParameters | S3DriverParametersInput,
  options: S3DriverOptions = {},
): StorageDriver {
  return wrapDriver(new S3Driver(parseS3Parameters(params), options), options);
}

interface TreeNode {
  readonly children: Map<string, TreeNode>;
  file?: { size: number; modTime: Date };
  /** Newest modification below (or of) this node. */
  modTime: Date;
}

/** The raw driver; use `createS3Driver`, which checks paths before they get here. */
export class S3Driver implements StorageDriver {
  readonly name = DRIVER_NAME;
  private readonly bucket: S3Bucket;
  /** `rootdirectory` as a key prefix: '' or 'some/dir/'. */
  private readonly rootPrefix: string;
  private readonly chunkSize: number;
  private readonly redirect: boolean;
  /** Blob reads through rawget.ts (plain http endpoints), else through the SDK. */
  private readonly rawReads: boolean;
  private readonly direct: DirectRequests | undefined;
  private readonly timeouts: S3Timeouts;
  private readonly maxAttempts: number;

  constructor(params: S3DriverParameters, options: S3DriverOptions = {}) {
    const tuning = options.tuning ?? {};
    const client = createS3Client(params, tuning.timeouts, tuning.maxAttempts);
    this.bucket = new S3Bucket(
      client,
      params,
      { driver: DRIVER_NAME, endpoint: endpointName(params), bucket: params.bucket },
      tuning,
    );
    const root = params.rootdirectory.replace(/^\/+|\/+$/g, '');
    this.rootPrefix = root === '' ? '' : `${root}/`;
    this.chunkSize = params.chunksize;
    this.redirect = options.redirect ?? false;
    this.timeouts = tuning.timeouts ?? timeoutsOf(params);
    this.maxAttempts = tuning.maxAttempts ?? params.maxretries + 1;
    this.rawReads = (tuning.rawReads ?? true) && endpointName(params).startsWith('http://');
    this.direct =
      (tuning.directRequests ?? true) ? new DirectRequests(client, params.bucket, this.timeouts) : undefined;
  }

  async getContent(path: string): Promise<Buffer> {
    if (this.direct) return (await this.directly(this.direct, 'GET', path)).body;
    const res = await this.get(path, this.key(path));
    try {
      const bytes = await res.Body?.transformToByteArray();
      return bytes ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : Buffer.alloc(0);
    } catch (err) {
      throw this.bucket.fail(err, `getContent ${path}`);
    }
  }

  async putContent(path: string, content: Buffer | string): Promise<void> {
    const key = this.key(path);
    this.bucket.forgetCommitted(key);
    try {
      await this.bucket.putObject(key, toBuffer(content));
    } catch (err) {
      throw this.bucket.fail(err, `putContent ${path}`);
    }
  }

  async putContentIfAbsent(path: string, content: Buffer | string): Promise<boolean> {
    const body = toBuffer(content);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.bucket.putObject(this.key(path), body, true);
        return true;
      } catch (err) {
        if (isPreconditionFailed(err)) return false;
        if (!isConditionalConflict(err) || attempt >= CONDITIONAL_TRIES) {
          throw this.bucket.fail(err, `putContentIfAbsent ${path}`);
        }
      }
    }
  }

  async reader(path: string, options: ReadOptions = {}): Promise<Readable> {
    const key = this.key(path);
    const offset = options.offset ?? 0;
    const { length } = options;
    if (length === 0) {
      await this.fileSize(path, key, offset);
      return Readable.from([]);
    }
    // No Range header for a whole read: S3 answers 416 to `bytes=0-` on an empty object.
    const range =
      offset === 0 && length === undefined
        ? undefined
        : `bytes=${offset}-${length === undefined ? '' : offset + length - 1}`;
    let res: GetObjectCommandOutput;
    try {
      const raw = this.rawReads ? await this.rawReader(path, key, range) : undefined;
      if (raw !== undefined) return raw;
      res = await this.get(path, key, range);
    } catch (err) {
      if (!(err instanceof StorageDriverError && isInvalidRange(err.cause))) throw err;
      // At or past the end: empty at the end, an error past it.
      await this.fileSize(path, key, offset);
      return Readable.from([]);
    }
    if (!(res.Body instanceof Readable)) {
      throw new StorageDriverError(`reader ${path}: the S3 response has no stream body`, this.name);
    }
    return new CoalescingReader(res.Body);
  }

  async writer(path: string, append: boolean): Promise<FileWriter> {
    const key = this.key(path);
    const common = { bucket: this.bucket, key, path, driver: this.name, chunkSize: this.chunkSize };
    try {
      if (!append) {
        // Starting over replaces what earlier writers left uncommitted.
        await this.bucket.abortUploads(key);
        return new S3Writer({ ...common, fresh: true, marked: false });
      }
      const { found, marker } = await this.bucket.statKey(key);
      // An upload in progress is the file (a fresh writer's upload may shadow an older object).
      const upload = marker ? await this.bucket.newestUpload(key) : undefined;
      if (upload) {
        const parts = await this.bucket.listParts(key, upload.uploadId);
        return new S3Writer({
          ...common,
          fresh: false,
          marked: true,
          upload: { uploadId: upload.uploadId, parts },
        });
      }
      if (found?.kind !== 'file') throw new PathNotFoundError(path, this.name);
      return new S3Writer({ ...common, fresh: false, marked: marker, base: { size: found.size } });
    } catch (err) {
      throw this.bucket.fail(err, `writer ${path}`);
    }
  }

  async stat(path: string): Promise<FileInfo> {
    try {
      if (path === '/') {
        // A real request, so that a stat of the root proves the endpoint, the bucket and the credentials.
        const page = await this.bucket.listPage(this.rootPrefix, { maxKeys: 1 });
        return { path, size: 0, isDir: true, modTime: page.Contents?.[0]?.LastModified ?? new Date(0) };
      }
      const key = this.key(path);
      const { found, marker } = await this.bucket.statKey(key);
      // A file an earlier writer's end() left as an unfinished multipart upload, as `writer` sees it.
      const upload = marker ? await this.bucket.newestUpload(key) : undefined;
      if (upload) {
        const parts = await this.bucket.listParts(key, upload.uploadId);
        const size = parts.reduce((sum, p) => sum + p.Size, 0);
        return { path, size, modTime: upload.initiated, isDir: false };
      }
      if (found?.kind === 'file') return { path, size: found.size, modTime: found.modTime, isDir: false };
      if (found?.kind === 'dir') return { path, size: 0, modTime: found.modTime, isDir: true };
    } catch (err) {
      throw this.bucket.fail(err, `stat ${path}`);
    }
    throw new PathNotFoundError(path, this.name);
  }

  async statFile(path: string): Promise<FileInfo | undefined> {
    // Objects only, as reads see them: not what an ended writer left as an unfinished upload.
    const key = this.key(path);
    let size: number | undefined;
    let modified: string | Date | undefined;
    try {
      if (this.direct) {
        const { headers } = await this.directly(this.direct, 'HEAD', path, key);
        size = Number(headers['content-length']);
        modified = headers['last-modified'];
      } else {
        const head = await this.bucket.headObject(key);
        size = head.ContentLength;
        modified = head.LastModified;
      }
    } catch (err) {
      if (err instanceof PathNotFoundError || isNoSuchKey(err)) return undefined;
      throw this.bucket.fail(err, `stat ${path}`);
    }
    if (size === undefined || !Number.isSafeInteger(size) || size < 0) {
      throw new StorageDriverError(`stat ${path}: the HEAD answer has no valid Content-Length`, this.name);
    }
    const modTime = modified === undefined ? new Date(0) : new Date(modified);
    return { path, size, modTime, isDir: false };
  }

  async list(path: string): Promise<string[]> {
    const prefix = this.dirPrefix(path);
    const children: string[] = [];
    try {
      let token: string | undefined;
      do {
        const page = await this.bucket.listPage(prefix, {
          delimiter: '/',
          ...(token !== undefined && { token }),
        });
        for (const obj of page.Contents ?? []) {
          if (obj.Key !== undefined) children.push(obj.Key.slice(prefix.length));
        }
        for (const common of page.CommonPrefixes ?? []) {
          if (common.Prefix !== undefined) children.push(common.Prefix.slice(prefix.length, -1));
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token !== undefined);
    } catch (err) {
      throw this.bucket.fail(err, `list ${path}`);
    }
    // Keys another tool wrote that no path can name (`a//b`, `a b`) are not part of the tree.
    const names = children.filter(isComponent);
    if (names.length === 0 && path !== '/') throw new PathNotFoundError(path, this.name);
    const base = path === '/' ? '/' : `${path}/`;
    return names.sort().map((name) => base + name);
  }

  async move(sourcePath: string, destPath: string): Promise<void> {
    const source = this.key(sourcePath);
    const dest = this.key(destPath);
    try {
      let size = source === dest ? undefined : this.bucket.takeCommitted(source);
      if (size === undefined) {
        const { found } = await this.bucket.statKey(source);
        if (found?.kind !== 'file') throw new PathNotFoundError(sourcePath, this.name);
        if (source === dest) return;
        size = found.size;
      }
      try {
        await this.bucket.copyObject(source, size, dest);
      } catch (err) {
        if (isNoSuchKey(err)) throw new PathNotFoundError(sourcePath, this.name);
        throw err;
      }
      // The marker a committed writer may have left goes with its file, in the same request.
      await this.bucket.deleteObjects([source, uploadMarkerKey(source)]);
    } catch (err) {
      throw this.bucket.fail(err, `move ${sourcePath} -> ${destPath}`);
    }
  }

  async delete(path: string): Promise<void> {
    const key = this.key(path);
    try {
      const keys = await this.keysAtOrBelow(key);
      // Unfinished uploads too: they hold data (and stat reports them) until aborted. Each has a marker.
      const markers = keys.filter(isUploadMarker).length;
      const uploads = markers > 0 ? await this.bucket.listUploads(key, true) : [];
      for (const upload of uploads) await this.bucket.abortUpload(upload.key, upload.uploadId);
      for (const k of keys) this.bucket.forgetCommitted(k);
      await this.bucket.deleteObjects(keys);
      // Markers alone (a writer that died before creating its upload) are no file.
      if (keys.length === markers && uploads.length === 0) throw new PathNotFoundError(path, this.name);
    } catch (err) {
      throw this.bucket.fail(err, `delete ${path}`);
    }
  }

  async walk(path: string, options: WalkOptions): Promise<void> {
    const prefix = this.dirPrefix(path);
    const root: TreeNode = { children: new Map(), modTime: new Date(0) };
    let found = false;
    try {
      // One flat listing; the contract's order (a directory right before its children, so `a`, `a/x`,
      // `a-b`) differs from S3's (`a-b` < `a/x`), so the tree is built first and then visited.
      for await (const obj of this.bucket.listAll(prefix)) {
        const names = obj.key.slice(prefix.length).split('/');
        if (!names.every(isComponent)) continue;
        found = true;
        let node = root;
        for (const name of names) {
          let child = node.children.get(name);
          if (!child) {
            child = { children: new Map(), modTime: obj.modTime };
            node.children.set(name, child);
          } else if (obj.modTime > child.modTime) {
            child.modTime = obj.modTime;
          }
          node = child;
        }
        node.file = { size: obj.size, modTime: obj.modTime };
      }
    } catch (err) {
      throw this.bucket.fail(err, `walk ${path}`);
    }
    if (!found) {
      if (path === '/') return;
      throw new PathNotFoundError(path, this.name);
    }
    await visit(root, path === '/' ? '' : path, options);
  }

  async redirectURL(path: string, method: 'GET' | 'HEAD'): Promise<string | undefined> {
    if (!this.redirect) return undefined;
    const input = { Bucket: this.bucket.name, Key: this.key(path) };
    const command = method === 'GET' ? new GetObjectCommand(input) : new HeadObjectCommand(input);
    try {
      return await getSignedUrl(this.bucket.client, command, { expiresIn: REDIRECT_EXPIRY_SECONDS });
    } catch (err) {
      throw this.bucket.fail(err, `redirectURL ${path}`);
    }
  }

  private key(path: string): string {
    return this.rootPrefix + path.slice(1);
  }

  private dirPrefix(path: string): string {
    return path === '/' ? this.rootPrefix : `${this.key(path)}/`;
  }

  /**
   * The object's body through `rawGet` (rawget.ts), with the SDK's retry rules (throttling, 5xx,
   * timeouts, resets; exponential backoff with jitter); `undefined` when the SDK should read it instead.
   */
  private async rawReader(path: string, key: string, range?: string): Promise<Readable | undefined> {
    let url: URL;
    try {
      const command = new GetObjectCommand({ Bucket: this.bucket.name, Key: key });
      url = new URL(await getSignedUrl(this.bucket.client, command, { expiresIn: RAW_URL_EXPIRY_SECONDS }));
    } catch (err) {
      throw this.bucket.fail(err, `read ${path}`);
    }
    const { connectMs, requestMs, idleMs } = this.timeouts;
    return this.retrying(path, 'read', async () => {
      const result = await rawGet(url, {
        connectMs,
        requestMs,
        idleMs,
        ...(range !== undefined && { range }),
      });
      if (result.kind === 'body') return result.body;
      if (result.kind === 'unsupported') return undefined;
      throw result.error;
    });
  }

  /** A GET or HEAD through direct-requests.ts: a 2xx answer, or the error S3 answered, typed. */
  private directly(
    direct: DirectRequests,
    method: 'GET' | 'HEAD',
    path: string,
    key = this.key(path),
  ): Promise<DirectAnswer> {
    return this.retrying(path, method === 'GET' ? 'read' : 'stat', async () => {
      const answer = await direct.send(method, key);
      if (answer.status < 200 || answer.status >= 300) throw errorOf(answer);
      return answer;
    });
  }

  /**
   * `attempt` with the SDK's retry rules (throttling, 5xx, timeouts, resets; exponential backoff with
   * jitter), for requests made outside the SDK. A missing object is `PathNotFoundError`.
   */
  private async retrying<T>(path: string, operation: string, attempt: () => Promise<T>): Promise<T> {
    for (let tries = 1; ; tries++) {
      let failure: unknown;
      try {
        return await attempt();
      } catch (err) {
        failure = err;
      }
      if (isNoSuchKey(failure)) throw new PathNotFoundError(path, this.name);
      if (tries >= this.maxAttempts || !isRetryable(failure)) {
        throw this.bucket.fail(failure, `${operation} ${path}`);
      }
      const base = isThrottling(failure) ? THROTTLING_DELAY_MS : RETRY_DELAY_MS;
      await sleep(Math.random() * Math.min(MAX_RETRY_DELAY_MS, base * 2 ** tries));
    }
  }

  private async get(path: string, key: string, range?: string): Promise<GetObjectCommandOutput> {
    try {
      return await this.bucket.getObject(key, range);
    } catch (err) {
      if (isNoSuchKey(err)) throw new PathNotFoundError(path, this.name);
      throw this.bucket.fail(err, `read ${path}`);
    }
  }

  /** The size of the file at `path`, checking that `offset` is within it. */
  private async fileSize(path: string, key: string, offset: number): Promise<number> {
    let found;
    try {
      ({ found } = await this.bucket.statKey(key));
    } catch (err) {
      throw this.bucket.fail(err, `reader ${path}`);
    }
    if (found?.kind !== 'file') throw new PathNotFoundError(path, this.name);
    if (offset > found.size) throw new InvalidOffsetError(path, offset, this.name);
    return found.size;
  }

  /** `key` itself, its upload marker and every key below `key/` (not its `key-…` siblings). */
  private async keysAtOrBelow(key: string): Promise<string[]> {
    const dirPrefix = `${key}/`;
    const markerKey = uploadMarkerKey(key);
    const keys: string[] = [];
    let token: string | undefined;
    for (;;) {
      // Listings are sorted: `key`, its marker, any `key-…`/`key.…` siblings, `key/…`, then the rest.
      const page = await this.bucket.listPage(key, token === undefined ? {} : { token });
      for (const obj of page.Contents ?? []) {
        const found = obj.Key ?? '';
        if (found === key || found === markerKey || found.startsWith(dirPrefix)) keys.push(found);
        else if (found > dirPrefix) return keys;
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (token === undefined) return keys;
      if (!(page.Contents?.at(-1)?.Key ?? '').startsWith(dirPrefix)) break;
    }
    // A page of siblings and more to come: list below `key/` directly instead of paging through them.
    const below = keys.filter((k) => k === key || k === markerKey);
    for await (const obj of this.bucket.listAll(dirPrefix)) below.push(obj.key);
    return below;
  }
}

async function visit(node: TreeNode, base: string, options: WalkOptions): Promise<void> {
  const children = [...node.children.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [name, child] of children) {
    const path = `${base}/${name}`;
    // S3 allows both `a` and `a/x`; a filesystem cannot. Show both rather than hide data.
    if (child.file)
      await options.onEntry({ path, size: child.file.size, modTime: child.file.modTime, isDir: false });
    if (child.children.size > 0) {
      const decision = await options.onEntry({ path, size: 0, modTime: child.modTime, isDir: true });
      if (decision !== 'skip') await visit(child, path, options);
    }
  }
}

function isComponent(name: string): boolean {
  return COMPONENT.test(name) && name !== '.' && name !== '..';
}

function toBuffer(content: Buffer | string): Buffer {
  // A Buffer is sent as it is: the SDK is done with it when the request settles.
  return typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
