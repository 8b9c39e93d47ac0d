import assert from 'node:assert/strict';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import {
  InvalidOffsetError,
  InvalidPathError,
  PathNotFoundError,
  StorageDriverError,
  type StorageDriver,
} from '../driver.js';

const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789';

export function randomName(length = 10): string {
  let out = '';
  for (let i = 0; i < length; i++) out += NAME_CHARS.charAt(randomInt(NAME_CHARS.length));
  return out;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<unknown>) {
    assert.ok(Buffer.isBuffer(chunk), 'a reader yields Buffers');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Writes with backpressure: waits for 'drain' whenever `write` says so. */
export async function writeChunks(writer: Writable, chunks: Iterable<Buffer>): Promise<void> {
  for (const chunk of chunks) {
    if (!writer.write(chunk)) await once(writer, 'drain');
  }
}

export async function endWriter(writer: Writable): Promise<void> {
  writer.end();
  await finished(writer);
}

/** `data` cut into pieces of random sizes between 1 byte and `max`. */
export function* randomChunks(data: Buffer, max: number): Generator<Buffer> {
  for (let pos = 0; pos < data.length;) {
    const size = Math.min(data.length - pos, 1 + randomInt(max));
    yield data.subarray(pos, pos + size);
    pos += size;
  }
}

export { randomBytes };

type Check = (err: unknown) => true;

export function isNotFound(driver: StorageDriver, path: string): Check {
  return (err) => {
    assert.ok(err instanceof PathNotFoundError, `expected PathNotFoundError for ${path}, got ${String(err)}`);
    assert.equal(err.path, path);
    assert.equal(err.driver, driver.name);
    return true;
  };
}

export function isInvalidPath(driver: StorageDriver, path: string): Check {
  return (err) => {
    assert.ok(
      err instanceof InvalidPathError,
      `expected InvalidPathError for ${JSON.stringify(path)}, got ${String(err)}`,
    );
    assert.equal(err.path, path);
    assert.equal(err.driver, driver.name);
    return true;
  };
}

export function isInvalidOffset(driver: StorageDriver, path: string, offset: number): Check {
  return (err) => {
    assert.ok(err instanceof InvalidOffsetError, `expected InvalidOffsetError, got ${String(err)}`);
    assert.equal(err.path, path);
    assert.equal(err.offset, offset);
    assert.equal(err.driver, driver.name);
    return true;
  };
}

export function isStorageError(err: unknown): true {
  assert.ok(err instanceof StorageDriverError, `expected a StorageDriverError, got ${String(err)}`);
  return true;
}

/** Deletes, treating "not there" as done. */
export async function deleteIfExists(driver: StorageDriver, path: string): Promise<void> {
  try {
    await driver.delete(path);
  } catch (err) {
    if (!(err instanceof PathNotFoundError)) throw err;
  }
}
