import type { Readable } from 'node:stream';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import type { Digest } from './digest.js';
import { BlobUnknownError } from './errors.js';
import { deleteIfExists, exists, readLink, writeLink } from './links.js';
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
  constructor(private readonly driver: StorageDriver) {}

  /** The blob in the global store, whatever repositories link it; `undefined` if absent. */
  async statGlobal(digest: Digest): Promise<BlobDescriptor | undefined> {
    try {
      const info = await this.driver.stat(pathFor({ kind: 'blobData', digest }));
      return { digest, size: info.size };
    } catch (err) {
      if (err instanceof PathNotFoundError) return undefined;
      throw err;
    }
  }

  /** The blob as seen from a repository: linked there and present in the global store. */
  async stat(name: string, digest: Digest): Promise<BlobDescriptor> {
    const linked = await readLink(this.driver, pathFor({ kind: 'layerLink', name, digest }));
    const blob = linked ? await this.statGlobal(digest) : undefined;
    if (!blob) throw new BlobUnknownError(undefined, { digest: digest.toString() });
    return blob;
  }

  async open(digest: Digest, range?: { offset: number; length: number }): Promise<Readable> {
    try {
      return await this.driver.reader(pathFor({ kind: 'blobData', digest }), range);
    } catch (err) {
      if (err instanceof PathNotFoundError)
        throw new BlobUnknownError(undefined, { digest: digest.toString() });
      throw err;
    }
  }

  redirectURL(digest: Digest, method: 'GET' | 'HEAD'): Promise<string | undefined> {
    return this.driver.redirectURL(pathFor({ kind: 'blobData', digest }), method);
  }

  /** Links a blob into a repository. Rewriting an existing link refreshes its time, which GC reads as a touch. */
  async link(name: string, digest: Digest): Promise<void> {
    await writeLink(this.driver, pathFor({ kind: 'layerLink', name, digest }), digest);
  }

  /** Removes a repository's link; the bytes stay until garbage collection finds them unreferenced. */
  async unlink(name: string, digest: Digest): Promise<void> {
    const path = pathFor({ kind: 'layerLink', name, digest });
    if (!(await exists(this.driver, path)))
      throw new BlobUnknownError(undefined, { digest: digest.toString() });
    await deleteIfExists(this.driver, path.slice(0, -'/link'.length));
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
