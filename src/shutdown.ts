import type { Logger } from 'pino';

export interface SignalShutdown {
  readonly logger: Logger;
  /** Signals that start the shutdown; a second one exits at once, without draining. */
  readonly signals: readonly NodeJS.Signals[];
  /** Drains and closes; the process exits 0 once it resolves, 1 if it rejects. */
  readonly close: () => Promise<void>;
  /** Added to the 'shutting down' line. */
  readonly fields?: Record<string, unknown>;
  readonly message?: string;
  /** Exits 1 when closing takes longer than this: a guard against a close that hangs. */
  readonly timeoutMs?: number;
}

/** How a long-running command (`serve`, `agent`) ends on a signal: drain, log, exit 0. */
export function shutDownOnSignals(opts: SignalShutdown): void {
  const { logger } = opts;
  let closing = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (closing) {
      logger.warn({ signal }, 'second signal, exiting without draining');
      process.exit(1);
    }
    closing = true;
    logger.info({ signal, ...opts.fields }, opts.message ?? 'shutting down');
    if (opts.timeoutMs !== undefined) {
      setTimeout(() => {
        logger.error('shutdown did not finish in time, exiting');
        process.exit(1);
      }, opts.timeoutMs).unref();
    }
    opts.close().then(
      () => {
        logger.info('shut down');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  for (const signal of opts.signals) process.on(signal, shutdown);
}
