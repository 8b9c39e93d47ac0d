// The S3 requests the driver and its writer make, one method each, on one bucket. Errors come back raw
// (the callers decide what a 404 means); `fail` turns them into StorageDriverErrors.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type GetObjectCommandOutput,
  type HeadObjectCommandOutput,
  type ListObjectsV2CommandOutput,
  type S3Client,
  type ServerSideEncryption,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { LRUCache } from 'lru-cache';
import { StorageDriverError } from '../driver.js';
import {
  DEFAULT_TIMEOUTS,
  MAX_PART_SIZE,
  MAX_PARTS,
  MIN_PART_SIZE,
  type S3DriverParameters,
  type S3Timeouts,
} from './config.js';
import { isNoSuchUpload, s3Failure, type S3ErrorContext } from './errors.js';

export interface PartInfo {
  readonly PartNumber: number;
  readonly ETag: string;
  readonly Size: number;
}

export interface UploadInfo {
  readonly uploadId: string;
  readonly initiated: Date;
}

export type KeyInfo =
  | { readonly kind: 'file'; readonly size: number; readonly modTime: Date }
  | { readonly kind: 'dir'; readonly modTime: Date };

/** What one listing from a key shows: the object or directory there, and whether its upload marker is. */
export interface KeyState {
  readonly found: KeyInfo | undefined;
  /** `uploadMarkerKey(key)` exists: a multipart upload of the key may be in progress. */
  readonly marker: boolean;
}

/**
 * Every multipart upload a writer starts has an empty object at `<key>!multipart`, written before the
 * upload is created (writer.ts). A listing from `key` sees it right after `key` itself (`!` sorts before
 * every character a path component may hold), so `stat` learns from the listing it makes anyway whether
 * to look for uploads in progress: a missing path costs one request, not two. No path can name the
 * marker, so `list` and `walk` skip it; `delete` and `cancel()` remove it, `move` removes the source's.
 */
const UPLOAD_MARKER_SUFFIX = '!multipart';

export function uploadMarkerKey(key: string): string {
  return key + UPLOAD_MARKER_SUFFIX;
}

export function isUploadMarker(key: string): boolean {
  return key.endsWith(UPLOAD_MARKER_SUFFIX);
}

export interface ListedObject {
  readonly key: string;
  readonly size: number;
  readonly modTime: Date;
}

/** Tuning that tests lower to reach the multipart-copy paths without 5 GiB objects. */
export interface S3Tuning {
  /** Largest piece of one UploadPartCopy; at least 2 × 5 MiB so that even pieces are never too small. */
  readonly copyPieceSize?: number;
  /** Objects larger than this are moved with a multipart copy instead of one CopyObject. */
  readonly copyThreshold?: number;
  readonly timeouts?: S3Timeouts;
  readonly maxAttempts?: number;
  /** Blob reads from an http:// endpoint through rawget.ts (default); `false` for the SDK's client. */
  readonly rawReads?: boolean;
  /** Small GETs and HEADs through direct-requests.ts (default); `false` for the SDK's client. */
  readonly directRequests?: boolean;
}

const DELETE_BATCH = 1000;
/** How long the size of a file a writer committed is remembered for `move` (see `committedSize`). */
const COMMITTED_TTL_MS = 60_000;
const COPY_CONCURRENCY = 4;
/** Enough for a stat to see `key` and `key/…` past a few `key-…` siblings in one request. */
const STAT_PAGE = 8;

export class S3Bucket {
  readonly name: string;
  readonly where: S3ErrorContext;
  readonly copyPieceSize: number;
  readonly copyThreshold: number;
  private readonly slow: { requestTimeout: number };
  /** key → size of what a writer of this process committed there, for `move` (see `committedSize`). */
  private readonly committed = new LRUCache<string, number>({ max: 1000, ttl: COMMITTED_TTL_MS });
  private readonly writeHeaders: {
    ContentType: string;
    ServerSideEncryption?: ServerSideEncryption;
    StorageClass?: StorageClass;
  };

  constructor(
    readonly client: S3Client,
    params: S3DriverParameters,
    where: S3ErrorContext,
    tuning: S3Tuning = {},
  ) {
    this.name = params.bucket;
    this.where = where;
    this.copyPieceSize = Math.min(
      MAX_PART_SIZE,
      Math.max(2 * MIN_PART_SIZE, tuning.copyPieceSize ?? MAX_PART_SIZE),
    );
    this.copyThreshold = Math.min(MAX_PART_SIZE, tuning.copyThreshold ?? MAX_PART_SIZE);
    this.slow = { requestTimeout: (tuning.timeouts ?? DEFAULT_TIMEOUTS).slowMs };
    this.writeHeaders = {
      ContentType: 'application/octet-stream',
      ...(params.encrypt && { ServerSideEncryption: 'AES256' }),
      // "NONE" is Distribution's way to send no storage class at all.
      ...(params.storageclass !== 'NONE' && { StorageClass: params.storageclass as StorageClass }),
    };
  }

  /** A writer committed `size` bytes at `key`. */
  rememberCommitted(key: string, size: number): void {
    this.committed.set(key, size);
  }

  /**
   * The size a writer of this process committed at `key` lately, taken out of memory; `move` uses it to
   * pick the copy method and so saves a listing. If the object changed since, it is copied as it is now
   * (the size only chooses between CopyObject and a multipart copy), and if it went, the copy says so.
   */
  takeCommitted(key: string): number | undefined {
    const size = this.committed.get(key);
    this.committed.delete(key);
    return size;
  }

  forgetCommitted(key: string): void {
    this.committed.delete(key);
  }

  fail(err: unknown, operation: string): StorageDriverError {
    return s3Failure(err, this.where, operation);
  }

  async putObject(key: string, body: Buffer, ifAbsent = false): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.name,
        Key: key,
        Body: body,
        ContentLength: body.length,
        ...this.writeHeaders,
        ...(ifAbsent && { IfNoneMatch: '*' }),
      }),
    );
  }

  getObject(key: string, range?: string): Promise<GetObjectCommandOutput> {
    return this.client.send(
      new GetObjectCommand({ Bucket: this.name, Key: key, ...(range !== undefined && { Range: range }) }),
    );
  }

  headObject(key: string): Promise<HeadObjectCommandOutput> {
    return this.client.send(new HeadObjectCommand({ Bucket: this.name, Key: key }));
  }

  async deleteObject(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.name, Key: key }));
  }

  /** Deletes in batches of 1,000 (S3's limit per request); any key S3 reports as failed fails the call. */
  async deleteObjects(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const [only] = batch;
      if (batch.length === 1 && only !== undefined) {
        await this.deleteObject(only);
        continue;
      }
      const out = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.name,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      const failed = out.Errors ?? [];
      if (failed.length > 0) {
        const first = failed[0];
        throw new Error(
          `DeleteObjects failed for ${failed.length} key(s), first ${first?.Key ?? '?'}: ${first?.Code ?? ''} ${first?.Message ?? ''}`,
        );
      }
    }
  }

  listPage(
    prefix: string,
    options: { delimiter?: string; maxKeys?: number; token?: string } = {},
  ): Promise<ListObjectsV2CommandOutput> {
    return this.client.send(
      new ListObjectsV2Command({
        Bucket: this.name,
        Prefix: prefix,
        ...(options.delimiter !== undefined && { Delimiter: options.delimiter }),
        ...(options.maxKeys !== undefined && { MaxKeys: options.maxKeys }),
        ...(options.token !== undefined && { ContinuationToken: options.token }),
      }),
    );
  }

  /** Every object whose key starts with `prefix`, in S3's (sorted) order, page by page. */
  async *listAll(prefix: string): AsyncGenerator<ListedObject> {
    let token: string | undefined;
    do {
      const page = await this.listPage(prefix, token === undefined ? {} : { token });
      for (const obj of page.Contents ?? []) {
        if (obj.Key === undefined) continue;
        yield { key: obj.Key, size: obj.Size ?? 0, modTime: obj.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /**
   * What is at `key`: an object, a "directory" (objects below `key/`), or nothing, and whether its upload
   * marker is there. Usually one request: a listing from `key` sees `key` itself, then its marker, then,
   * after any `key-…`/`key.…` siblings, `key/…`.
   */
  async statKey(key: string): Promise<KeyState> {
    const dirPrefix = `${key}/`;
    const markerKey = uploadMarkerKey(key);
    const page = await this.listPage(key, { maxKeys: STAT_PAGE });
    let file: KeyInfo | undefined;
    let marker = false;
    for (const obj of page.Contents ?? []) {
      const found = obj.Key ?? '';
      const modTime = obj.LastModified ?? new Date(0);
      if (found === key) file = { kind: 'file', size: obj.Size ?? 0, modTime };
      else if (found === markerKey) marker = true;
      else if (file !== undefined) return { found: file, marker };
      else if (found.startsWith(dirPrefix)) return { found: { kind: 'dir', modTime }, marker };
      // Listings are sorted: once past `key/`, nothing below it can follow.
      else if (found > dirPrefix) return { found: undefined, marker };
    }
    if (file !== undefined || !page.IsTruncated) return { found: file, marker };
    const below = await this.listPage(dirPrefix, { maxKeys: 1 });
    const first = below.Contents?.[0];
    return { found: first ? { kind: 'dir', modTime: first.LastModified ?? new Date(0) } : undefined, marker };
  }

  /** In-progress multipart uploads whose key is `key`, or (with `below`) starts with `key/`. */
  async listUploads(key: string, below = false): Promise<(UploadInfo & { key: string })[]> {
    const found: (UploadInfo & { key: string })[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.client.send(
        new ListMultipartUploadsCommand({
          Bucket: this.name,
          Prefix: key,
          ...(keyMarker !== undefined && { KeyMarker: keyMarker }),
          ...(uploadIdMarker !== undefined && { UploadIdMarker: uploadIdMarker }),
        }),
      );
      for (const upload of page.Uploads ?? []) {
        const k = upload.Key;
        if (k === undefined || upload.UploadId === undefined) continue;
        if (k === key || (below && k.startsWith(`${key}/`))) {
          found.push({ key: k, uploadId: upload.UploadId, initiated: upload.Initiated ?? new Date(0) });
        }
      }
      if (!page.IsTruncated) return found;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
      if (keyMarker === undefined && uploadIdMarker === undefined) return found;
    }
  }

  /** The in-progress upload for `key` to continue: the newest, if crashes left several. */
  async newestUpload(key: string): Promise<UploadInfo | undefined> {
    let newest: UploadInfo | undefined;
    for (const upload of await this.listUploads(key)) {
      if (!newest || upload.initiated >= newest.initiated) newest = upload;
    }
    return newest;
  }

  async listParts(key: string, uploadId: string): Promise<PartInfo[]> {
    const parts: PartInfo[] = [];
    let marker: string | undefined;
    for (;;) {
      const page = await this.client.send(
        new ListPartsCommand({
          Bucket: this.name,
          Key: key,
          UploadId: uploadId,
          ...(marker !== undefined && { PartNumberMarker: marker }),
        }),
      );
      for (const p of page.Parts ?? []) {
        if (p.PartNumber === undefined || p.ETag === undefined) continue;
        parts.push({ PartNumber: p.PartNumber, ETag: p.ETag, Size: p.Size ?? 0 });
      }
      if (!page.IsTruncated || page.NextPartNumberMarker === undefined) break;
      marker = page.NextPartNumberMarker;
    }
    return parts.sort((a, b) => a.PartNumber - b.PartNumber);
  }

  async createUpload(key: string): Promise<string> {
    const out = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.name, Key: key, ...this.writeHeaders }),
    );
    if (out.UploadId === undefined) throw new Error('CreateMultipartUpload returned no UploadId');
    return out.UploadId;
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<PartInfo> {
    if (partNumber > MAX_PARTS) {
      throw new Error(`the upload needs more than ${MAX_PARTS} parts; raise storage.s3.chunksize`);
    }
    const out = await this.client.send(
      new UploadPartCommand({
        Bucket: this.name,
        Key: key,
        UploadId: uploadId,
        PartNumber: partNumber,
        Body: body,
        ContentLength: body.length,
      }),
      this.slow,
    );
    if (out.ETag === undefined) throw new Error(`UploadPart ${partNumber} returned no ETag`);
    return { PartNumber: partNumber, ETag: out.ETag, Size: body.length };
  }

  /**
   * Copies `size` bytes of `sourceKey` into an upload as parts `firstPart`, `firstPart + 1`, ... in
   * pieces of equal size no larger than `copyPieceSize`: equal pieces keep every one above S3's 5 MiB
   * minimum, so more parts may follow them.
   */
  async copyParts(
    sourceKey: string,
    size: number,
    key: string,
    uploadId: string,
    firstPart: number,
  ): Promise<PartInfo[]> {
    const count = Math.ceil(size / this.copyPieceSize);
    const piece = Math.ceil(size / count);
    const ranges = Array.from({ length: count }, (_, i) => {
      const start = i * piece;
      return { number: firstPart + i, start, end: Math.min(size, start + piece) - 1 };
    });
    const parts: PartInfo[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let range = ranges[next++]; range !== undefined; range = ranges[next++]) {
        const out = await this.client.send(
          new UploadPartCopyCommand({
            Bucket: this.name,
            Key: key,
            UploadId: uploadId,
            PartNumber: range.number,
            CopySource: this.copySource(sourceKey),
            CopySourceRange: `bytes=${range.start}-${range.end}`,
          }),
          this.slow,
        );
        const etag = out.CopyPartResult?.ETag;
        if (etag === undefined) throw new Error(`UploadPartCopy ${range.number} returned no ETag`);
        parts.push({ PartNumber: range.number, ETag: etag, Size: range.end - range.start + 1 });
      }
    };
    await Promise.all(Array.from({ length: Math.min(COPY_CONCURRENCY, count) }, worker));
    return parts.sort((a, b) => a.PartNumber - b.PartNumber);
  }

  /** Completes an upload. The ETag it answers is not used: RGW answers an empty one. */
  async completeUpload(key: string, uploadId: string, parts: readonly PartInfo[]): Promise<void> {
    await this.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: this.name,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts.map(({ PartNumber, ETag }) => ({ PartNumber, ETag })) },
      }),
      this.slow,
    );
  }

  /** Aborts an upload; one that is already gone (completed or aborted elsewhere) is fine. */
  async abortUpload(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(
        new AbortMultipartUploadCommand({ Bucket: this.name, Key: key, UploadId: uploadId }),
      );
    } catch (err) {
      if (!isNoSuchUpload(err)) throw err;
    }
  }

  /** Aborts every in-progress upload of `key` (and, with `below`, of keys under `key/`). */
  async abortUploads(key: string, below = false): Promise<number> {
    const uploads = await this.listUploads(key, below);
    for (const upload of uploads) await this.abortUpload(upload.key, upload.uploadId);
    return uploads.length;
  }

  /** Server-side copy: one CopyObject up to `copyThreshold`, a multipart copy above it. */
  async copyObject(sourceKey: string, size: number, key: string): Promise<void> {
    if (size <= this.copyThreshold) {
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.name,
          Key: key,
          CopySource: this.copySource(sourceKey),
          MetadataDirective: 'REPLACE',
          ...this.writeHeaders,
        }),
        this.slow,
      );
      return;
    }
    const uploadId = await this.createUpload(key);
    try {
      const parts = await this.copyParts(sourceKey, size, key, uploadId, 1);
      await this.completeUpload(key, uploadId, parts);
    } catch (err) {
      await this.abortUpload(key, uploadId).catch(() => undefined);
      throw err;
    }
  }

  private copySource(key: string): string {
    return `${encodeURIComponent(this.name)}/${key.split('/').map(encodeURIComponent).join('/')}`;
  }
}
