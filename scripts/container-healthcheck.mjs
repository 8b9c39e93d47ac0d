// The container image's HEALTHCHECK (see Dockerfile), run by node itself: the image has no curl.
// Healthy: /healthz answers 200. A build without /healthz (404 there) counts as healthy when /v2/ answers
// 200 or 401 (auth on). The address and TLS come from the config exactly as `wharf serve` reads it in the
// image: $WHARF_CONFIG plus the WHARF_*/REGISTRY_* overrides, so `-e WHARF_HTTP_ADDR=:8080` is followed.
// Exit 0 healthy, 1 not; the one line printed lands in `docker inspect`'s health log.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { loadConfig } from '../dist/config/load.js';
import { parseListenAddress } from '../dist/config/schema.js';

const TIMEOUT_MS = 3000;

function status(target, path) {
  return new Promise((resolve, reject) => {
    const send = target.tls ? httpsRequest : httpRequest;
    // Liveness of our own process, not a trust decision: a self-signed certificate is fine here.
    const req = send(
      { host: target.host, port: target.port, path, timeout: TIMEOUT_MS, rejectUnauthorized: false },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

async function check() {
  const { config } = loadConfig({ file: process.env.WHARF_CONFIG || undefined, env: process.env });
  const { host, port } = parseListenAddress(config.http.addr);
  // A wildcard listen address is reached over loopback.
  const loopback = host === undefined || host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const target = { host: loopback, port, tls: config.http.tls !== undefined };
  const shownHost = loopback.includes(':') ? `[${loopback}]` : loopback;
  const base = `${target.tls ? 'https' : 'http'}://${shownHost}:${port}`;

  const healthz = await status(target, '/healthz');
  if (healthz === 200) return `${base}/healthz: 200`;
  if (healthz !== 404) throw new Error(`${base}/healthz: ${healthz}`);
  const v2 = await status(target, '/v2/');
  if (v2 === 200 || v2 === 401) return `${base}/v2/: ${v2} (no /healthz)`;
  throw new Error(`${base}/v2/: ${v2}`);
}

check().then(
  (line) => {
    process.stdout.write(`healthy: ${line}\n`);
    process.exit(0);
  },
  (err) => {
    process.stdout.write(`unhealthy: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
