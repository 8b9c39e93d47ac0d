/**
 * The storage layout: CNCF Distribution v2's, read and written in place, so a tree written by either
 * registry is served by the other. This is the only file that names storage paths.
 *
 *   /docker/registry/v2/
 *     blobs/sha256/<hex[0:2]>/<hex>/data                       the blob bytes (layers, configs, manifests)
 *     repositories/<name>/
 *       _layers/sha256/<hex>/link                              "sha256:<hex>": the blob is in this repo
 *       _manifests/revisions/sha256/<hex>/link                 the manifest is in this repo
 *       _manifests/tags/<tag>/current/link                     the digest the tag points at now
 *       _manifests/tags/<tag>/index/sha256/<hex>/link          every digest the tag ever pointed at
 *       _uploads/<id>/data                                     an upload in progress
 *       _uploads/<id>/startedat                                RFC 3339 time the upload began
 *       _wharf/referrers/sha256/<subject hex>/sha256/<hex>       a referrer of <subject>: its descriptor as JSON
 *
 * Distribution ignores `_wharf` (it skips `_`-prefixed directories it does not know), so Wharf keeps its
 * own per-repository data there. A link file holds a digest string, exactly as Distribution writes it.
 */
import type { Digest } from './digest.js';

export const V2_ROOT = '/docker/registry/v2';
export const BLOBS_ROOT = `${V2_ROOT}/blobs`;
export const REPOSITORIES_ROOT = `${V2_ROOT}/repositories`;

export type PathSpec =
  | { kind: 'blobData'; digest: Digest }
  | { kind: 'blobDir'; digest: Digest }
  | { kind: 'repository'; name: string }
  | { kind: 'layerLink'; name: string; digest: Digest }
  | { kind: 'layersDir'; name: string }
  | { kind: 'manifestRevisionLink'; name: string; digest: Digest }
  | { kind: 'manifestRevisionsDir'; name: string }
  | { kind: 'manifestRevisionDir'; name: string; digest: Digest }
  | { kind: 'tagsDir'; name: string }
  | { kind: 'tagDir'; name: string; tag: string }
  | { kind: 'tagCurrentLink'; name: string; tag: string }
  | { kind: 'tagIndexEntryLink'; name: string; tag: string; digest: Digest }
  | { kind: 'uploadsDir'; name: string }
  | { kind: 'uploadDir'; name: string; id: string }
  | { kind: 'uploadData'; name: string; id: string }
  | { kind: 'uploadStartedAt'; name: string; id: string }
  | { kind: 'referrersDir'; name: string; subject: Digest }
  | { kind: 'referrerEntry'; name: string; subject: Digest; digest: Digest };

/** `sha256:abcd…` → `sha256/abcd…`, the form digests take as path components. */
function digestPath(digest: Digest): string {
  return `${digest.algorithm}/${digest.hex}`;
}

export function pathFor(spec: PathSpec): string {
  switch (spec.kind) {
    case 'blobDir':
      return `${BLOBS_ROOT}/${spec.digest.algorithm}/${spec.digest.hex.slice(0, 2)}/${spec.digest.hex}`;
    case 'blobData':
      return `${pathFor({ kind: 'blobDir', digest: spec.digest })}/data`;
    case 'repository':
      return `${REPOSITORIES_ROOT}/${spec.name}`;
    case 'layersDir':
      return `${REPOSITORIES_ROOT}/${spec.name}/_layers`;
    case 'layerLink':
      return `${REPOSITORIES_ROOT}/${spec.name}/_layers/${digestPath(spec.digest)}/link`;
    case 'manifestRevisionsDir':
      return `${REPOSITORIES_ROOT}/${spec.name}/_manifests/revisions`;
    case 'manifestRevisionDir':
      return `${REPOSITORIES_ROOT}/${spec.name}/_manifests/revisions/${digestPath(spec.digest)}`;
    case 'manifestRevisionLink':
      return `${pathFor({ kind: 'manifestRevisionDir', name: spec.name, digest: spec.digest })}/link`;
    case 'tagsDir':
      return `${REPOSITORIES_ROOT}/${spec.name}/_manifests/tags`;
    case 'tagDir':
      return `${REPOSITORIES_ROOT}/${spec.name}/_manifests/tags/${spec.tag}`;
    case 'tagCurrentLink':
      return `${REPOSITORIES_ROOT}/${spec.name}/_manifests/tags/${spec.tag}/current/link`;
    case 'tagIndexEntryLink':
      return `${REPOSITORIES_ROOT}/${spec.name}/_manifests/tags/${spec.tag}/index/${digestPath(spec.digest)}/link`;
    case 'uploadsDir':
      return `${REPOSITORIES_ROOT}/${spec.name}/_uploads`;
    case 'uploadDir':
      return `${REPOSITORIES_ROOT}/${spec.name}/_uploads/${spec.id}`;
    case 'uploadData':
      return `${REPOSITORIES_ROOT}/${spec.name}/_uploads/${spec.id}/data`;
    case 'uploadStartedAt':
      return `${REPOSITORIES_ROOT}/${spec.name}/_uploads/${spec.id}/startedat`;
    case 'referrersDir':
      return `${REPOSITORIES_ROOT}/${spec.name}/_wharf/referrers/${digestPath(spec.subject)}`;
    case 'referrerEntry':
      return `${REPOSITORIES_ROOT}/${spec.name}/_wharf/referrers/${digestPath(spec.subject)}/${digestPath(spec.digest)}`;
  }
}

/** The last path component: a listed child's own name. */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
