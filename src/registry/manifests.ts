import { LRUCache } from 'lru-cache';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import type { BlobStore } from './blobs.js';
import { digestOf, sameDigest, type Digest } from './digest.js';
import {
  BlobUnknownError,
  DigestInvalidError,
  ManifestBlobUnknownError,
  ManifestTooLargeError,
  ManifestUnknownError,
} from './errors.js';
import { deleteIfExists, fileExists, readLink, writeLink } from './links.js';
import {
  isDistributable,
  parseManifest,
  referrerDescriptor,
  storedMediaType,
  type Descriptor,
  type ParsedManifest,
} from './manifest-format.js';
import { baseName, pathFor } from './paths.js';
import type { CacheObserver } from './registry.js';

export interface StoredManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly content: Buffer;
}

export interface PutManifestResult {
  readonly digest: Digest;
  readonly subject?: Digest;
}

/** A reference is a digest or a tag; the HTTP layer has validated which. */
export type Reference = { digest: Digest } | { tag: string };

/**
 * Manifests: bytes stored as blobs, exactly as received; a repository holds a manifest through a
 * revision link, and tags point at revisions. Content by digest is immutable, so it is cached.
 */
export class ManifestStore {
  private readonly cache: LRUCache<string, StoredManifest>;

  constructor(
    private readonly driver: StorageDriver,
    private readonly blobs: BlobStore,
    private readonly options: { maxSize: number; cacheBytes?: number; cacheObserver?: CacheObserver },
  ) {
    this.cache = new LRUCache({
      maxSize: options.cacheBytes ?? 64 * 1024 * 1024,
      sizeCalculation: (m) => m.content.length + 256,
    });
  }

  get maxSize(): number {
    return this.options.maxSize;
  }

  /** The digest a reference names in this repository; MANIFEST_UNKNOWN when it names nothing. */
  async resolve(name: string, reference: Reference): Promise<Digest> {
    const digest =
      'digest' in reference
        ? reference.digest
        : await readLink(this.driver, pathFor({ kind: 'tagCurrentLink', name, tag: reference.tag }));
    if (
      !digest ||
      !(await fileExists(this.driver, pathFor({ kind: 'manifestRevisionLink', name, digest })))
    ) {
      throw new ManifestUnknownError(undefined, 'tag' in reference ? { tag: reference.tag } : undefined);
    }
    return digest;
  }

  async get(name: string, reference: Reference): Promise<StoredManifest> {
    const digest = await this.resolve(name, reference);
    return this.content(digest);
  }

  /** Manifest bytes by digest, whichever repository holds them; callers check the repository first. */
  async content(digest: Digest): Promise<StoredManifest> {
    const cached = this.cache.get(digest.toString());
    this.options.cacheObserver?.('manifests', cached !== undefined);
    if (cached) return cached;
    let content: Buffer;
    try {
      content = await this.blobs.readSmall(digest);
    } catch (err) {
      if (err instanceof BlobUnknownError) throw new ManifestUnknownError();
      throw err;
    }
    const manifest = { digest, mediaType: storedMediaType(content), content };
    this.cache.set(digest.toString(), manifest);
    return manifest;
  }

  async put(
    name: string,
    reference: Reference,
    content: Buffer,
    contentType?: string,
  ): Promise<PutManifestResult> {
    if (content.length > this.options.maxSize) {
      throw new ManifestTooLargeError(
        `manifest is ${content.length} bytes; the limit is ${this.options.maxSize}`,
      );
    }
    const digest = digestOf(content, 'digest' in reference ? reference.digest.algorithm : 'sha256');
    if ('digest' in reference && !sameDigest(digest, reference.digest)) {
      throw new DigestInvalidError('manifest digest does not match the reference', {
        expected: reference.digest.toString(),
        actual: digest.toString(),
      });
    }
    const manifest = parseManifest(content, contentType);
    const [, previousTag] = await Promise.all([
      this.checkReferences(name, manifest),
      'tag' in reference
        ? readLink(this.driver, pathFor({ kind: 'tagCurrentLink', name, tag: reference.tag }))
        : undefined,
    ]);

    await this.blobs.putSmall(digest, content);
    await writeLink(this.driver, pathFor({ kind: 'manifestRevisionLink', name, digest }), digest);
    if (manifest.subject) {
      const descriptor = referrerDescriptor(manifest, digest, content.length);
      await this.driver.putContent(
        pathFor({ kind: 'referrerEntry', name, subject: manifest.subject.digest, digest }),
        JSON.stringify(descriptor),
      );
    }
    if ('tag' in reference) await this.tag(name, reference.tag, digest);
    const lost = await this.lostAfterWrite(name, digest, manifest);
    if (lost.length > 0) {
      await this.rollback(name, reference, digest, manifest, previousTag);
      throw new ManifestBlobUnknownError(
        `garbage collection removed what the manifest references, retry the push: ${lost.join(', ')}`,
        { digests: lost.map(String) },
      );
    }
    this.cache.set(digest.toString(), { digest, mediaType: manifest.mediaType, content });
    return { digest, ...(manifest.subject && { subject: manifest.subject.digest }) };
  }

  async tag(name: string, tag: string, digest: Digest): Promise<void> {
    await writeLink(this.driver, pathFor({ kind: 'tagIndexEntryLink', name, tag, digest }), digest);
    await writeLink(this.driver, pathFor({ kind: 'tagCurrentLink', name, tag }), digest);
  }

  /** Deleting a tag removes only the tag; deleting a digest removes the revision and every tag on it. */
  async delete(name: string, reference: Reference): Promise<void> {
    if ('tag' in reference) {
      if (!(await fileExists(this.driver, pathFor({ kind: 'tagCurrentLink', name, tag: reference.tag })))) {
        throw new ManifestUnknownError(undefined, { tag: reference.tag });
      }
      await deleteIfExists(this.driver, pathFor({ kind: 'tagDir', name, tag: reference.tag }));
      return;
    }
    const digest = await this.resolve(name, reference);
    const subject = await this.subjectOf(digest);
    for (const tag of await this.tagsPointingAt(name, digest)) {
      await deleteIfExists(this.driver, pathFor({ kind: 'tagDir', name, tag }));
    }
    if (subject) {
      await deleteIfExists(this.driver, pathFor({ kind: 'referrerEntry', name, subject, digest }));
    }
    await deleteIfExists(this.driver, pathFor({ kind: 'manifestRevisionDir', name, digest }));
  }

  private async subjectOf(digest: Digest): Promise<Digest | undefined> {
    try {
      const { content, mediaType } = await this.content(digest);
      const subject = parseManifest(content, mediaType).subject;
      return subject?.digest;
    } catch {
      // A manifest that no longer parses (written elsewhere) has no referrer entry of ours.
      return undefined;
    }
  }

  private async tagsPointingAt(name: string, digest: Digest): Promise<string[]> {
    let tagDirs: string[];
    try {
      tagDirs = await this.driver.list(pathFor({ kind: 'tagsDir', name }));
    } catch (err) {
      if (err instanceof PathNotFoundError) return [];
      throw err;
    }
    const tags: string[] = [];
    for (const dir of tagDirs) {
      const tag = baseName(dir);
      const current = await readLink(this.driver, pathFor({ kind: 'tagCurrentLink', name, tag }));
      if (current && sameDigest(current, digest)) tags.push(tag);
    }
    return tags;
  }

  /**
   * GC's check after write (src/gc/collect.ts): touch the manifest and everything it references, then
   * make sure no sweep took any of it meanwhile. Returns what is gone.
   */
  private async lostAfterWrite(name: string, digest: Digest, manifest: ParsedManifest): Promise<Digest[]> {
    const manifestPresent = (d: Digest) => async () =>
      (await fileExists(this.driver, pathFor({ kind: 'manifestRevisionLink', name, digest: d }))) &&
      (await this.blobs.statGlobal(d)) !== undefined;
    const entries = [{ digest, present: manifestPresent(digest) }];
    if (manifest.kind === 'index') {
      for (const child of manifest.references) {
        entries.push({ digest: child.digest, present: manifestPresent(child.digest) });
      }
    } else {
      const blobs = [...(manifest.config ? [manifest.config] : []), ...manifest.references];
      for (const blob of blobs.filter(isDistributable)) {
        const present = async () => (await this.blobs.lookup(name, blob.digest)) !== undefined;
        entries.push({ digest: blob.digest, present });
      }
    }
    await this.blobs.gc.touch(entries.map((e) => e.digest));
    return this.blobs.gc.lostAfterTouch(entries);
  }

  /** Undoes a PUT that lost a reference to a sweep: the revision, its referrer entry, the tag move. */
  private async rollback(
    name: string,
    reference: Reference,
    digest: Digest,
    manifest: ParsedManifest,
    previousTag: Digest | undefined,
  ): Promise<void> {
    if ('tag' in reference && !(previousTag && sameDigest(previousTag, digest))) {
      const tag = reference.tag;
      const entry = pathFor({ kind: 'tagIndexEntryLink', name, tag, digest });
      await deleteIfExists(this.driver, entry.slice(0, -'/link'.length));
      if (previousTag) await this.tag(name, tag, previousTag);
      else await deleteIfExists(this.driver, pathFor({ kind: 'tagDir', name, tag }));
    }
    if (manifest.subject) {
      const subject = manifest.subject.digest;
      await deleteIfExists(this.driver, pathFor({ kind: 'referrerEntry', name, subject, digest }));
    }
    await deleteIfExists(this.driver, pathFor({ kind: 'manifestRevisionDir', name, digest }));
  }

  /** Every blob and child manifest must be in the repository; a missing subject is allowed. */
  private async checkReferences(name: string, manifest: ParsedManifest): Promise<void> {
    const missing: string[] = [];
    if (manifest.kind === 'index') {
      await Promise.all(
        manifest.references.map(async (child) => {
          const path = pathFor({ kind: 'manifestRevisionLink', name, digest: child.digest });
          if (!(await fileExists(this.driver, path))) missing.push(child.digest.toString());
        }),
      );
    } else {
      const blobs = [...(manifest.config ? [manifest.config] : []), ...manifest.references];
      await Promise.all(
        blobs.filter(isDistributable).map(async (blob) => {
          if (!(await this.holdsBlob(name, blob))) missing.push(blob.digest.toString());
        }),
      );
    }
    if (missing.length > 0) {
      throw new ManifestBlobUnknownError(`manifest references unknown blobs: ${missing.join(', ')}`, {
        digests: missing,
      });
    }
  }

  /** Descriptors with embedded data need no prior upload: the content is right there, so store it. */
  private async holdsBlob(name: string, blob: Descriptor): Promise<boolean> {
    try {
      await this.blobs.stat(name, blob.digest);
      return true;
    } catch (err) {
      if (!(err instanceof BlobUnknownError)) throw err;
    }
    if (blob.data && blob.data.length === blob.size) {
      const actual = digestOf(blob.data, blob.digest.algorithm);
      if (sameDigest(actual, blob.digest)) {
        await this.blobs.putSmall(actual, blob.data);
        await this.blobs.link(name, actual);
        return true;
      }
    }
    return false;
  }
}
