/**
 * What webhook delivery reports as it works; the metrics module implements it (counters, a gauge of
 * pending events). Kept apart so that notifications do not depend on prom-client.
 */
export interface NotificationObserver {
  /** An event was written to the durable queue of `endpoint`. */
  queued(endpoint: string): void;
  /** A batch of `events` events reached `endpoint` (2xx), `seconds` after the request started. */
  delivered(endpoint: string, events: number, seconds: number): void;
  /** One delivery attempt failed (`reason`: an HTTP status as text, `timeout` or `network`). */
  failed(endpoint: string, reason: string): void;
  /** Events waiting in the queue of `endpoint`, read when the metrics are scraped. */
  pending(endpoint: string, count: number): void;
}
