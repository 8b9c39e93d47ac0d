import type { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { ReadOptions, StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { GcRecords, TOUCH_SKIP_MS } from '../gc/records.js';
import type { Digest } from './digest.js';
import { BlobUnknownError } from './errors.js';
import { deleteIfExists, fileExists, readLink, writeLink } from './links.js';
import { pathFor } from './paths.js';

export interface BlobDescriptor {
  readonly digest: Digest;
  readonly size: number;
}

/**
 * Content-addressed blobs. Bytes live once under `blobs/`; a repository holds a blob when it has a
 * `_layers` link to it, so every read in a repository checks the link first.
 */
export class BlobStore {
  /** Touches and tombstones shared with garbage collection (src/gc/collect.ts). */
  readonly gc: GcRecords;
  /**
   * `name@digest` → the blob as a lookup or a link found it, reused by `stat` (never by `lookup`, which
   * the check after write uses) only while this process's own touch of the digest is under
   * TOUCH_SKIP_MS old: the window in which no GC run may delete it (src/gc/collect.ts, (d)).
   */
  private readonly looked = new LRUCache<string, BlobDescriptor>({ max: 10_000, ttl: TOUCH_SKIP_MS });

  constructor(
    private readonly driver: StorageDriver,
    gc?: GcRecords,
  ) {
    this.gc = gc ?? new GcRecords(driver);
  }

  /** The blob in the global store, whatever repositories link it; `undefined` if absent. */
  async statGlobal(digest: Digest): Promise<BlobDescriptor | undefined> {
    // Blob data only ever appears whole (a move), so what reads see is all there is to see.
    const info = await this.driver.statFile(pathFor({ kind: 'blobData', digest }));
    return info && { digest, size: info.size };
  }

  /**
   * The blob as seen from a repository: linked there, present in the global store and not being swept.
   * An answer of "exists" lets a client skip an upload, so it counts as a use: the blob is touched
   * before the tombstone is read (the order the GC protocol needs). While a sweep decides on the blob
   * this waits, then looks again; a tombstone that stays means BLOB_UNKNOWN.
   * A download (`backgroundTouch`) decides nothing, so its touch is not waited for.
   */
  async stat(
    name: string,
    digest: Digest,
    opts: { backgroundTouch?: boolean } = {},
  ): Promise<BlobDescriptor> {
    const unknown = () => new BlobUnknownError(undefined, { digest: digest.toString() });
    let blob: BlobDescriptor | undefined;
    let tombstoned: boolean;
    const key = `${name}@${digest.toString()}`;
    if (this.gc.touchedRecently(digest) || opts.backgroundTouch === true) {
      // A touch that precedes this read of the tombstone was made already, or none is needed.
      const recent = this.gc.touchedRecently(digest) ? this.looked.get(key) : undefined;
      [blob, tombstoned] = await Promise.all([
        recent ?? this.lookup(name, digest),
        this.gc.isTombstoned(digest),
      ]);
      if (blob && !tombstoned && opts.backgroundTouch === true) this.gc.touchInBackground(digest);
    } else {
      blob = await this.lookup(name, digest);
      if (!blob) throw unknown();
      await this.gc.touch([digest]);
      tombstoned = await this.gc.isTombstoned(digest);
    }
    if (tombstoned) {
      this.looked.delete(key);
      if ((await this.gc.awaitTombstone(digest, true)) === 'stuck') throw unknown();
      blob = await this.lookup(name, digest);
    }
    if (!blob) {
      this.looked.delete(key);
      throw unknown();
    }
    this.looked.set(key, blob);
    return blob;
  }

  /** Linked in the repository and present: `stat` without the touch and the tombstone check. */
  async lookup(name: string, digest: Digest): Promise<BlobDescriptor | undefined> {
    const linked = await readLink(this.driver, pathFor({ kind: 'layerLink', name, digest }));
    return linked ? await this.statGlobal(digest) : undefined;
  }

  /** The blob's bytes, or `length` of them from `offset`; `buffers` lends the driver its read buffers. */
  async open(digest: Digest, options: ReadOptions = {}): Promise<Readable> {
    try {
      return await this.driver.reader(pathFor({ kind: 'blobData', digest }), options);
    } catch (err) {
      if (err instanceof PathNotFoundError)
        throw new BlobUnknownError(undefined, { digest: digest.toString() });
      throw err;
    }
  }

  redirectURL(digest: Digest, method: 'GET' | 'HEAD'): Promise<string | undefined> {
    return this.driver.redirectURL(pathFor({ kind: 'blobData', digest }), method);
  }

  /** Links a blob into a repository (upload, mount): a use, so the blob is touched too. */
  async link(name: string, digest: Digest, size?: number): Promise<void> {
    await writeLink(this.driver, pathFor({ kind: 'layerLink', name, digest }), digest);
    await this.gc.touch([digest]);
    // Clients HEAD what they just uploaded.
    if (size !== undefined) this.looked.set(`${name}@${digest.toString()}`, { digest, size });
  }

  /** Removes a repository's link; the bytes stay until garbage collection finds them unreferenced. */
  async unlink(name: string, digest: Digest): Promise<void> {
    const path = pathFor({ kind: 'layerLink', name, digest });
    const key = `${name}@${digest.toString()}`;
    this.looked.delete(key);
    if (!(await fileExists(this.driver, path)))
      throw new BlobUnknownError(undefined, { digest: digest.toString() });
    await deleteIfExists(this.driver, path.slice(0, -'/link'.length));
    // Again: a HEAD meanwhile may have found the link before it went.
    this.looked.delete(key);
  }

  /** Stores small content (a manifest, inline descriptor data) as a blob, unless it is there already. */
  async putSmall(digest: Digest, content: Buffer): Promise<void> {
    if (await this.statGlobal(digest)) return;
    await this.driver.putContent(pathFor({ kind: 'blobData', digest }), content);
  }

  async readSmall(digest: Digest): Promise<Buffer> {
    try {
      return await this.driver.getContent(pathFor({ kind: 'blobData', digest }));
    } catch (err) {
      if (err instanceof PathNotFoundError)
        throw new BlobUnknownError(undefined, { digest: digest.toString() });
      throw err;
    }
  }
}
