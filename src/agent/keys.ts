// The agent's signing key: a private ES256 JWK on disk, created on first start.
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { generateSigningKey, loadSigningKey, type JWK, type SigningKey } from '../verify/verdict.js';

const isCode = (err: unknown, code: string): boolean => (err as { code?: unknown } | null)?.code === code;

/** Reads the key at `path`; when there is none, generates one and writes it with mode 0600. */
export async function loadOrCreateSigningKey(path: string, logger: Logger): Promise<SigningKey> {
  try {
    return await readKey(path, logger);
  } catch (err) {
    if (!isCode(err, 'ENOENT')) throw err;
  }
  const { privateJwk, key } = await generateSigningKey();
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  try {
    // 'wx': two agents starting on one state dir must not each write their own key.
    await writeFile(path, `${JSON.stringify(privateJwk, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if (isCode(err, 'EEXIST')) return readKey(path, logger);
    throw err;
  }
  logger.info({ kid: key.kid, path }, 'generated a signing key');
  return key;
}

async function readKey(path: string, logger: Logger): Promise<SigningKey> {
  const text = await readFile(path, 'utf8');
  let jwk: JWK;
  try {
    jwk = JSON.parse(text) as JWK;
  } catch (err) {
    throw new Error(`signing key ${path} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const key = await loadSigningKey(jwk).catch((err: unknown) => {
    throw new Error(`signing key ${path}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  });
  if (((await stat(path)).mode & 0o077) !== 0) {
    logger.warn({ path }, 'the signing key file is readable by others; chmod 600 it');
  }
  logger.info({ kid: key.kid, path }, 'loaded the signing key');
  return key;
}
