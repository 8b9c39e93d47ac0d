// Per-request HTTP metrics. The `route` label is the router's pattern (`/v2/*name/manifests/:reference`),
// never the raw path, so that a registry with many repositories keeps a bounded number of series.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Middleware } from 'koa';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { AppState } from '../http/app.js';

/** The route label of a request no route answered (a 404 on an unknown path, a 401 before routing). */
export const UNMATCHED_ROUTE = 'unmatched';
// Any other method becomes `other`: clients choose the method, and each value would be a new series.
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const UPLOAD_PATH = /\/blobs\/uploads\//;
// Registry requests range from a cached manifest (well under 1 ms) to a multi-GiB blob (minutes).
const BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

type Labels = { readonly route: string; readonly method: string; readonly status: string };

/** What one route, method and status has done so far; counters are read from here when scraped. */
interface Series {
  readonly labels: Labels;
  readonly observe: (seconds: number) => void;
  requests: number;
  bytesIn: number;
  bytesOut: number;
}

/**
 * The HTTP metrics and the middleware that feeds them. Counts are plain numbers per label set, handed
 * to prom-client when scraped: prom-client's own `inc` hashes the labels on every call, which costs
 * more than all the rest of a request's bookkeeping here.
 */
export function httpMetrics(prefix: string, registers: Registry[]): Middleware<AppState> {
  const all: Series[] = [];
  const byRoute = new Map<string, Map<string, Series>>();
  const duration = new Histogram({
    name: `${prefix}http_request_duration_seconds`,
    help: 'Time from receiving a request to the last byte of its response, by route pattern, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: BUCKETS,
    registers,
  });
  const seriesOf = (route: string, method: string, status: string): Series => {
    let routes = byRoute.get(route);
    if (routes === undefined) {
      routes = new Map();
      byRoute.set(route, routes);
    }
    const key = `${method} ${status}`;
    let series = routes.get(key);
    if (series === undefined) {
      const labels = { route, method, status };
      const child = duration.labels(labels);
      series = {
        labels,
        observe: (seconds) => {
          child.observe(seconds);
        },
        requests: 0,
        bytesIn: 0,
        bytesOut: 0,
      };
      routes.set(key, series);
      all.push(series);
    }
    return series;
  };

  new Counter({
    name: `${prefix}http_requests_total`,
    help: 'HTTP requests answered, by route pattern, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers,
    collect() {
      this.reset();
      for (const s of all) this.inc(s.labels, s.requests);
    },
  });
  const bytes = (name: string, help: string, read: (s: Series) => number) =>
    new Counter({
      name: `${prefix}${name}`,
      help,
      labelNames: ['route', 'method'] as const,
      registers,
      collect() {
        this.reset();
        for (const s of all) {
          const n = read(s);
          if (n > 0) this.inc({ route: s.labels.route, method: s.labels.method }, n);
        }
      },
    });
  bytes(
    'http_request_body_bytes_total',
    'Request body bytes received, by route pattern and method',
    (s) => s.bytesIn,
  );
  bytes(
    'http_response_body_bytes_total',
    'Response body bytes sent, by route pattern and method',
    (s) => s.bytesOut,
  );
  let inFlight = 0;
  let uploads = 0;
  new Gauge({
    name: `${prefix}http_requests_in_flight`,
    help: 'HTTP requests being served now',
    registers,
    collect() {
      this.set(inFlight);
    },
  });
  new Gauge({
    name: `${prefix}uploads_active`,
    help: 'Blob upload requests (POST, PATCH, PUT under /blobs/uploads/) receiving or committing data now',
    registers,
    collect() {
      this.set(uploads);
    },
  });

  return async (ctx, next) => {
    const started = process.hrtime.bigint();
    const method = METHODS.has(ctx.method) ? ctx.method : 'other';
    const upload =
      (method === 'POST' || method === 'PATCH' || method === 'PUT') && UPLOAD_PATH.test(ctx.path);
    const bytesIn = hasBody(ctx.req) ? countRequestBytes(ctx.req) : () => 0;
    const bytesOut = countResponseBytes(ctx.res);
    inFlight++;
    if (upload) uploads++;
    // A response ends after the middleware returns (koa streams the body then), or when the client
    // goes away: 'close' covers both, once.
    ctx.res.once('close', () => {
      inFlight--;
      if (upload) uploads--;
      const matched = (ctx as { _matchedRoute?: unknown })._matchedRoute;
      const route = typeof matched === 'string' ? matched : UNMATCHED_ROUTE;
      const series = seriesOf(route, method, String(ctx.res.statusCode));
      series.requests++;
      series.observe(Number(process.hrtime.bigint() - started) / 1e9);
      series.bytesIn += bytesIn();
      series.bytesOut += bytesOut();
    });
    await next();
  };
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

function byteLength(chunk: unknown, encoding: unknown): number {
  if (typeof chunk === 'string') {
    return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  }
  if (chunk instanceof Uint8Array) return chunk.byteLength;
  return 0;
}

/**
 * Counts body bytes as node's HTTP parser hands them to the request stream. Listening for 'data' would
 * switch the stream to flowing mode under the route that reads it; wrapping `push` observes without
 * changing how or when the route consumes the body.
 */
function countRequestBytes(req: IncomingMessage): () => number {
  let bytes = 0;
  const push = req.push.bind(req);
  req.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    bytes += byteLength(chunk, encoding);
    return push(chunk, encoding);
  };
  return () => bytes;
}

/** Counts body bytes written to the response, whether koa ends it with a buffer or pipes a stream. */
function countResponseBytes(res: ServerResponse): () => number {
  let bytes = 0;
  const write = res.write.bind(res) as (...args: unknown[]) => boolean;
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  res.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
    bytes += byteLength(chunk, rest[0]);
    return write(chunk, ...rest);
  }) as ServerResponse['write'];
  res.end = ((chunk?: unknown, ...rest: unknown[]): ServerResponse => {
    if (typeof chunk !== 'function') bytes += byteLength(chunk, rest[0]);
    return end(chunk, ...rest);
  }) as ServerResponse['end'];
  return () => bytes;
}
