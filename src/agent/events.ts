// Reads Distribution's notification envelope and picks the events the agent acts on: pushes of image
// manifests and indexes. Blobs, pulls, deletes and artifacts are not images to run.
import { z } from 'zod';
import { MANIFEST_MEDIA_TYPES } from '../client/registry-client.js';

export const EVENTS_MEDIA_TYPE = 'application/vnd.docker.distribution.events.v2+json';

export const IMAGE_MANIFEST_TYPES: ReadonlySet<string> = new Set([
  MANIFEST_MEDIA_TYPES.ociManifest,
  MANIFEST_MEDIA_TYPES.dockerManifest,
]);
export const INDEX_TYPES: ReadonlySet<string> = new Set([
  MANIFEST_MEDIA_TYPES.ociIndex,
  MANIFEST_MEDIA_TYPES.dockerManifestList,
]);

const DIGEST = /^sha256:[a-f0-9]{64}$/;
// The OCI distribution spec's repository name grammar.
const REPOSITORY = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;

// Loose on purpose: Distribution and Wharf add fields over time; only what the agent reads is checked.
const eventSchema = z.looseObject({
  id: z.string().optional(),
  action: z.string(),
  target: z.looseObject({
    mediaType: z.string().optional(),
    digest: z.string().optional(),
    repository: z.string().optional(),
    tag: z.string().optional(),
    artifactType: z.string().optional(),
  }),
});
const envelopeSchema = z.looseObject({ events: z.array(eventSchema) });

/** One manifest to verify, as the journal stores it. */
export interface Job {
  repository: string;
  digest: string;
  mediaType: string;
  /** The event's id, for the logs. */
  eventId?: string;
}

export class MalformedEventError extends Error {
  override name = 'MalformedEventError';
}

export interface Selection {
  jobs: Job[];
  /** Events the agent does not act on, with why (counted in the answer, logged at debug). */
  ignored: { id?: string; reason: string }[];
}

/** Parses the body of `POST /events`; throws MalformedEventError saying what is wrong. */
export function selectJobs(body: Buffer): Selection {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new MalformedEventError(`body is not JSON: ${(err as Error).message}`);
  }
  const parsed = envelopeSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    throw new MalformedEventError(`not a notification envelope: ${where}${issue?.message ?? 'invalid'}`);
  }
  const jobs: Job[] = [];
  const ignored: Selection['ignored'] = [];
  for (const [i, event] of parsed.data.events.entries()) {
    const { target } = event;
    const id = event.id;
    const ignore = (reason: string) => ignored.push({ ...(id !== undefined && { id }), reason });
    if (event.action !== 'push') {
      ignore(`action ${event.action}`);
      continue;
    }
    const mediaType = target.mediaType ?? '';
    if (!IMAGE_MANIFEST_TYPES.has(mediaType) && !INDEX_TYPES.has(mediaType)) {
      ignore(`media type ${mediaType || '(none)'}`);
      continue;
    }
    if (target.artifactType !== undefined && target.artifactType !== '') {
      ignore(`artifact ${target.artifactType}`);
      continue;
    }
    // A push event of a manifest without these cannot be acted on: the sender is broken, say so.
    if (target.digest === undefined || !DIGEST.test(target.digest)) {
      throw new MalformedEventError(`events.${i}.target.digest: expected sha256:<64 hex>`);
    }
    if (target.repository === undefined || !REPOSITORY.test(target.repository)) {
      throw new MalformedEventError(`events.${i}.target.repository: not a repository name`);
    }
    jobs.push({
      repository: target.repository,
      digest: target.digest,
      mediaType,
      ...(id !== undefined && { eventId: id }),
    });
  }
  return { jobs, ignored };
}
