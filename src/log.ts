import { pino, type DestinationStream, type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { Config } from '../config/schema.js';

export type { Logger };

// Credentials must never reach a log line, whoever logs the object that holds them.
const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  'headers.authorization',
  ...['password', 'secret', 'secretkey', 'accesskey', 'token', 'access_token', 'authorization'].flatMap(
    (key) => [key, `*.${key}`],
  ),
];

/**
 * The process logger: JSON lines (stdout unless `destination` is given), or human-readable lines
 * with `formatter: text`, or by default when stdout is a terminal. pino-pretty runs in-process as a stream, so no worker thread is started.
 */
export function createLogger(cfg: Config['log'], opts: { destination?: DestinationStream } = {}): Logger {
  const options = {
    level: cfg.level,
    base: { pid: process.pid, ...cfg.fields },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  const text =
    cfg.formatter === 'text' ||
    (cfg.formatter === undefined && opts.destination === undefined && process.stdout.isTTY);
  if (text) {
    const destination = opts.destination ?? process.stdout;
    const colorize = opts.destination === undefined && process.stdout.isTTY;
    return pino(options, pretty({ destination, colorize, sync: true, ignore: 'pid,hostname' }));
  }
  // Synchronous: pino's default stdout stream writes on the thread pool, and a line logged just
  // before process.exit ('shut down', a fatal error) could be lost with the write still in flight.
  return pino(options, opts.destination ?? pino.destination({ dest: 1, sync: true }));
}
