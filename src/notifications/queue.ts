import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { StorageDriver } from '../../storage-drivers/driver.js';
import { PathNotFoundError } from '../../storage-drivers/driver.js';
import { deleteIfExists } from '../registry/links.js';
import { baseName, pathFor } from '../registry/paths.js';
import { encodeEnvelope, type Event } from './event.js';
import type { NotificationObserver } from './observer.js';

/** One stored batch: its path, and how many events it holds (read from the name, not the content). */
export interface QueueEntry {
  readonly path: string;
  readonly events: number;
}

// <ms since epoch>-<sequence in this process>-<random>.<events>.json: names sort in write order within
// a replica, and roughly by time across replicas.
const ENTRY_NAME = /^\d{13}-\d{6}-[0-9a-f]{8}\.(\d+)\.json$/;

let sequence = 0;

/**
 * The durable queue of one endpoint, in storage (so on every driver and shared by replicas): one object
 * per batch, holding exactly the envelope that is POSTed, so a retry sends the same bytes.
 */
export class DurableQueue {
  constructor(
    private readonly driver: StorageDriver,
    readonly endpoint: string,
  ) {}

  async append(events: readonly Event[]): Promise<QueueEntry> {
    const stamp = String(Date.now()).padStart(13, '0');
    const seq = String(sequence++ % 1_000_000).padStart(6, '0');
    const entry = `${stamp}-${seq}-${randomBytes(4).toString('hex')}.${events.length}.json`;
    const path = pathFor({ kind: 'notificationQueueEntry', endpoint: this.endpoint, entry });
    await this.driver.putContent(path, encodeEnvelope(events));
    return { path, events: events.length };
  }

  /** Every entry, oldest first. Files of other shapes are not ours and are left alone. */
  async list(): Promise<QueueEntry[]> {
    let paths: string[];
    try {
      paths = await this.driver.list(pathFor({ kind: 'notificationQueueDir', endpoint: this.endpoint }));
    } catch (err) {
      if (err instanceof PathNotFoundError) return [];
      throw err;
    }
    const entries: QueueEntry[] = [];
    for (const path of paths) {
      const match = ENTRY_NAME.exec(baseName(path));
      if (match) entries.push({ path, events: Number(match[1]) });
    }
    return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /** The entry's body; `undefined` when it is gone (delivered by another replica meanwhile). */
  async read(entry: QueueEntry): Promise<Buffer | undefined> {
    try {
      return await this.driver.getContent(entry.path);
    } catch (err) {
      if (err instanceof PathNotFoundError) return undefined;
      throw err;
    }
  }

  async remove(entry: QueueEntry): Promise<void> {
    await deleteIfExists(this.driver, entry.path);
  }
}

export interface QueueWriterOptions {
  readonly logger: Logger;
  readonly observer?: NotificationObserver;
  /** Events per stored batch (and so per delivery) at most. */
  readonly maxBatch?: number;
  /** Events held in memory while storage is slow or down; more are dropped, with an error logged. */
  readonly maxBuffered?: number;
  /** Called after a batch is stored, to wake delivery. */
  readonly onStored?: () => void;
}

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;

/**
 * Takes events from requests without ever blocking them and stores them in batches in the background.
 * While a write is in flight the next batch gathers, so batches grow with load and a lone event is
 * written at once. A failed write keeps its events at the front of the buffer and is retried.
 */
export class QueueWriter {
  private buffer: Event[] = [];
  private flushing: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private dropped = 0;
  private closed = false;
  private readonly maxBatch: number;
  private readonly maxBuffered: number;

  constructor(
    private readonly queue: DurableQueue,
    private readonly options: QueueWriterOptions,
  ) {
    this.maxBatch = options.maxBatch ?? 100;
    this.maxBuffered = options.maxBuffered ?? 10_000;
  }

  /** Events waiting in memory. */
  get buffered(): number {
    return this.buffer.length;
  }

  add(event: Event): void {
    if (this.closed || this.buffer.length >= this.maxBuffered) {
      // Logged once per run of drops, not once per event.
      if (this.dropped++ === 0) {
        this.options.logger.error(
          { endpoint: this.queue.endpoint, buffered: this.buffer.length, closed: this.closed },
          'notification event dropped: queue buffer full or closed',
        );
      }
      return;
    }
    this.buffer.push(event);
    this.schedule();
  }

  /**
   * Stores what is buffered, trying until `deadline` (ms since epoch); then refuses new events. Events
   * still in memory at the deadline are lost, and logged as such.
   */
  async close(deadline: number): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    while (Date.now() < deadline) {
      if (this.flushing) await this.flushing;
      if (this.buffer.length === 0) return;
      this.flushing = this.flush();
      await this.flushing;
      if (this.buffer.length > 0) await new Promise((r) => setTimeout(r, 100));
    }
    if (this.buffer.length > 0) {
      this.options.logger.error(
        { endpoint: this.queue.endpoint, events: this.buffer.length },
        'notification events lost at shutdown: storage did not take them in time',
      );
    }
  }

  private schedule(): void {
    if (this.flushing || this.retryTimer) return;
    // On the next turn, so that the events of one request land in one batch.
    this.flushing = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flush());
  }

  private async flush(): Promise<void> {
    try {
      while (this.buffer.length > 0) {
        const batch = this.buffer.slice(0, this.maxBatch);
        try {
          await this.queue.append(batch);
        } catch (err) {
          this.failures++;
          const retryInMs = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (this.failures - 1));
          this.options.logger.warn(
            { endpoint: this.queue.endpoint, err, buffered: this.buffer.length, retryInMs },
            'notification queue write failed',
          );
          if (!this.closed) {
            this.retryTimer = setTimeout(() => {
              this.retryTimer = undefined;
              this.schedule();
            }, retryInMs);
            this.retryTimer.unref();
          }
          return;
        }
        this.buffer.splice(0, batch.length);
        this.failures = 0;
        if (this.dropped > 0) {
          this.options.logger.error(
            { endpoint: this.queue.endpoint, events: this.dropped },
            'notification events were dropped while the buffer was full',
          );
          this.dropped = 0;
        }
        for (let i = 0; i < batch.length; i++) this.options.observer?.queued(this.queue.endpoint);
        this.options.onStored?.();
      }
    } finally {
      this.flushing = undefined;
    }
  }
}
