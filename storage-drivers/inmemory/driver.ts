// The in-memory driver: a tree of directories and files held in process memory, for tests. Every
// operation runs its change synchronously, so each is atomic with respect to the others (one of two racing
// `putContentIfAbsent` calls wins), and directories vanish with their last file as on an object store.
import { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import {
  InvalidOffsetError,
  PathNotFoundError,
  StorageDriverError,
  type FileInfo,
  type FileWriter,
  type ReadOptions,
  type StorageDriver,
  type WalkOptions,
} from '../driver.js';
import { wrapDriver, type WrapOptions } from '../base.js';

const DRIVER_NAME = 'inmemory';

interface FileNode {
  readonly kind: 'file';
  /** Chunks are copies nobody else holds, so they never change once stored. */
  chunks: Buffer[];
  size: number;
  modTime: Date;
}

interface DirNode {
  readonly kind: 'dir';
  readonly children: Map<string, Node>;
  readonly modTime: Date;
}

type Node = FileNode | DirNode;

export function createInMemoryDriver(options?: WrapOptions): StorageDriver {
  return wrapDriver(new InMemoryDriver(), options);
}

function newDir(): DirNode {
  return { kind: 'dir', children: new Map(), modTime: new Date() };
}

function newFile(chunks: Buffer[]): FileNode {
  return { kind: 'file', chunks, size: chunks.reduce((n, c) => n + c.length, 0), modTime: new Date() };
}

/** Runs `fn` now and reports its result or throw as a promise, as an async backend would. */
function settle<T>(fn: () => T): Promise<T> {
  return new Promise<T>((resolve) => {
    resolve(fn());
  });
}

function infoOf(path: string, node: Node): FileInfo {
  const modTime = new Date(node.modTime);
  return node.kind === 'dir'
    ? { path, size: 0, modTime, isDir: true }
    : { path, size: node.size, modTime, isDir: false };
}

function components(path: string): string[] {
  return path === '/' ? [] : path.slice(1).split('/');
}

function splitPath(path: string): { parent: string[]; name: string } {
  const parts = components(path);
  const name = parts.pop();
  if (name === undefined) throw new Error(`no file name in ${path}`);
  return { parent: parts, name };
}

function toBuffer(content: Buffer | string): Buffer {
  return typeof content === 'string' ? Buffer.from(content, 'utf8') : Buffer.from(content);
}

/** The raw driver; use `createInMemoryDriver`, which checks paths before they get here. */
export class InMemoryDriver implements StorageDriver {
  readonly name = DRIVER_NAME;
  private readonly root: DirNode = newDir();

  getContent(path: string): Promise<Buffer> {
    return settle(() => {
      const file = this.file(path);
      return Buffer.concat(file.chunks, file.size);
    });
  }

  putContent(path: string, content: Buffer | string): Promise<void> {
    return settle(() => {
      this.place(path, newFile([toBuffer(content)]));
    });
  }

  putContentIfAbsent(path: string, content: Buffer | string): Promise<boolean> {
    return settle(() => {
      if (this.find(path)?.kind === 'file') return false;
      this.place(path, newFile([toBuffer(content)]));
      return true;
    });
  }

  reader(path: string, options: ReadOptions = {}): Promise<Readable> {
    return settle(() => {
      const file = this.file(path);
      const offset = options.offset ?? 0;
      if (offset > file.size) throw new InvalidOffsetError(path, offset, this.name);
      const end = Math.min(file.size, options.length === undefined ? file.size : offset + options.length);
      // A snapshot: a later overwrite or append does not change what this reader streams.
      return Readable.from(slices([...file.chunks], offset, end), { objectMode: false });
    });
  }

  writer(path: string, append: boolean): Promise<FileWriter> {
    return settle(() => {
      let file: FileNode;
      if (append) {
        file = this.file(path);
      } else {
        file = newFile([]);
        this.place(path, file);
      }
      return new InMemoryWriter(file, () => {
        this.removeFile(path);
      });
    });
  }

  stat(path: string): Promise<FileInfo> {
    return settle(() => {
      const node = this.find(path);
      if (!node) throw new PathNotFoundError(path, this.name);
      return infoOf(path, node);
    });
  }

  statFile(path: string): Promise<FileInfo | undefined> {
    return settle(() => {
      const node = this.find(path);
      return node === undefined || node.kind === 'dir' ? undefined : infoOf(path, node);
    });
  }

  list(path: string): Promise<string[]> {
    return settle(() => {
      const prefix = path === '/' ? '/' : `${path}/`;
      return [...this.dir(path).children.keys()].sort().map((name) => prefix + name);
    });
  }

  move(sourcePath: string, destPath: string): Promise<void> {
    return settle(() => {
      const file = this.file(sourcePath);
      if (sourcePath === destPath) return;
      this.place(destPath, file);
      this.detach(sourcePath);
    });
  }

  delete(path: string): Promise<void> {
    return settle(() => {
      if (!this.find(path)) throw new PathNotFoundError(path, this.name);
      this.detach(path);
    });
  }

  async walk(path: string, options: WalkOptions): Promise<void> {
    const dir = await settle(() => this.dir(path));
    await this.walkDir(path, dir, options);
  }

  redirectURL(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  private async walkDir(path: string, dir: DirNode, options: WalkOptions): Promise<void> {
    const prefix = path === '/' ? '/' : `${path}/`;
    // Names first: the callback may change the tree while we go.
    for (const name of [...dir.children.keys()].sort()) {
      const node = dir.children.get(name);
      if (!node) continue;
      const child = prefix + name;
      const decision = await options.onEntry(infoOf(child, node));
      if (node.kind === 'dir' && decision !== 'skip') await this.walkDir(child, node, options);
    }
  }

  private find(path: string): Node | undefined {
    let node: Node = this.root;
    for (const part of components(path)) {
      if (node.kind !== 'dir') return undefined;
      const next = node.children.get(part);
      if (!next) return undefined;
      node = next;
    }
    return node;
  }

  private file(path: string): FileNode {
    const node = this.find(path);
    if (node?.kind !== 'file') throw new PathNotFoundError(path, this.name);
    return node;
  }

  private dir(path: string): DirNode {
    const node = this.find(path);
    if (node?.kind !== 'dir') throw new PathNotFoundError(path, this.name);
    return node;
  }

  /** Puts `file` at `path`, creating parent directories and replacing a file there. */
  private place(path: string, file: FileNode): void {
    const { parent, name } = splitPath(path);
    let dir = this.root;
    // A file in the way can only come before the first directory we create, so a failure creates nothing.
    for (const part of parent) {
      let next = dir.children.get(part);
      if (!next) {
        next = newDir();
        dir.children.set(part, next);
      }
      if (next.kind !== 'dir') throw new StorageDriverError(`not a directory: ${path}`, this.name);
      dir = next;
    }
    if (dir.children.get(name)?.kind === 'dir')
      throw new StorageDriverError(`is a directory: ${path}`, this.name);
    dir.children.set(name, file);
  }

  /** Removes the node at `path` and every directory above it that is left empty. */
  private detach(path: string): void {
    const parts = components(path);
    const dirs: DirNode[] = [this.root];
    for (const part of parts.slice(0, -1)) {
      const next = dirs[dirs.length - 1]?.children.get(part);
      if (next?.kind !== 'dir') return;
      dirs.push(next);
    }
    for (let i = parts.length - 1; i >= 0; i--) {
      const dir = dirs[i];
      const name = parts[i];
      if (!dir || name === undefined) return;
      dir.children.delete(name);
      if (dir.children.size > 0 || dir === this.root) return;
    }
  }

  private removeFile(path: string): void {
    if (this.find(path)?.kind === 'file') this.detach(path);
  }
}

function* slices(chunks: Buffer[], start: number, end: number): Generator<Buffer> {
  let pos = 0;
  for (const chunk of chunks) {
    const from = Math.max(start, pos);
    const to = Math.min(end, pos + chunk.length);
    if (from < to) yield chunk.subarray(from - pos, to - pos);
    pos += chunk.length;
    if (pos >= end) return;
  }
}

/** Appends straight into the file node, so a later `writer(path, true)` sees everything written. */
class InMemoryWriter extends Writable implements FileWriter {
  #state: 'open' | 'committed' | 'cancelled' = 'open';

  constructor(
    private readonly file: FileNode,
    private readonly remove: () => void,
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  get size(): number {
    return this.file.size;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#append(chunk);
    callback();
  }

  override _writev(
    chunks: { chunk: Buffer; encoding: BufferEncoding }[],
    callback: (error?: Error | null) => void,
  ): void {
    for (const { chunk } of chunks) this.#append(chunk);
    callback();
  }

  async commit(): Promise<void> {
    if (this.#state !== 'open') throw new StorageDriverError(`writer already ${this.#state}`, DRIVER_NAME);
    if (!this.writableEnded) this.end();
    await finished(this);
    this.#state = 'committed';
  }

  async cancel(): Promise<void> {
    if (this.#state === 'committed') throw new StorageDriverError('writer already committed', DRIVER_NAME);
    this.#state = 'cancelled';
    if (!this.closed) {
      const closed = new Promise((resolve) => this.once('close', resolve));
      this.destroy();
      await closed;
    }
    this.remove();
  }

  #append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    // Copied: the caller may reuse its buffer once the write callback ran.
    this.file.chunks.push(Buffer.from(chunk));
    this.file.size += chunk.length;
    this.file.modTime = new Date();
  }
}
