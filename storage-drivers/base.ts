// What every driver shares: path and offset checks before the driver runs, typed errors after it,
// and one hook for metrics. Drivers implement only the raw operations and go through `wrapDriver`.
import type { Readable } from 'node:stream';
import {
  InvalidOffsetError,
  InvalidPathError,
  PATH_PATTERN,
  StorageDriverError,
  type FileInfo,
  type FileWriter,
  type ReadOptions,
  type StorageDriver,
  type WalkOptions,
} from './driver.js';

export type DriverOperation =
  | 'getContent'
  | 'putContent'
  | 'putContentIfAbsent'
  | 'reader'
  | 'writer'
  | 'writer.commit'
  | 'writer.cancel'
  | 'stat'
  | 'statFile'
  | 'list'
  | 'move'
  | 'delete'
  | 'walk'
  | 'redirectURL';

export interface WrapOptions {
  /** Called once per operation, after it settles; `error` is the (typed) error it rejected with. */
  readonly onOperation?: (
    op: DriverOperation,
    driverName: string,
    durationMs: number,
    error?: unknown,
  ) => void;
}

/** `true` for a path a driver may be given; `/` only where `allowRoot` (list, stat, walk). */
export function isValidPath(path: unknown, allowRoot = false): path is string {
  if (typeof path !== 'string') return false;
  if (path === '/') return allowRoot;
  // PATH_PATTERN alone lets `.` and `..` through as components.
  return PATH_PATTERN.test(path) && !/\/\.\.?(?=\/|$)/.test(path);
}

/** Keeps typed driver errors as they are and wraps anything else, with the backend error as `cause`. */
export function toStorageDriverError(err: unknown, driver: string, context: string): StorageDriverError {
  if (err instanceof StorageDriverError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new StorageDriverError(`${context}: ${detail}`, driver, { cause: err });
}

export function wrapDriver(raw: StorageDriver, options: WrapOptions = {}): StorageDriver {
  const name = raw.name;
  const observe = options.onOperation;

  function checkPath(path: unknown, allowRoot = false): asserts path is string {
    if (!isValidPath(path, allowRoot)) throw new InvalidPathError(String(path), name);
  }

  async function run<T>(op: DriverOperation, context: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    let failure: StorageDriverError | undefined;
    try {
      return await fn();
    } catch (err) {
      failure = toStorageDriverError(err, name, `${op} ${context}`);
      throw failure;
    } finally {
      if (observe) {
        try {
          observe(op, name, performance.now() - started, failure);
        } catch {
          // A broken metrics hook must not fail storage operations.
        }
      }
    }
  }

  function wrapWriter(writer: FileWriter, path: string): FileWriter {
    const commit = writer.commit.bind(writer);
    const cancel = writer.cancel.bind(writer);
    writer.commit = () => run('writer.commit', path, commit);
    writer.cancel = () => run('writer.cancel', path, cancel);
    return writer;
  }

  return {
    name,

    getContent(path: string): Promise<Buffer> {
      return run('getContent', path, () => {
        checkPath(path);
        return raw.getContent(path);
      });
    },

    putContent(path: string, content: Buffer | string): Promise<void> {
      return run('putContent', path, () => {
        checkPath(path);
        return raw.putContent(path, content);
      });
    },

    putContentIfAbsent(path: string, content: Buffer | string): Promise<boolean> {
      return run('putContentIfAbsent', path, () => {
        checkPath(path);
        return raw.putContentIfAbsent(path, content);
      });
    },

    reader(path: string, readOptions: ReadOptions = {}): Promise<Readable> {
      return run('reader', path, () => {
        checkPath(path);
        const offset = readOptions.offset ?? 0;
        if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidOffsetError(path, offset, name);
        const length = readOptions.length;
        if (length !== undefined && (!Number.isSafeInteger(length) || length < 0)) {
          throw new StorageDriverError(`invalid read length ${length} for ${path}`, name);
        }
        const { buffers } = readOptions;
        return raw.reader(path, {
          offset,
          ...(length !== undefined && { length }),
          ...(buffers && { buffers }),
        });
      });
    },

    writer(path: string, append: boolean): Promise<FileWriter> {
      return run('writer', path, async () => {
        checkPath(path);
        return wrapWriter(await raw.writer(path, append), path);
      });
    },

    stat(path: string): Promise<FileInfo> {
      return run('stat', path, () => {
        checkPath(path, true);
        return raw.stat(path);
      });
    },

    statFile(path: string): Promise<FileInfo | undefined> {
      return run('statFile', path, () => {
        checkPath(path);
        return raw.statFile(path);
      });
    },

    list(path: string): Promise<string[]> {
      return run('list', path, () => {
        checkPath(path, true);
        return raw.list(path);
      });
    },

    move(sourcePath: string, destPath: string): Promise<void> {
      return run('move', `${sourcePath} -> ${destPath}`, () => {
        checkPath(sourcePath);
        checkPath(destPath);
        return raw.move(sourcePath, destPath);
      });
    },

    delete(path: string): Promise<void> {
      return run('delete', path, () => {
        checkPath(path);
        return raw.delete(path);
      });
    },

    async walk(path: string, walkOptions: WalkOptions): Promise<void> {
      // The caller's own errors from `onEntry` reach it unchanged, not wrapped as storage errors.
      let callerError: { error: unknown } | undefined;
      const onEntry: WalkOptions['onEntry'] = async (info) => {
        try {
          return await walkOptions.onEntry(info);
        } catch (error) {
          callerError = { error };
          throw error;
        }
      };
      try {
        await run('walk', path, () => {
          checkPath(path, true);
          return raw.walk(path, { onEntry });
        });
      } catch (err) {
        if (callerError) throw callerError.error;
        throw err;
      }
    },

    redirectURL(path: string, method: 'GET' | 'HEAD'): Promise<string | undefined> {
      return run('redirectURL', path, () => {
        checkPath(path);
        return raw.redirectURL(path, method);
      });
    },
  };
}
