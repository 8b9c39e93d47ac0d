// The filesystem driver. Files sit where Distribution's filesystem driver puts them (`<root><path>`),
// so either registry can serve a tree the other wrote. Whatever appears at a final path appears whole:
// small files are written to `<root>/.tmp/` and renamed or linked into place, and `move` (how an upload
// becomes a blob) fsyncs the file, renames it and fsyncs the directory.
import { randomUUID } from 'node:crypto';
import { constants, readFile as readFileCallback } from 'node:fs';
import {
  link,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  stat,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import {
  InvalidOffsetError,
  InvalidPathError,
  PathNotFoundError,
  type FileInfo,
  type FileWriter,
  type ReadOptions,
  type StorageDriver,
  type WalkOptions,
} from '../driver.js';
import { wrapDriver, type WrapOptions } from '../base.js';
import { FileReader, freshBuffers } from './reader.js';
import { FilesystemWriter } from './writer.js';

export interface FilesystemDriverParameters {
  /** Directory holding the tree; created on first write. */
  readonly rootdirectory: string;
}

const DRIVER_NAME = 'filesystem';
/** Temp files live inside the root so that rename and link stay on one filesystem. */
const TEMP_DIR = '.tmp';
// Measured here: 256 MiB served at ~1.1 GB/s with 1 MiB reads, ~1.6 GB/s with 2 MiB, little more beyond.
const READ_BUFFER = 2 << 20;
/** A directory we just created may be pruned by a concurrent delete before we use it; try again. */
const PARENT_RETRIES = 8;

export function createFilesystemDriver(
  params: FilesystemDriverParameters,
  options?: WrapOptions,
): StorageDriver {
  return wrapDriver(new FilesystemDriver(params), options);
}

function errorCode(err: unknown): string | undefined {
  if (err instanceof Error && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

/** The raw driver; use `createFilesystemDriver`, which checks paths before they get here. */
export class FilesystemDriver implements StorageDriver {
  readonly name = DRIVER_NAME;
  readonly root: string;
  private readonly tempDir: string;

  constructor(params: FilesystemDriverParameters) {
    if (!params.rootdirectory) throw new Error('filesystem driver: rootdirectory must not be empty');
    this.root = resolve(params.rootdirectory);
    this.tempDir = join(this.root, TEMP_DIR);
  }

  getContent(path: string): Promise<Buffer> {
    // The callback readFile: a link read through a FileHandle (open, stat, readFile, close) cost
    // about 200 µs of CPU here, this about 40. A directory fails with EISDIR, which is "not found".
    return new Promise((resolve, reject) => {
      readFileCallback(this.fullPath(path), (err, data) => {
        if (!err) {
          resolve(data);
          return;
        }
        const failure = this.notFound(err, path);
        reject(failure instanceof Error ? failure : err);
      });
    });
  }

  async putContent(path: string, content: Buffer | string): Promise<void> {
    const temp = await this.writeTemp(content);
    try {
      await this.withParent(this.fullPath(path), (full) => rename(temp, full));
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await syncDir(dirname(this.fullPath(path)));
  }

  async putContentIfAbsent(path: string, content: Buffer | string): Promise<boolean> {
    const temp = await this.writeTemp(content);
    try {
      // link() fails with EEXIST instead of replacing: the filesystem decides who was first.
      await this.withParent(this.fullPath(path), (full) => link(temp, full));
    } catch (err) {
      if (errorCode(err) === 'EEXIST') return false;
      throw err;
    } finally {
      await unlink(temp).catch(() => undefined);
    }
    await syncDir(dirname(this.fullPath(path)));
    return true;
  }

  async reader(path: string, options: ReadOptions = {}): Promise<Readable> {
    const offset = options.offset ?? 0;
    let handle: FileHandle;
    try {
      handle = await open(this.fullPath(path), 'r');
    } catch (err) {
      throw this.notFound(err, path);
    }
    try {
      const info = await handle.stat();
      if (info.isDirectory()) throw new PathNotFoundError(path, this.name);
      if (offset > info.size) throw new InvalidOffsetError(path, offset, this.name);
      if (offset === info.size || options.length === 0) {
        await handle.close();
        return Readable.from([], { objectMode: false });
      }
    } catch (err) {
      await handle.close();
      throw err;
    }
    const length = options.length ?? Number.MAX_SAFE_INTEGER;
    return new FileReader(handle, offset, length, options.buffers ?? freshBuffers(READ_BUFFER));
  }

  async writer(path: string, append: boolean): Promise<FileWriter> {
    const full = this.fullPath(path);
    const flags = constants.O_WRONLY | constants.O_APPEND;
    let handle: FileHandle;
    if (append) {
      try {
        handle = await open(full, flags);
      } catch (err) {
        throw this.notFound(err, path);
      }
    } else {
      handle = await this.withParent(full, (f) =>
        open(f, flags | constants.O_CREAT | constants.O_TRUNC, 0o644),
      );
    }
    let size: number;
    try {
      size = (await handle.stat()).size;
    } catch (err) {
      await handle.close();
      throw err;
    }
    return new FilesystemWriter(handle, size, full, {
      driver: this.name,
      remove: async () => {
        await unlink(full).catch((err: unknown) => {
          if (errorCode(err) !== 'ENOENT') throw err;
        });
        await this.pruneParents(full);
      },
    });
  }

  async stat(path: string): Promise<FileInfo> {
    try {
      const info = await stat(this.fullPath(path));
      const isDir = info.isDirectory();
      return { path, size: isDir ? 0 : info.size, modTime: info.mtime, isDir };
    } catch (err) {
      if (path === '/' && errorCode(err) === 'ENOENT') {
        return { path, size: 0, modTime: new Date(0), isDir: true };
      }
      throw this.notFound(err, path);
    }
  }

  async statFile(path: string): Promise<FileInfo | undefined> {
    try {
      const info = await stat(this.fullPath(path));
      return info.isDirectory() ? undefined : { path, size: info.size, modTime: info.mtime, isDir: false };
    } catch (err) {
      const failure = this.notFound(err, path);
      if (failure instanceof PathNotFoundError) return undefined;
      throw failure;
    }
  }

  async list(path: string): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.fullPath(path));
    } catch (err) {
      if (path === '/' && errorCode(err) === 'ENOENT') return [];
      throw this.notFound(err, path);
    }
    const prefix = path === '/' ? '/' : `${path}/`;
    return this.visible(path, names).map((name) => prefix + name);
  }

  async move(sourcePath: string, destPath: string): Promise<void> {
    const source = this.fullPath(sourcePath);
    // The bytes must be durable before the name is: a crash must not leave a short file at destPath.
    let handle: FileHandle;
    try {
      handle = await open(source, 'r');
    } catch (err) {
      throw this.notFound(err, sourcePath);
    }
    try {
      if ((await handle.stat()).isDirectory()) throw new PathNotFoundError(sourcePath, this.name);
      await handle.sync();
    } finally {
      await handle.close();
    }
    const dest = this.fullPath(destPath);
    try {
      await this.withParent(dest, (full) => rename(source, full));
    } catch (err) {
      // Still ENOENT after the retries: the source went away since we opened it.
      if (errorCode(err) === 'ENOENT') throw new PathNotFoundError(sourcePath, this.name);
      throw err;
    }
    await syncDir(dirname(dest));
    await this.pruneParents(source);
  }

  async delete(path: string): Promise<void> {
    const full = this.fullPath(path);
    try {
      await stat(full);
    } catch (err) {
      throw this.notFound(err, path);
    }
    await rm(full, { recursive: true, force: true });
    await this.pruneParents(full);
  }

  async walk(path: string, options: WalkOptions): Promise<void> {
    const full = this.fullPath(path);
    try {
      if (!(await stat(full)).isDirectory()) throw new PathNotFoundError(path, this.name);
    } catch (err) {
      if (path === '/' && errorCode(err) === 'ENOENT') return;
      throw this.notFound(err, path);
    }
    await this.walkDir(path, options);
  }

  redirectURL(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  private async walkDir(path: string, options: WalkOptions): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.fullPath(path));
    } catch (err) {
      // Removed while we walked: there is nothing left below it to visit.
      if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return;
      throw err;
    }
    const prefix = path === '/' ? '/' : `${path}/`;
    for (const name of this.visible(path, names)) {
      const child = prefix + name;
      let info: FileInfo;
      try {
        info = await this.stat(child);
      } catch (err) {
        if (err instanceof PathNotFoundError) continue;
        throw err;
      }
      const decision = await options.onEntry(info);
      if (info.isDir && decision !== 'skip') await this.walkDir(child, options);
    }
  }

  /** Sorted names as the contract sees them: the temp directory is not part of the tree. */
  private visible(path: string, names: string[]): string[] {
    const shown = path === '/' ? names.filter((n) => n !== TEMP_DIR) : names;
    return shown.sort();
  }

  private fullPath(path: string): string {
    if (path === `/${TEMP_DIR}` || path.startsWith(`/${TEMP_DIR}/`)) {
      throw new InvalidPathError(path, this.name);
    }
    return path === '/' ? this.root : this.root + path;
  }

  /** ENOENT/ENOTDIR/EISDIR-on-read become PathNotFoundError; typed errors pass; the rest is base's job. */
  private notFound(err: unknown, path: string): unknown {
    const code = errorCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR')
      return new PathNotFoundError(path, this.name);
    return err;
  }

  /** Runs `op` on `full` after creating its parent, again if a concurrent prune removed the parent. */
  private async withParent<T>(full: string, op: (full: string) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        await mkdir(dirname(full), { recursive: true });
        return await op(full);
      } catch (err) {
        if (errorCode(err) !== 'ENOENT' || attempt >= PARENT_RETRIES) throw err;
      }
    }
  }

  /** Removes now-empty directories above `full`, up to but not including the root (as object stores do). */
  private async pruneParents(full: string): Promise<void> {
    for (
      let dir = dirname(full);
      dir.length > this.root.length && dir.startsWith(this.root);
      dir = dirname(dir)
    ) {
      try {
        await rmdir(dir);
      } catch (err) {
        const code = errorCode(err);
        if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOENT') return;
        throw err;
      }
    }
  }

  /** Writes `content` to a fresh temp file and fsyncs it, so the name we give it later points at whole data. */
  private async writeTemp(content: Buffer | string): Promise<string> {
    const temp = join(this.tempDir, randomUUID());
    const handle = await this.withTempDir(() => open(temp, 'wx', 0o644));
    try {
      await handle.writeFile(content);
      await handle.sync();
    } catch (err) {
      await handle.close();
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await handle.close();
    return temp;
  }

  private async withTempDir<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
      await mkdir(this.tempDir, { recursive: true });
      return op();
    }
  }
}

async function syncDir(dir: string): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(dir, 'r');
  } catch (err) {
    // Pruned by a concurrent delete: nothing of ours is left in it to make durable.
    if (errorCode(err) === 'ENOENT') return;
    throw err;
  }
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
