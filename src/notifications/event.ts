/**
 * The event format: CNCF Distribution's (notifications/event.go), field for field and in its order, so
 * that receivers written for Distribution read Wharf's events unchanged. Events are delivered at least
 * once: a receiver dedupes by `id`.
 */
import { randomUUID } from 'node:crypto';

/** The envelope's media type: the Content-Type of every delivery. */
export const EVENTS_MEDIA_TYPE = 'application/vnd.docker.distribution.events.v2+json';

/** What Distribution reports as the media type of a blob (it does not record blob types). */
export const BLOB_MEDIA_TYPE = 'application/octet-stream';

export const EVENT_ACTIONS = ['push', 'pull', 'delete', 'mount'] as const;
export type EventAction = (typeof EVENT_ACTIONS)[number];

/** An OCI descriptor as Go's v1.Descriptor marshals it: the first three fields always present. */
export interface DescriptorRecord {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  data?: string;
  platform?: Record<string, unknown>;
  artifactType?: string;
}

export interface TargetRecord extends DescriptorRecord {
  /** Same as `size`, for older receivers; absent when 0. */
  length?: number;
  repository?: string;
  fromRepository?: string;
  url?: string;
  tag?: string;
  /** With `notifications.events.includereferences`: a manifest's config and layers, or an index's children. */
  references?: DescriptorRecord[];
}

export interface RequestRecord {
  /** The request's `X-Request-Id`. */
  id: string;
  addr?: string;
  host?: string;
  method: string;
  useragent: string;
}

export interface ActorRecord {
  name?: string;
}

export interface SourceRecord {
  /** `<hostname>:<port>` of the registry node. */
  addr?: string;
  /** Changes with every start of the process. */
  instanceID?: string;
}

export interface Event {
  id: string;
  timestamp: string;
  action: EventAction;
  target: TargetRecord;
  request: RequestRecord;
  actor: ActorRecord;
  source: SourceRecord;
}

export interface Envelope {
  events: Event[];
}

/** The target as Distribution orders it; empty optional fields are left out as Go's `omitempty` does. */
export function targetRecord(fields: {
  mediaType?: string;
  digest?: string;
  size?: number;
  repository?: string;
  fromRepository?: string;
  url?: string;
  tag?: string;
  references?: DescriptorRecord[];
}): TargetRecord {
  const size = fields.size ?? 0;
  return {
    mediaType: fields.mediaType ?? '',
    digest: fields.digest ?? '',
    size,
    ...(size > 0 && { length: size }),
    ...(fields.repository && { repository: fields.repository }),
    ...(fields.fromRepository && { fromRepository: fields.fromRepository }),
    ...(fields.url && { url: fields.url }),
    ...(fields.tag && { tag: fields.tag }),
    ...(fields.references && fields.references.length > 0 && { references: fields.references }),
  };
}

export function newEvent(
  action: EventAction,
  target: TargetRecord,
  context: { request: RequestRecord; actor: ActorRecord; source: SourceRecord },
  now = new Date(),
): Event {
  return {
    id: randomUUID(),
    timestamp: now.toISOString(),
    action,
    target,
    request: context.request,
    actor: context.actor,
    source: context.source,
  };
}

/** The body of one delivery. */
export function encodeEnvelope(events: readonly Event[]): Buffer {
  return Buffer.from(JSON.stringify({ events: [...events] } satisfies Envelope));
}

const DESCRIPTOR_KEYS = [
  'mediaType',
  'digest',
  'size',
  'urls',
  'annotations',
  'data',
  'platform',
  'artifactType',
] as const;

/**
 * The descriptors a manifest references, as Distribution's `References()`: an image's config then its
 * layers, an index's children. `[]` for anything that does not parse.
 */
export function manifestReferences(content: Buffer): DescriptorRecord[] {
  let doc: unknown;
  try {
    doc = JSON.parse(content.toString('utf8'));
  } catch {
    return [];
  }
  if (!isRecord(doc)) return [];
  const raw = Array.isArray(doc.manifests)
    ? (doc.manifests as unknown[])
    : [doc.config, ...(Array.isArray(doc.layers) ? (doc.layers as unknown[]) : [])];
  return raw.filter(isRecord).map((d) => {
    const out: Record<string, unknown> = { mediaType: '', digest: '', size: 0 };
    for (const key of DESCRIPTOR_KEYS) if (d[key] !== undefined) out[key] = d[key];
    return out as unknown as DescriptorRecord;
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
