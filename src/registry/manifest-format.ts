import { parseDigest, type Digest } from './digest.js';
import { ManifestInvalidError } from './errors.js';

export const MediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

const IMAGE_TYPES: ReadonlySet<string> = new Set([MediaTypes.ociManifest, MediaTypes.dockerManifest]);
const INDEX_TYPES: ReadonlySet<string> = new Set([MediaTypes.ociIndex, MediaTypes.dockerManifestList]);

/** Layers that registries are not expected to hold (Docker foreign layers, OCI non-distributable). */
const NON_DISTRIBUTABLE =
  /^application\/vnd\.(docker\.image\.rootfs\.foreign|oci\.image\.layer\.nondistributable)\./;

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly artifactType?: string;
  readonly annotations?: Record<string, string>;
  readonly urls?: string[];
  /** Embedded content (descriptor `data`), already decoded. */
  readonly data?: Buffer;
  readonly platform?: { architecture?: string; os?: string; variant?: string };
}

export interface ParsedManifest {
  readonly mediaType: string;
  readonly kind: 'image' | 'index';
  readonly config?: Descriptor;
  /** Layers of an image, children of an index. */
  readonly references: readonly Descriptor[];
  readonly subject?: Descriptor;
  readonly artifactType?: string;
  readonly annotations?: Record<string, string>;
}

export function isManifestMediaType(mediaType: string): boolean {
  return IMAGE_TYPES.has(mediaType) || INDEX_TYPES.has(mediaType);
}

export function isDistributable(descriptor: Descriptor): boolean {
  return !NON_DISTRIBUTABLE.test(descriptor.mediaType);
}

function invalid(reason: string): ManifestInvalidError {
  return new ManifestInvalidError(`manifest invalid: ${reason}`, { reason });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringRecord(value: unknown, where: string): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value) || Object.values(value).some((v) => typeof v !== 'string')) {
    throw invalid(`${where} must be a map of strings`);
  }
  return value as Record<string, string>;
}

function parseDescriptor(value: unknown, where: string): Descriptor {
  if (!isRecord(value)) throw invalid(`${where} must be a descriptor object`);
  const { mediaType, digest, size, artifactType, urls, data, platform } = value;
  if (typeof mediaType !== 'string' || mediaType === '') throw invalid(`${where}.mediaType is required`);
  const parsed = typeof digest === 'string' ? parseDigest(digest) : undefined;
  if (!parsed) throw invalid(`${where}.digest is not a valid digest`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(`${where}.size must be a non-negative integer`);
  }
  if (artifactType !== undefined && typeof artifactType !== 'string') {
    throw invalid(`${where}.artifactType must be a string`);
  }
  if (urls !== undefined && (!Array.isArray(urls) || urls.some((u) => typeof u !== 'string'))) {
    throw invalid(`${where}.urls must be a list of strings`);
  }
  if (data !== undefined && typeof data !== 'string') throw invalid(`${where}.data must be base64`);
  return {
    mediaType,
    digest: parsed,
    size,
    ...(artifactType !== undefined && { artifactType }),
    ...(value.annotations !== undefined && {
      annotations: stringRecord(value.annotations, `${where}.annotations`),
    }),
    ...(urls !== undefined && { urls: urls as string[] }),
    ...(data !== undefined && { data: Buffer.from(data, 'base64') }),
    ...(isRecord(platform) && { platform }),
  };
}

function descriptorList(value: unknown, where: string): Descriptor[] {
  if (!Array.isArray(value)) throw invalid(`${where} must be a list`);
  return value.map((item, i) => parseDescriptor(item, `${where}[${i}]`));
}

/**
 * Parses and validates a manifest's bytes. `contentType` is the request's Content-Type: it names the
 * type when the document does not, and must agree with the document when both do.
 */
export function parseManifest(bytes: Buffer, contentType: string | undefined): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalid('not valid JSON');
  }
  if (!isRecord(doc)) throw invalid('not a JSON object');
  if (doc.schemaVersion !== 2) throw invalid('schemaVersion must be 2');

  const declared = doc.mediaType;
  if (declared !== undefined && typeof declared !== 'string') throw invalid('mediaType must be a string');
  const header = contentType?.split(';')[0]?.trim();
  const headerNamesManifest = header !== undefined && isManifestMediaType(header);
  if (declared !== undefined && headerNamesManifest && declared !== header) {
    throw invalid(`mediaType ${declared} does not match Content-Type ${header}`);
  }
  const mediaType =
    declared ??
    (headerNamesManifest ? header : 'manifests' in doc ? MediaTypes.ociIndex : MediaTypes.ociManifest);
  if (!isManifestMediaType(mediaType)) throw invalid(`unsupported media type ${mediaType}`);

  const subject = doc.subject === undefined ? undefined : parseDescriptor(doc.subject, 'subject');
  const artifactType = doc.artifactType;
  if (artifactType !== undefined && typeof artifactType !== 'string')
    throw invalid('artifactType must be a string');
  const annotations = stringRecord(doc.annotations, 'annotations');
  const common = {
    mediaType,
    ...(subject && { subject }),
    ...(artifactType !== undefined && { artifactType }),
    ...(annotations && { annotations }),
  };

  if (INDEX_TYPES.has(mediaType)) {
    return { ...common, kind: 'index', references: descriptorList(doc.manifests, 'manifests') };
  }
  const config = parseDescriptor(doc.config, 'config');
  const layers = doc.layers === undefined && doc.artifactType !== undefined ? [] : doc.layers;
  return { ...common, kind: 'image', config, references: descriptorList(layers, 'layers') };
}

/** The media type of stored manifest bytes, for Content-Type on GET. */
export function storedMediaType(bytes: Buffer): string {
  try {
    const doc: unknown = JSON.parse(bytes.toString('utf8'));
    if (isRecord(doc)) {
      if (typeof doc.mediaType === 'string') return doc.mediaType;
      return 'manifests' in doc ? MediaTypes.ociIndex : MediaTypes.ociManifest;
    }
  } catch {
    // Stored bytes were validated on PUT; a tree from elsewhere may hold anything.
  }
  return MediaTypes.ociManifest;
}

/** The descriptor the referrers API lists for a manifest that names a subject. */
export function referrerDescriptor(
  manifest: ParsedManifest,
  digest: Digest,
  size: number,
): ReferrerDescriptor {
  const artifactType = manifest.artifactType ?? manifest.config?.mediaType;
  return {
    mediaType: manifest.mediaType,
    digest: digest.toString(),
    size,
    ...(artifactType !== undefined && { artifactType }),
    ...(manifest.annotations && { annotations: manifest.annotations }),
  };
}

export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}
