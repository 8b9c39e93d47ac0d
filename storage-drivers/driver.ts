/**
 * The storage driver contract. Every backend (filesystem, S3, in-memory) implements `StorageDriver`;
 * the registry core sees nothing else of storage. Drivers import nothing from `src/`.
 *
 * Paths are absolute within the driver's root, '/'-separated, and match `PATH_PATTERN`
 * (e.g. `/docker/registry/v2/blobs/sha256/ab/abcd…/data`). `/` itself names the root and is valid
 * only for `list`, `stat` and `walk`. A driver never sees `..`, empty components or a trailing slash:
 * `base.ts` rejects them with `InvalidPathError` before the driver is called.
 *
 * Errors: every method rejects with one of the typed errors below. `PathNotFoundError` when the path
 * (file or, for `list`/`walk`/`delete`, directory) does not exist; `InvalidPathError` for a malformed
 * path; `InvalidOffsetError` for a reader offset past the end; anything else is `StorageDriverError`
 * wrapping the backend's error as `cause`.
 *
 * Where a kind of path is wrong for a method (`list`/`walk` on a file, `getContent`/`reader`/`move` of a
 * directory) the answer is `PathNotFoundError`. Errors thrown by a `walk` callback reach the caller as they are.
 *
 * Directories are implicit: writing `/a/b/c` makes `/a` and `/a/b` exist for `list`, `stat` and `walk`;
 * deleting the last file under a directory makes the directory disappear (object stores behave so,
 * and the filesystem driver prunes empty parents to match).
 */
import type { Readable, Writable } from 'node:stream';

/** The characters a path may hold; `base.ts` additionally rejects `.` and `..` components. */
export const PATH_PATTERN = /^(\/[A-Za-z0-9._:-]+)+$/;

export interface FileInfo {
  /** The path as given (or, from `walk`/`list`, as found). */
  readonly path: string;
  /** Size in bytes; 0 for a directory. */
  readonly size: number;
  readonly modTime: Date;
  readonly isDir: boolean;
}

/**
 * A stream that writes one file. Bytes written are NOT visible to `getContent`/`reader` under `path`
 * with any guarantee until `commit()` resolves; after `commit()` the whole content is visible at once.
 *
 * `end()` (or the end of a `pipeline` into it) flushes what was written so that a later
 * `writer(path, true)` can append to it (resumable uploads); it does not commit.
 * `cancel()` discards everything written through this writer and any earlier appended content.
 * After `commit()` or `cancel()`, the writer must not be used again.
 */
export interface FileWriter extends Writable {
  /** Bytes in the file so far: the size it had when opened for append, plus what was written. */
  readonly size: number;
  /** The file's path on this machine, when the driver writes a local file (others leave it unset). */
  readonly localPath?: string;
  /** Resolves when all written bytes are durable and visible at `path`. Implies `end()`. */
  commit(): Promise<void>;
  /** Discards the content; the path does not exist afterwards. Implies `end()`. */
  cancel(): Promise<void>;
}

export interface ReadOptions {
  /** First byte to read. An offset equal to the size gives an empty stream; past it, `InvalidOffsetError`. */
  readonly offset?: number;
  /** How many bytes to read at most; the stream ends early at end of file. */
  readonly length?: number;
  /**
   * Where a driver that reads into buffers of its own choosing (the filesystem) may take them from,
   * instead of allocating one per read. Drivers are free to ignore it.
   */
  readonly buffers?: ReadBuffers;
}

/** Read buffers lent to a reader; `take` is called for each read, from the reader's `_read`. */
export interface ReadBuffers {
  /** A buffer the reader may fill and push; `stream` is the reader taking it. */
  take(stream: Readable): Buffer;
}

/** `'skip'` not to descend into a directory; nothing (undefined) to go on. */
export type WalkDecision = 'skip' | undefined;

export interface WalkOptions {
  /**
   * Called for every file and directory below the start path, depth first, siblings in lexical order of
   * their names, a directory before its children (so `a`, `a/x`, `a-b`; an object store listing flat keys
   * must reorder). Return `'skip'` for a directory to not descend into it.
   */
  readonly onEntry: (info: FileInfo) => Promise<WalkDecision> | WalkDecision;
}

export interface StorageDriver {
  /** A short name for logs and metrics, e.g. `filesystem`. */
  readonly name: string;

  /** The whole content of a small file. */
  getContent(path: string): Promise<Buffer>;

  /** Writes a small file whole; readers see either the old content or the new, never a mix. */
  putContent(path: string, content: Buffer | string): Promise<void>;

  /**
   * Writes a small file only if no file is at `path`, atomically with respect to every other
   * `putContentIfAbsent` on the same path (one of two racing callers wins). Resolves `true` if this call
   * created the file and `false` if one was already there. Used for leases and first-writer-wins markers.
   */
  putContentIfAbsent(path: string, content: Buffer | string): Promise<boolean>;

  /** Streams a file's content from `offset`. The stream fails with `PathNotFoundError` up front, not later. */
  reader(path: string, options?: ReadOptions): Promise<Readable>;

  /**
   * Opens a writer. With `append`, continues a file left by an earlier writer's `end()`
   * (`PathNotFoundError` when there is none); without, starts empty (replacing any uncommitted content).
   */
  writer(path: string, append: boolean): Promise<FileWriter>;

  /** Metadata for a file or directory. */
  stat(path: string): Promise<FileInfo>;

  /**
   * The file that reads would find at `path`, or `undefined` (nothing, or a directory). Links, markers
   * and blobs are looked up this way on every manifest and blob request; an object store answers it with
   * one HEAD, where `stat` must list. What an ended writer left counts only where reads see it too (on
   * the filesystem, not on S3).
   */
  statFile(path: string): Promise<FileInfo | undefined>;

  /** The direct children (full paths) of a directory, sorted. */
  list(path: string): Promise<string[]>;

  /**
   * Moves a file. The destination appears atomically with the whole content and replaces any file
   * there; the source is gone afterwards. Used to publish a completed upload as a blob.
   */
  move(sourcePath: string, destPath: string): Promise<void>;

  /** Deletes a file, or a directory and everything below it. */
  delete(path: string): Promise<void>;

  /** Visits everything below `path` (see `WalkOptions`). */
  walk(path: string, options: WalkOptions): Promise<void>;

  /**
   * A URL a client may fetch the file from directly (a presigned GET on object storage), valid for a
   * short time; `undefined` when the driver does not support redirects or has them turned off.
   */
  redirectURL(path: string, method: 'GET' | 'HEAD'): Promise<string | undefined>;
}

/** Base of every error a driver raises; `driver` names the backend. */
export class StorageDriverError extends Error {
  constructor(
    message: string,
    readonly driver: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class PathNotFoundError extends StorageDriverError {
  constructor(
    readonly path: string,
    driver: string,
  ) {
    super(`path not found: ${path}`, driver);
  }
}

export class InvalidPathError extends StorageDriverError {
  constructor(
    readonly path: string,
    driver: string,
  ) {
    super(`invalid path: ${path}`, driver);
  }
}

export class InvalidOffsetError extends StorageDriverError {
  constructor(
    readonly path: string,
    readonly offset: number,
    driver: string,
  ) {
    super(`invalid offset ${offset} for ${path}`, driver);
  }
}
