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
 *   /wharf/gc/                                                Wharf's garbage collection records
 *     touches/sha256/<hex[0:2]>/<hex>                          the file's modTime: when the blob was last used
 *     tombstones/sha256/<hex[0:2]>/<hex>                       a sweep is deciding the blob: treat it as gone
 *     lease                                                    JSON: which GC runs now, and until when
 *     last-run.json                                            the summary of the last finished run
 *   /wharf/auth/robots/<id>.json                              a robot token: its grant, expiry and secret's hash
 *   /wharf/notifications/<endpoint>/                          webhook delivery (src/notifications), per endpoint
 *     queue/<ms>-<seq>-<rand>.<n>.json                         a batch of <n> events not yet delivered: the body to POST
 *     lease                                                    JSON: which replica delivers now, and until when
 *
 * Distribution ignores `_wharf` (it skips `_`-prefixed directories it does not know) and never looks
 * outside `/docker/registry/v2`, so Wharf keeps its own data there. A link file holds a digest string,
 * exactly as Distribution writes it. The protocol behind `/wharf/gc` is described in src/gc/collect.ts.
 */
import { parseDigest, type Digest } from './digest.js';

export const V2_ROOT = '/docker/registry/v2';
export const BLOBS_ROOT = `${V2_ROOT}/blobs`;
export const REPOSITORIES_ROOT = `${V2_ROOT}/repositories`;
export const GC_ROOT = '/wharf/gc';
export const GC_TOUCHES_ROOT = `${GC_ROOT}/touches`;
export const GC_TOMBSTONES_ROOT = `${GC_ROOT}/tombstones`;
export const ROBOTS_ROOT = '/wharf/auth/robots';
export const NOTIFICATIONS_ROOT = '/wharf/notifications';

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
  | { kind: 'referrerEntry'; name: string; subject: Digest; digest: Digest }
  | { kind: 'gcTouch'; digest: Digest }
  | { kind: 'gcTombstone'; digest: Digest }
  | { kind: 'gcLease' }
  | { kind: 'gcLastRun' }
  | { kind: 'robotToken'; id: string }
  | { kind: 'notificationQueueDir'; endpoint: string }
  | { kind: 'notificationQueueEntry'; endpoint: string; entry: string }
  | { kind: 'notificationLease'; endpoint: string };

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
    case 'gcTouch':
      return `${GC_TOUCHES_ROOT}/${spec.digest.algorithm}/${spec.digest.hex.slice(0, 2)}/${spec.digest.hex}`;
    case 'gcTombstone':
      return `${GC_TOMBSTONES_ROOT}/${spec.digest.algorithm}/${spec.digest.hex.slice(0, 2)}/${spec.digest.hex}`;
    case 'gcLease':
      return `${GC_ROOT}/lease`;
    case 'robotToken':
      return `${ROBOTS_ROOT}/${spec.id}.json`;
    case 'gcLastRun':
      return `${GC_ROOT}/last-run.json`;
    case 'notificationQueueDir':
      return `${NOTIFICATIONS_ROOT}/${pathComponent(spec.endpoint)}/queue`;
    case 'notificationQueueEntry':
      return `${NOTIFICATIONS_ROOT}/${pathComponent(spec.endpoint)}/queue/${spec.entry}`;
    case 'notificationLease':
      return `${NOTIFICATIONS_ROOT}/${pathComponent(spec.endpoint)}/lease`;
  }
}

/**
 * A free-form name (a webhook endpoint's) as one path component, readable and reversible: bytes
 * outside `[A-Za-z0-9.-]`, `_` itself and a leading `.` become `_<hex>`.
 */
export function pathComponent(name: string): string {
  let out = '';
  for (const [i, byte] of Buffer.from(name, 'utf8').entries()) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9-]/.test(ch) || (ch === '.' && i > 0) ? ch : `_${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** What a file found by walking the tree is: the inverse of `pathFor` for the files GC and `du` read. */
export type ParsedPath =
  | { kind: 'blobData'; digest: Digest }
  | { kind: 'layerLink'; name: string; digest: Digest }
  | { kind: 'manifestRevisionLink'; name: string; digest: Digest }
  | { kind: 'tagCurrentLink'; name: string; tag: string }
  | { kind: 'tagIndexEntryLink'; name: string; tag: string; digest: Digest }
  | { kind: 'referrerEntry'; name: string; subject: Digest; digest: Digest }
  | { kind: 'gcTouch'; digest: Digest }
  | { kind: 'gcTombstone'; digest: Digest };

const ALG = '([a-z0-9]+)';
const HEX = '([0-9a-f]+)';
// A repository name never has a component starting with `_`, so the first `/_` ends it.
const NAME = '([^_][^]*?)';
const TAG = '([^/]+)';
const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
const PARSERS: readonly [RegExp, (m: string[]) => ParsedPath | undefined][] = [
  [
    new RegExp(`^${escapeRe(BLOBS_ROOT)}/${ALG}/[0-9a-f]{2}/${HEX}/data$`),
    ([, a, h]) => withDigest(a, h, (digest) => ({ kind: 'blobData', digest })),
  ],
  [
    new RegExp(`^${escapeRe(REPOSITORIES_ROOT)}/${NAME}/_layers/${ALG}/${HEX}/link$`),
    ([, name = '', a, h]) => withDigest(a, h, (digest) => ({ kind: 'layerLink', name, digest })),
  ],
  [
    new RegExp(`^${escapeRe(REPOSITORIES_ROOT)}/${NAME}/_manifests/revisions/${ALG}/${HEX}/link$`),
    ([, name = '', a, h]) => withDigest(a, h, (digest) => ({ kind: 'manifestRevisionLink', name, digest })),
  ],
  [
    new RegExp(`^${escapeRe(REPOSITORIES_ROOT)}/${NAME}/_manifests/tags/${TAG}/current/link$`),
    ([, name = '', tag = '']) => ({ kind: 'tagCurrentLink', name, tag }),
  ],
  [
    new RegExp(`^${escapeRe(REPOSITORIES_ROOT)}/${NAME}/_manifests/tags/${TAG}/index/${ALG}/${HEX}/link$`),
    ([, name = '', tag = '', a, h]) =>
      withDigest(a, h, (digest) => ({ kind: 'tagIndexEntryLink', name, tag, digest })),
  ],
  [
    new RegExp(`^${escapeRe(REPOSITORIES_ROOT)}/${NAME}/_wharf/referrers/${ALG}/${HEX}/${ALG}/${HEX}$`),
    ([, name = '', sa, sh, a, h]) =>
      withDigest(sa, sh, (subject) =>
        withDigest(a, h, (digest) => ({ kind: 'referrerEntry', name, subject, digest })),
      ),
  ],
  [
    new RegExp(`^${escapeRe(GC_TOUCHES_ROOT)}/${ALG}/[0-9a-f]{2}/${HEX}$`),
    ([, a, h]) => withDigest(a, h, (digest) => ({ kind: 'gcTouch', digest })),
  ],
  [
    new RegExp(`^${escapeRe(GC_TOMBSTONES_ROOT)}/${ALG}/[0-9a-f]{2}/${HEX}$`),
    ([, a, h]) => withDigest(a, h, (digest) => ({ kind: 'gcTombstone', digest })),
  ],
];

function withDigest(
  algorithm: string | undefined,
  hex: string | undefined,
  make: (digest: Digest) => ParsedPath | undefined,
): ParsedPath | undefined {
  const digest = parseDigest(`${algorithm ?? ''}:${hex ?? ''}`);
  return digest ? make(digest) : undefined;
}

/** Classifies a file path; `undefined` for anything GC does not read (upload data, foreign files). */
export function parsePath(path: string): ParsedPath | undefined {
  for (const [pattern, make] of PARSERS) {
    const m = pattern.exec(path);
    if (m) return make(m);
  }
  return undefined;
}

/** The last path component: a listed child's own name. */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
