import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { readFile } from 'node:fs/promises';
import {
  createServer as createPlainServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:https';

/** How often the certificate and key files are checked for changes (cert-manager, a renewed Secret). */
const RELOAD_CHECK_MS = 10_000;
/** Renewals replace the two files one after the other: wait this long after a change for the other. */
const RELOAD_SETTLE_MS = 1_000;

/** What a reload of changed TLS files came to: the certificate now served, or why the old one stays. */
export type TlsReload = { readonly certificate: X509Certificate } | { readonly error: Error };

export interface HttpServerOptions {
  /** Called after each attempt to reload changed TLS files. */
  readonly onTlsReload?: (result: TlsReload) => void;
  /** For tests: how often the files are checked. */
  readonly tlsCheckMs?: number;
}

export interface TlsFiles {
  /** `http.tls.certificate`: PEM, the server certificate first, then any intermediates. */
  readonly certificate: string;
  /** `http.tls.key`: the PEM private key of that certificate. */
  readonly key: string;
}

/** A start-up problem with the TLS files, in one line that names the key and the file. */
export class TlsConfigError extends Error {
  override name = 'TlsConfigError';
}

async function readPem(path: string, key: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new TlsConfigError(`${key}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Reads and checks the certificate and key: readable, PEM, unencrypted, and belonging together. */
export async function loadTlsFiles(
  files: TlsFiles,
): Promise<{ cert: string; key: string; certificate: X509Certificate }> {
  const cert = await readPem(files.certificate, 'http.tls.certificate');
  const key = await readPem(files.key, 'http.tls.key');
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch (err) {
    throw new TlsConfigError(`http.tls.certificate: ${files.certificate} is not a PEM certificate`, {
      cause: err,
    });
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    const reason = /encrypted|passphrase/i.test(String(err)) ? 'is encrypted' : 'is not a PEM private key';
    throw new TlsConfigError(`http.tls.key: ${files.key} ${reason}`, { cause: err });
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new TlsConfigError(
      `http.tls.key: ${files.key} does not belong to the certificate in ${files.certificate}`,
    );
  }
  return { cert, key, certificate };
}

/**
 * The registry's HTTP/1.1 server: plain, or HTTPS when `http.tls` is set. Keep-alive on both. No
 * overall request timeout (a blob upload may take long), but a slow client must send its headers
 * within 30 s and may not go silent for more than 2 minutes mid-request.
 */
export async function createHttpServer(
  tls: TlsFiles | undefined,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  options: HttpServerOptions = {},
): Promise<{ server: Server; certificate?: X509Certificate }> {
  let server: Server;
  let certificate: X509Certificate | undefined;
  if (tls === undefined) {
    server = createPlainServer(handler);
  } else {
    const loaded = await loadTlsFiles(tls);
    certificate = loaded.certificate;
    const tlsServer = createTlsServer({ cert: loaded.cert, key: loaded.key, minVersion: 'TLSv1.2' }, handler);
    reloadOnChange(tlsServer, tls, options);
    server = tlsServer;
  }
  server.requestTimeout = 0;
  server.headersTimeout = 30_000;
  server.timeout = 120_000;
  server.keepAliveTimeout = 65_000;
  return certificate === undefined ? { server } : { server, certificate };
}

/**
 * Serves renewed certificates without a restart: new connections get the files' current content once
 * both are readable and belong together; until then (and if they never do) the previous pair stays.
 * Polling (stat), unlike fs.watch, also sees a Kubernetes Secret's symlink swap.
 */
function reloadOnChange(server: TlsServer, files: TlsFiles, options: HttpServerOptions): void {
  let settle: NodeJS.Timeout | undefined;
  const reload = async (): Promise<void> => {
    try {
      const loaded = await loadTlsFiles(files);
      server.setSecureContext({ cert: loaded.cert, key: loaded.key, minVersion: 'TLSv1.2' });
      options.onTlsReload?.({ certificate: loaded.certificate });
    } catch (err) {
      options.onTlsReload?.({ error: err instanceof Error ? err : new Error(String(err)) });
    }
  };
  const changed = (now: Stats, before: Stats): void => {
    if (now.mtimeMs === before.mtimeMs && now.ino === before.ino && now.size === before.size) return;
    clearTimeout(settle);
    settle = setTimeout(() => void reload(), RELOAD_SETTLE_MS);
    settle.unref();
  };
  const watch = { interval: options.tlsCheckMs ?? RELOAD_CHECK_MS, persistent: false };
  watchFile(files.certificate, watch, changed);
  watchFile(files.key, watch, changed);
  server.once('close', () => {
    clearTimeout(settle);
    unwatchFile(files.certificate, changed);
    unwatchFile(files.key, changed);
  });
}
