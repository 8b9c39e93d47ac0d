import type { FileInfo, StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { readLink } from '../registry/links.js';
import {
  baseName,
  BLOBS_ROOT,
  GC_TOMBSTONES_ROOT,
  GC_TOUCHES_ROOT,
  parsePath,
  pathFor,
  REPOSITORIES_ROOT,
} from '../registry/paths.js';
import { forEachLimit } from './pool.js';
import type { Progress } from './progress.js';
import { manifestReferences, UnreadableManifestError, type ManifestReferences } from './references.js';

/** How many storage operations `wharf gc` keeps in flight; a run inside the server uses fewer. */
export const DEFAULT_CONCURRENCY = 32;

/** One repository as the walk found it. Digests are kept in their string form (`sha256:<hex>`). */
export interface RepositoryScan {
  readonly name: string;
  /** `_layers` links: digest → the link's modTime. */
  readonly layers: Map<string, Date>;
  /** `_manifests/revisions`: digest → the link's modTime (a PUT rewrites it). */
  readonly revisions: Map<string, Date>;
  /** tag → the digest its current link names. */
  readonly tags: Map<string, string>;
  /** digest → tags whose history (`index/`) lists it. */
  readonly tagHistory: Map<string, string[]>;
  /** digest → subjects it has a referrer entry under (`_wharf/referrers`). */
  readonly referrerEntries: Map<string, string[]>;
}

export interface BlobInfo {
  readonly size: number;
  readonly modTime: Date;
}

/** Everything one walk of storage found: repositories, blobs and GC's own records. */
export interface StorageScan {
  readonly repositories: Map<string, RepositoryScan>;
  readonly blobs: Map<string, BlobInfo>;
  readonly touches: Map<string, Date>;
  readonly tombstones: Set<string>;
  /**
   * The directories of `repositories/` that upload purging walks (repository paths and their `_`
   * directories, not below those), in walk order, so purging needs no second listing.
   */
  readonly repositoryDirs: FileInfo[];
}

/** `sha256:<hex>` back to a Digest; only for strings this module produced from parsed digests. */
export function toDigest(text: string): Digest {
  const digest = parseDigest(text);
  if (!digest) throw new Error(`not a digest: ${text}`);
  return digest;
}

/**
 * Walks storage once: every repository, every blob, every touch and tombstone (on S3, one listing of
 * each prefix, so each key is listed once), then reads every tag's current link.
 */
export async function scanStorage(
  driver: StorageDriver,
  progress: Progress,
  concurrency = DEFAULT_CONCURRENCY,
): Promise<StorageScan> {
  const repositories = new Map<string, RepositoryScan>();
  const repositoryDirs: FileInfo[] = [];
  const tagLinks: { repo: RepositoryScan; tag: string }[] = [];
  const repo = (name: string): RepositoryScan => {
    let found = repositories.get(name);
    if (!found) {
      found = {
        name,
        layers: new Map(),
        revisions: new Map(),
        tags: new Map(),
        tagHistory: new Map(),
        referrerEntries: new Map(),
      };
      repositories.set(name, found);
    }
    return found;
  };

  progress.phase('walking storage');
  const blobs = new Map<string, BlobInfo>();
  const touches = new Map<string, Date>();
  const tombstones = new Set<string>();
  const walkRepositories = () =>
    walkIfPresent(driver, REPOSITORIES_ROOT, (info) => {
      progress.advance();
      if (info.isDir) {
        if (visitedByUploadPurge(info.path)) repositoryDirs.push(info);
        // Upload sessions are not GC's: they are purged by age.
        return baseName(info.path) === '_uploads' ? 'skip' : undefined;
      }
      const parsed = parsePath(info.path);
      if (!parsed) return undefined;
      const d = 'digest' in parsed ? parsed.digest.toString() : '';
      switch (parsed.kind) {
        case 'layerLink':
          repo(parsed.name).layers.set(d, info.modTime);
          break;
        case 'manifestRevisionLink':
          repo(parsed.name).revisions.set(d, info.modTime);
          break;
        case 'tagCurrentLink':
          tagLinks.push({ repo: repo(parsed.name), tag: parsed.tag });
          break;
        case 'tagIndexEntryLink':
          push(repo(parsed.name).tagHistory, d, parsed.tag);
          break;
        case 'referrerEntry':
          push(repo(parsed.name).referrerEntries, d, parsed.subject.toString());
          break;
        default:
          break;
      }
      return undefined;
    });

  const walkBlobs = () =>
    walkIfPresent(driver, BLOBS_ROOT, (info) => {
      progress.advance();
      const parsed = info.isDir ? undefined : parsePath(info.path);
      if (parsed?.kind === 'blobData') {
        blobs.set(parsed.digest.toString(), { size: info.size, modTime: info.modTime });
      }
      return undefined;
    });

  const walkRecords = [GC_TOUCHES_ROOT, GC_TOMBSTONES_ROOT].map(
    (root) => () =>
      walkIfPresent(driver, root, (info) => {
        progress.advance();
        const parsed = info.isDir ? undefined : parsePath(info.path);
        if (parsed?.kind === 'gcTouch') touches.set(parsed.digest.toString(), info.modTime);
        if (parsed?.kind === 'gcTombstone') tombstones.add(parsed.digest.toString());
        return undefined;
      }),
  );
  const walks = [walkRepositories, walkBlobs, ...walkRecords];
  // The prefixes are disjoint: a fast run walks them side by side, a gentle one (in the server) in turn.
  if (concurrency >= 8) await Promise.all(walks.map((walk) => walk()));
  else for (const walk of walks) await walk();

  progress.phase('reading tags', tagLinks.length);
  await forEachLimit(tagLinks, concurrency, async ({ repo: r, tag }) => {
    const digest = await readLink(driver, pathFor({ kind: 'tagCurrentLink', name: r.name, tag }));
    if (digest) r.tags.set(tag, digest.toString());
    progress.advance();
  });
  return { repositories, blobs, touches, tombstones, repositoryDirs };
}

/** Upload purging's walk descends into no `_` directory, so it meets only directories outside them. */
function visitedByUploadPurge(path: string): boolean {
  const parts = path.slice(REPOSITORIES_ROOT.length + 1).split('/');
  return parts.slice(0, -1).every((part) => !part.startsWith('_'));
}

async function walkIfPresent(
  driver: StorageDriver,
  root: string,
  onEntry: (info: FileInfo) => 'skip' | undefined,
): Promise<void> {
  try {
    await driver.walk(root, { onEntry });
  } catch (err) {
    if (!(err instanceof PathNotFoundError)) throw err;
  }
}

function push(map: Map<string, string[]>, key: string, value: string): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** A manifest as GC reads it: its size and references, or why they cannot be known. */
export type LoadedManifest =
  | { readonly state: 'ok'; readonly size: number; readonly refs: ManifestReferences }
  | { readonly state: 'missing' }
  | { readonly state: 'unreadable'; readonly error: UnreadableManifestError };

/** Reads each manifest's bytes once per run, however many repositories hold it. */
export class ManifestReader {
  private readonly loaded = new Map<string, Promise<LoadedManifest>>();

  constructor(private readonly driver: StorageDriver) {}

  load(digest: string): Promise<LoadedManifest> {
    let pending = this.loaded.get(digest);
    if (!pending) {
      pending = this.read(digest);
      this.loaded.set(digest, pending);
    }
    return pending;
  }

  /** The manifests already read, for `du` and reporting. */
  get(digest: string): Promise<LoadedManifest> | undefined {
    return this.loaded.get(digest);
  }

  private async read(digest: string): Promise<LoadedManifest> {
    let content: Buffer;
    try {
      content = await this.driver.getContent(pathFor({ kind: 'blobData', digest: toDigest(digest) }));
    } catch (err) {
      if (err instanceof PathNotFoundError) return { state: 'missing' };
      throw err;
    }
    try {
      return { state: 'ok', size: content.length, refs: manifestReferences(digest, content) };
    } catch (err) {
      if (err instanceof UnreadableManifestError) return { state: 'unreadable', error: err };
      throw err;
    }
  }
}

/** Reads every revision of every repository (each distinct digest once), `concurrency` at a time. */
export async function readAllRevisions(
  scan: StorageScan,
  reader: ManifestReader,
  progress: Progress,
  concurrency = DEFAULT_CONCURRENCY,
): Promise<void> {
  const digests = new Set<string>();
  for (const r of scan.repositories.values()) for (const d of r.revisions.keys()) digests.add(d);
  progress.phase('reading manifests', digests.size);
  await forEachLimit(digests, concurrency, async (d) => {
    await reader.load(d);
    progress.advance();
  });
}
