import { parseDigest, type Digest } from '../registry/digest.js';
import { isDistributable } from '../registry/manifest-format.js';

/** A blob a manifest references, with the size its descriptor states. */
export interface BlobReference {
  readonly digest: Digest;
  readonly size: number;
  /** False for foreign / non-distributable layers, which a registry does not hold. */
  readonly distributable: boolean;
}

/** What a stored manifest points at, as GC reads it. */
export interface ManifestReferences {
  /** Config, layers, artifact blobs, schema1 `fsLayers`. */
  readonly blobs: readonly BlobReference[];
  /** Child manifests of an index or manifest list. */
  readonly children: readonly Digest[];
  readonly subject?: Digest;
}

/** Stored manifest bytes GC cannot read, so it cannot know what they keep alive. */
export class UnreadableManifestError extends Error {
  constructor(readonly digest: string) {
    super(`manifest ${digest} is not a JSON object; refusing to collect what it might reference`);
    this.name = 'UnreadableManifestError';
  }
}

/**
 * Reads references from stored manifest bytes. Lenient where the PUT path is strict: a tree may hold
 * manifests Wharf never validated (Distribution's schema1, OCI artifact manifests, unknown types), and
 * whatever looks like a descriptor in any of the known fields is kept alive.
 */
export function manifestReferences(digest: string, content: Buffer): ManifestReferences {
  let doc: unknown;
  try {
    doc = JSON.parse(content.toString('utf8'));
  } catch {
    throw new UnreadableManifestError(digest);
  }
  if (!isRecord(doc)) throw new UnreadableManifestError(digest);
  const blobs: BlobReference[] = [];
  const addBlob = (value: unknown): void => {
    const d = descriptor(value);
    if (d) blobs.push(d);
  };
  addBlob(doc.config);
  for (const key of ['layers', 'blobs'] as const) {
    const list = doc[key];
    if (Array.isArray(list)) list.forEach(addBlob);
  }
  // Docker schema1: layers named by `blobSum`, sizes unknown.
  if (Array.isArray(doc.fsLayers)) {
    for (const layer of doc.fsLayers) {
      const sum =
        isRecord(layer) && typeof layer.blobSum === 'string' ? parseDigest(layer.blobSum) : undefined;
      if (sum) blobs.push({ digest: sum, size: 0, distributable: true });
    }
  }
  const children = Array.isArray(doc.manifests)
    ? doc.manifests.map(descriptor).flatMap((d) => (d ? [d.digest] : []))
    : [];
  const subject = descriptor(doc.subject)?.digest;
  return { blobs, children, ...(subject && { subject }) };
}

function descriptor(value: unknown): BlobReference | undefined {
  if (!isRecord(value) || typeof value.digest !== 'string') return undefined;
  const digest = parseDigest(value.digest);
  if (!digest) return undefined;
  const size = typeof value.size === 'number' && Number.isSafeInteger(value.size) ? value.size : 0;
  const mediaType = typeof value.mediaType === 'string' ? value.mediaType : '';
  return { digest, size, distributable: isDistributable({ mediaType, digest, size }) };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
