/**
 * Webhooks, as CNCF Distribution's `notifications` and with its event envelope, but durable:
 *
 *   request ─▶ capture (koa, after the response is decided) ─▶ filter per endpoint ─▶ QueueWriter
 *     (memory, batches) ─▶ DurableQueue (storage: /wharf/notifications/<endpoint>/queue) ─▶ DeliveryLoop
 *     (one replica per endpoint, by lease) ─▶ POST ─▶ delete after 2xx, retry with backoff otherwise
 *
 * A request never waits for any of it. Events are delivered at least once, in queue order per endpoint;
 * receivers dedupe by event `id`. What is in storage survives restarts and is picked up at start.
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Middleware } from 'koa';
import type { Logger } from 'pino';
import type { Config } from '../../config/schema.js';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import type { AppState } from '../http/app.js';
import { pathFor } from '../registry/paths.js';
import type { Registry } from '../registry/registry.js';
import { createCapture } from './capture.js';
import { DeliveryLoop, redactURL, type DeliveryTiming, type EndpointSettings } from './delivery.js';
import type { Event } from './event.js';
import { StorageLease } from '../registry/storage-lease.js';
import type { NotificationObserver } from './observer.js';
import { DurableQueue, QueueWriter } from './queue.js';

export type NotificationsConfig = NonNullable<Config['notifications']>;
export type EndpointConfig = NotificationsConfig['endpoints'][number];

export interface NotificationsTiming extends DeliveryTiming {
  /** How long a delivery lease lasts unrenewed: how soon another replica takes over from a dead one. */
  readonly leaseTtlMs: number;
  /** What `close()` may spend storing buffered events; within the CLI's 5 s grace after the drain. */
  readonly closeTimeoutMs: number;
}

export const DEFAULT_TIMING: NotificationsTiming = {
  pollMs: 1_000,
  leaseRetryMs: 3_000,
  leaseTtlMs: 10_000,
  closeTimeoutMs: 3_000,
};

export interface NotificationsDeps {
  readonly driver: StorageDriver;
  readonly registry: Registry;
  readonly logger: Logger;
  readonly observer?: NotificationObserver;
  /** `http.host`, for target URLs. */
  readonly externalURL?: string;
  /** The port the registry listens on, for the events' `source.addr` (`<hostname>:<port>`). */
  readonly port?: number;
  readonly timing?: Partial<NotificationsTiming>;
}

export interface Notifications {
  /** Goes into `outer`: it must see the final status and headers of every request. */
  readonly middleware: Middleware<AppState>;
  /** Stores buffered events (bounded by `closeTimeoutMs`) and stops delivery. */
  close(): Promise<void>;
}

/** Distribution treats zero (or less) as "use the default" for these. */
export function endpointSettings(endpoint: EndpointConfig): EndpointSettings {
  return {
    name: endpoint.name,
    url: endpoint.url,
    headers: endpoint.headers,
    timeoutMs: endpoint.timeout > 0 ? endpoint.timeout : 1_000,
    threshold: endpoint.threshold > 0 ? endpoint.threshold : 10,
    backoffMs: endpoint.backoff > 0 ? endpoint.backoff : 1_000,
    maxBackoffMs: endpoint.maxbackoff,
    ...(endpoint.secret !== undefined && { secret: endpoint.secret }),
  };
}

/** Whether `endpoint` skips `event`: `ignoredmediatypes`, `ignore.mediatypes` and `ignore.actions`. */
export function isIgnored(
  endpoint: Pick<EndpointConfig, 'ignoredmediatypes' | 'ignore'>,
  event: Pick<Event, 'action' | 'target'>,
): boolean {
  const mediaType = event.target.mediaType;
  return (
    endpoint.ignoredmediatypes.includes(mediaType) ||
    endpoint.ignore.mediatypes.includes(mediaType) ||
    endpoint.ignore.actions.includes(event.action)
  );
}

export function createNotifications(config: NotificationsConfig, deps: NotificationsDeps): Notifications {
  const timing = { ...DEFAULT_TIMING, ...deps.timing };
  const logger = deps.logger.child({ component: 'notifications' });
  const owner = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const endpoints = config.endpoints.flatMap((endpoint) => {
    if (endpoint.disabled) {
      logger.info({ endpoint: endpoint.name }, 'notification endpoint disabled');
      return [];
    }
    const settings = endpointSettings(endpoint);
    const queue = new DurableQueue(deps.driver, endpoint.name);
    const lease = new StorageLease(
      deps.driver,
      pathFor({ kind: 'notificationLease', endpoint: endpoint.name }),
      owner,
      timing.leaseTtlMs,
    );
    const delivery = new DeliveryLoop(queue, lease, settings, timing, logger, deps.observer);
    const writer = new QueueWriter(queue, {
      logger,
      ...(deps.observer && { observer: deps.observer }),
      onStored: () => {
        delivery.wake();
      },
    });
    logger.info(
      { endpoint: endpoint.name, url: redactURL(endpoint.url), timeoutMs: settings.timeoutMs },
      'notification endpoint configured',
    );
    return [{ config: endpoint, writer, delivery }];
  });

  const capture = createCapture({
    registry: deps.registry,
    logger,
    includeReferences: config.events.includereferences,
    source: {
      addr: deps.port !== undefined ? `${hostname()}:${deps.port}` : hostname(),
      instanceID: randomUUID(),
    },
    ...(deps.externalURL !== undefined && { externalURL: deps.externalURL }),
    emit: (event) => {
      for (const endpoint of endpoints) {
        if (!isIgnored(endpoint.config, event)) endpoint.writer.add(event);
      }
    },
  });
  for (const endpoint of endpoints) endpoint.delivery.start();

  const passThrough: Middleware<AppState> = (_ctx, next) => next();
  return {
    middleware: endpoints.length > 0 ? capture.middleware : passThrough,
    close: async () => {
      const deadline = Date.now() + timing.closeTimeoutMs;
      await capture.settle(Math.max(0, deadline - Date.now()));
      await Promise.all(endpoints.map((e) => e.writer.close(deadline)));
      await Promise.all(endpoints.map((e) => e.delivery.stop()));
    },
  };
}
