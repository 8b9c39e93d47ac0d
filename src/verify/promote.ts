// `wharf promote`: a server-side copy of an image between repositories. Every blob is mounted
// (`POST ?mount=&from=`), so no blob byte passes through the client; manifests are PUT with their exact
// bytes, so the digest is unchanged. With a key set, a passing verdict is required first.
import type { Logger } from 'pino';
import {
  RegistryClient,
  RegistryError,
  MANIFEST_ACCEPT,
  type Descriptor,
} from '../client/registry-client.js';
import {
  decideImage,
  type Decision,
  type KeyProvider,
  type RefusalReason,
  type VerdictSource,
} from './decide.js';
import { ENVELOPE_MAX_SIZE, VERDICT_ARTIFACT_TYPE, VerdictError } from './verdict.js';

export type PromoteFailure = RefusalReason | 'not-found' | 'mount-failed';

/** Exit codes of `wharf promote`, one per way it can fail. */
export const PROMOTE_EXIT_CODES = {
  error: 1,
  usage: 2,
  'not-found': 3,
  'mount-failed': 4,
  'no-verdict': 10,
  failed: 11,
  untrusted: 12,
  'subject-mismatch': 13,
  invalid: 14,
} as const satisfies Record<PromoteFailure | 'error' | 'usage', number>;

export class PromoteError extends Error {
  constructor(
    readonly kind: PromoteFailure,
    message: string,
    readonly decision?: Decision,
  ) {
    super(message);
    this.name = 'PromoteError';
  }
}

export interface PromoteRequest {
  readonly client: RegistryClient;
  readonly from: { readonly repo: string; readonly ref: string };
  readonly to: { readonly repo: string; readonly tag: string };
  /** Set: require a passing verdict signed by one of these keys. */
  readonly trustedKeys?: KeyProvider;
  /** Copy the verdicts along, so the target repository shows them too (default true). */
  readonly copyVerdicts?: boolean;
  readonly logger?: Logger;
}

export interface PromoteResult {
  readonly digest: string;
  readonly mediaType: string;
  /** Blobs mounted into the target (config, layers, children's, verdicts'). */
  readonly mounted: number;
  /** Verdict manifests copied along. */
  readonly verdicts: readonly string[];
  readonly decision?: Decision;
}

/** Verdicts read over HTTP from one repository. */
export function httpVerdictSource(client: RegistryClient, repo: string): VerdictSource {
  const missing = (what: string, digest: string) => (err: unknown) => {
    if (err instanceof RegistryError && err.status === 404) {
      throw new VerdictError('malformed', `${what} ${digest} is not in ${repo}`);
    }
    throw err;
  };
  return {
    referrers: async (digest) => (await client.referrers(repo, digest, VERDICT_ARTIFACT_TYPE)).manifests,
    manifest: (digest) =>
      client.getManifest(repo, digest).then((m) => m.bytes, missing('verdict manifest', digest)),
    blob: (digest) =>
      client.getBlob(repo, digest, ENVELOPE_MAX_SIZE).catch(missing('verdict envelope', digest)),
  };
}

interface ParsedManifest {
  readonly blobs: Descriptor[];
  readonly children: Descriptor[];
}

const NON_DISTRIBUTABLE =
  /^application\/vnd\.(docker\.image\.rootfs\.foreign|oci\.image\.layer\.nondistributable)\./;

function parse(bytes: Buffer, where: string): ParsedManifest {
  let doc: { config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] };
  try {
    doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
  } catch {
    throw new Error(`${where} is not JSON`);
  }
  const blobs = [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])].filter(
    (d) => typeof d.digest === 'string' && !NON_DISTRIBUTABLE.test(d.mediaType),
  );
  return { blobs, children: (doc.manifests ?? []).filter((d) => typeof d.digest === 'string') };
}

/** A manifest fetched by digest, with what it references. */
interface Node {
  readonly digest: string;
  readonly bytes: Buffer;
  readonly mediaType: string;
  readonly parsed: ParsedManifest;
}

export async function promote(req: PromoteRequest): Promise<PromoteResult> {
  const { client, from, to, logger } = req;
  const source = `${from.repo}${from.ref.includes(':') ? '@' : ':'}${from.ref}`;
  let top;
  try {
    top = await client.getManifest(from.repo, from.ref, MANIFEST_ACCEPT);
  } catch (err) {
    if (err instanceof RegistryError && err.status === 404) {
      throw new PromoteError('not-found', `${source} not found (${err.code ?? 'HTTP 404'})`);
    }
    throw err;
  }
  const digest = top.digest;

  let decision: Decision | undefined;
  if (req.trustedKeys) {
    decision = await decideImage(httpVerdictSource(client, from.repo), digest, top.bytes, req.trustedKeys);
    if (!decision.passed) {
      throw new PromoteError(decision.reason, `${source} (${digest}): ${decision.message}`, decision);
    }
    logger?.info({ digest, verdicts: decision.verdicts, keyid: decision.keyid }, 'verdict accepted');
  }

  // The tree below the manifest: children first, so they are PUT before the index that names them.
  const nodes: Node[] = [];
  const visit = async (d: string, bytes: Buffer, mediaType: string) => {
    const parsed = parse(bytes, `manifest ${d}`);
    for (const child of parsed.children) {
      if (nodes.some((n) => n.digest === child.digest)) continue;
      const got = await client.getManifest(from.repo, child.digest, MANIFEST_ACCEPT);
      await visit(child.digest, got.bytes, got.mediaType);
    }
    nodes.push({ digest: d, bytes, mediaType, parsed });
  };
  await visit(digest, top.bytes, top.mediaType);

  let verdictNodes: Node[] = [];
  if (req.copyVerdicts !== false) {
    const subjects = [digest, ...nodes.filter((n) => n.digest !== digest).map((n) => n.digest)];
    for (const subject of subjects) {
      const index = await client.referrers(from.repo, subject, VERDICT_ARTIFACT_TYPE);
      for (const v of index.manifests) {
        if (verdictNodes.some((n) => n.digest === v.digest)) continue;
        const got = await client.getManifest(from.repo, v.digest, MANIFEST_ACCEPT);
        verdictNodes.push({ ...got, parsed: parse(got.bytes, `verdict ${v.digest}`) });
      }
    }
    verdictNodes = verdictNodes.filter((n) => n.parsed.children.length === 0);
  }

  const mounted = new Set<string>();
  for (const node of [...nodes, ...verdictNodes]) {
    for (const blob of node.parsed.blobs) {
      if (mounted.has(blob.digest)) continue;
      if (!(await client.mountBlob(to.repo, blob.digest, from.repo))) {
        throw new PromoteError(
          'mount-failed',
          `blob ${blob.digest} could not be mounted from ${from.repo} into ${to.repo} (the registry offered ` +
            'an upload instead, 202); no bytes were copied',
        );
      }
      mounted.add(blob.digest);
    }
  }
  logger?.debug({ mounted: mounted.size }, 'blobs mounted');

  const put = async (node: Node, ref: string) => {
    const stored = await client.putManifest(to.repo, ref, node.bytes, node.mediaType);
    if (stored !== node.digest) {
      throw new Error(`${to.repo}:${ref}: the registry stored ${stored}, not ${node.digest}`);
    }
  };
  // Children and the image by digest, then its verdicts (their subject now exists), the tag last: in a
  // quarantined target the tag becomes pullable with its verdict already there.
  for (const node of nodes) await put(node, node.digest);
  for (const node of verdictNodes) await put(node, node.digest);
  const image = nodes.at(-1);
  if (image === undefined) throw new Error('nothing to promote');
  await put(image, to.tag);

  return {
    digest,
    mediaType: top.mediaType,
    mounted: mounted.size,
    verdicts: verdictNodes.map((n) => n.digest),
    ...(decision && { decision }),
  };
}
