// Quarantine (`verification.quarantine`): a pull BY TAG from a quarantined repository is refused with
// DENIED until a passing, trusted verdict is attached to the tag's image. Pulls BY DIGEST stay open:
// the agent pulls `repo@digest` to verify the image, and a digest names content exactly, so whoever
// holds one has either pushed the image or been given it on purpose.
import type { Middleware, ParameterizedContext } from 'koa';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Config } from '../../config/schema.js';
import { compileGlob } from '../auth/access.js';
import type { Descriptor } from '../client/registry-client.js';
import type { AppState } from '../http/app.js';
import { writeError } from '../http/errors.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { BlobUnknownError, ManifestUnknownError } from '../registry/errors.js';
import { isValidName, isValidTag } from '../registry/names.js';
import type { StoredManifest } from '../registry/manifests.js';
import type { Registry } from '../registry/registry.js';
import { decideImage, NO_VERDICT, type KeyProvider, type VerdictSource } from './decide.js';
import { TrustedKeys } from './trusted-keys.js';
import { ENVELOPE_MAX_SIZE, VERDICT_ARTIFACT_TYPE, VerdictError } from './verdict.js';

export interface QuarantineOptions {
  /** Repository globs (`*` within a component, `**` across them). */
  readonly repositories: readonly string[];
  readonly keys: KeyProvider;
  /** How long a passing decision is reused, in milliseconds. */
  readonly cacheTtlMs: number;
  readonly logger: Logger;
}

function digestOf(value: string): Digest {
  const digest = parseDigest(value);
  if (!digest) throw new VerdictError('malformed', `not a digest: ${value}`);
  return digest;
}

/** Verdicts read in-process from one repository: the referrers index, manifests and blobs of the core. */
export function coreVerdictSource(registry: Registry, name: string): VerdictSource {
  return {
    async referrers(digest) {
      const out: Descriptor[] = [];
      let last: string | undefined;
      do {
        const page = await registry.referrers.list(name, digestOf(digest), {
          artifactType: VERDICT_ARTIFACT_TYPE,
          n: 1000,
          ...(last !== undefined && { last }),
        });
        out.push(...page.items);
        last = page.next;
      } while (last !== undefined);
      return out;
    },
    async manifest(digest) {
      try {
        return (await registry.manifests.get(name, { digest: digestOf(digest) })).content;
      } catch (err) {
        if (err instanceof ManifestUnknownError) {
          throw new VerdictError('malformed', `verdict manifest ${digest} is not in ${name}`);
        }
        throw err;
      }
    },
    async blob(digest) {
      const parsed = digestOf(digest);
      const blob = await registry.blobs.lookup(name, parsed);
      if (!blob) throw new VerdictError('malformed', `verdict envelope ${digest} is not in ${name}`);
      if (blob.size > ENVELOPE_MAX_SIZE) {
        throw new VerdictError(
          'malformed',
          `verdict envelope ${digest} is larger than ${ENVELOPE_MAX_SIZE} bytes`,
        );
      }
      try {
        return await registry.blobs.readSmall(parsed);
      } catch (err) {
        if (err instanceof BlobUnknownError) {
          throw new VerdictError('malformed', `verdict envelope ${digest} is not in ${name}`);
        }
        throw err;
      }
    },
  };
}

type Ctx = ParameterizedContext<AppState>;

const MANIFEST_PATH = /^\/v2\/(.+)\/manifests\/([^/]+)$/;

/** The guard middleware: runs after auth, before the routes. */
export function quarantineMiddleware(registry: Registry, opts: QuarantineOptions): Middleware<AppState> {
  const globs = opts.repositories.map(compileGlob);
  const quarantined = new LRUCache<string, boolean>({ max: 10_000 });
  const isQuarantined = (name: string): boolean => {
    let hit = quarantined.get(name);
    if (hit === undefined) {
      hit = globs.some((g) => g.test(name));
      quarantined.set(name, hit);
    }
    return hit;
  };
  // Only passes are cached: a refusal must lift as soon as the agent's verdict lands.
  const passed = new LRUCache<string, true>({ max: 100_000, ttl: Math.max(opts.cacheTtlMs, 1) });

  /** Whether the image may be served; when not, the refusal is written to `ctx`. */
  const admit = async (ctx: Ctx, name: string, tag: string, manifest: StoredManifest): Promise<boolean> => {
    const digest = manifest.digest.toString();
    const key = `${name}@${digest}`;
    if (passed.has(key)) return true;
    let decision;
    try {
      decision = await decideImage(coreVerdictSource(registry, name), digest, manifest.content, opts.keys);
    } catch (err) {
      // The keys could not be had (agent down at start-up): refuse, and say it is temporary.
      ctx.state.log.error({ err, repository: name, tag, digest }, 'quarantine check failed');
      writeError(
        ctx,
        'UNAVAILABLE',
        `image ${name}:${tag} (${digest}) cannot be checked for a verdict now, retry later`,
      );
      return false;
    }
    if (decision.passed) {
      passed.set(key, true);
      return true;
    }
    ctx.state.log.info(
      { repository: name, tag, digest, reason: decision.reason, verdict: decision.verdict },
      'quarantined pull refused',
    );
    const why = decision.message === NO_VERDICT ? ' yet' : `: ${decision.message}`;
    writeError(ctx, 'DENIED', `image ${name}:${tag} (${digest}) has no passing verification verdict${why}`, {
      repository: name,
      tag,
      digest,
      reason: decision.reason,
    });
    return false;
  };

  return async (ctx, next) => {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      await next();
      return;
    }
    const match = MANIFEST_PATH.exec(ctx.path);
    const name = match?.[1];
    const tag = match?.[2];
    // Digests (anything with a colon) and malformed names go on; the routes answer those.
    if (
      name === undefined ||
      tag === undefined ||
      tag.includes(':') ||
      !isValidName(name) ||
      !isValidTag(tag)
    ) {
      await next();
      return;
    }
    if (!isQuarantined(name)) {
      await next();
      return;
    }

    let manifest;
    try {
      manifest = await registry.manifests.get(name, { tag });
    } catch (err) {
      if (err instanceof ManifestUnknownError) {
        await next();
        return;
      }
      throw err;
    }
    if (!(await admit(ctx, name, tag, manifest))) return;
    await next();
    // The tag may have moved between the check and the route's read: what is served must be checked.
    const served: unknown = ctx.response.get('Docker-Content-Digest');
    if (ctx.status !== 200 || typeof served !== 'string' || served === manifest.digest.toString()) return;
    const moved = parseDigest(served);
    const now = moved && (await registry.manifests.get(name, { digest: moved }).catch(() => undefined));
    if (now && (await admit(ctx, name, tag, now))) return;
    // Refused (admit wrote why) or gone: the checked image's headers must not stay on the refusal.
    ctx.remove('Docker-Content-Digest');
    ctx.remove('ETag');
    if (!now) writeError(ctx, 'UNAVAILABLE', `tag ${name}:${tag} moved while it was checked, retry`);
  };
}

/**
 * The `verification` section as a guard and its closer, or undefined when nothing is quarantined.
 * A trusted-keys file that cannot be read stops the server; a URL that does not answer yet is only
 * logged (the agent may start after the registry).
 */
export async function createQuarantine(
  registry: Registry,
  config: Config['verification'],
  logger: Logger,
): Promise<{ middleware: Middleware<AppState>; close: () => Promise<void> } | undefined> {
  if (!config || config.quarantine.length === 0 || config.trustedkeys === undefined) return undefined;
  const keys = new TrustedKeys(config.trustedkeys, { refreshMs: config.refreshinterval, logger });
  try {
    await keys.get();
  } catch (err) {
    if (!/^https?:/i.test(config.trustedkeys))
      throw new Error(`verification.trustedkeys: ${(err as Error).message}`, { cause: err });
    logger.warn(
      { err, location: config.trustedkeys },
      'trusted keys not available yet; quarantined pulls wait',
    );
  }
  logger.info({ repositories: config.quarantine, trustedkeys: config.trustedkeys }, 'quarantine on');
  return {
    middleware: quarantineMiddleware(registry, {
      repositories: config.quarantine,
      keys,
      cacheTtlMs: config.cachettl,
      logger,
    }),
    close: () => Promise.resolve(),
  };
}
