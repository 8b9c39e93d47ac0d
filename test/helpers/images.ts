// Builds small test images FROM scratch with Debian's static busybox. Each image carries random content,
// so two builds never share layers unless asked, and a pulled image can be checked byte for byte.
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { busyboxPath, docker, skopeo } from './tools.js';

export { requireTool, requireTools, inCI } from './tools.js';

export interface BuildImageOptions {
  /** Number of extra layers with random data, on top of the busybox layer (default 0). */
  layers?: number;
  /** Bytes of random data per extra layer (default 64 KiB). */
  layerBytes?: number;
  /** Text stored at /marker; random when omitted. */
  marker?: string;
}

export interface BuiltImage {
  /** The reference the image was tagged with. */
  ref: string;
  /** Local image id (config digest). */
  id: string;
  /** Contents of /marker in the image. */
  marker: string;
  /** sha256 hex of each /data/<i>.bin, in layer order. */
  layerSums: string[];
}

/**
 * `docker build`s an image FROM scratch: busybox at /bin/busybox, /marker, and `layers` files of random
 * data at /data/<i>.bin, each in its own layer. The default command prints the marker.
 */
export async function buildImage(ref: string, opts: BuildImageOptions = {}): Promise<BuiltImage> {
  const layers = opts.layers ?? 0;
  const layerBytes = opts.layerBytes ?? 64 * 1024;
  const marker = opts.marker ?? `wharf-e2e-${randomBytes(8).toString('hex')}`;
  const ctx = await mkdtemp(join(tmpdir(), 'wharf-e2e-build-'));
  try {
    await copyFile(busyboxPath, join(ctx, 'busybox'));
    await writeFile(join(ctx, 'marker'), marker);
    const lines = ['FROM scratch', 'COPY busybox /bin/busybox', 'COPY marker /marker'];
    const layerSums: string[] = [];
    for (let i = 0; i < layers; i++) {
      const data = randomBytes(layerBytes);
      layerSums.push(createHash('sha256').update(data).digest('hex'));
      await writeFile(join(ctx, `${i}.bin`), data);
      lines.push(`COPY ${i}.bin /data/${i}.bin`);
    }
    lines.push('ENV PATH=/bin', 'CMD ["busybox", "cat", "/marker"]', '');
    await writeFile(join(ctx, 'Dockerfile'), lines.join('\n'));
    await docker(['build', '--quiet', '--force-rm', '--tag', ref, ctx], { timeoutMs: 120_000 });
    const { stdout } = await docker(['image', 'inspect', '--format', '{{.Id}}', ref]);
    return { ref, id: stdout.trim(), marker, layerSums };
  } finally {
    await rm(ctx, { recursive: true, force: true });
  }
}

/** Removes local images by reference or id; missing ones are ignored. */
export async function removeImages(...refs: string[]): Promise<void> {
  for (const ref of refs) {
    try {
      await docker(['rmi', '--force', ref]);
    } catch {
      // Already gone is fine for cleanup.
    }
  }
}

/** True when the Docker engine holds an image with this reference. */
export async function imageExists(ref: string): Promise<boolean> {
  try {
    await docker(['image', 'inspect', ref]);
    return true;
  } catch {
    return false;
  }
}

/** Runs the image with no network and returns what the command printed. */
export async function runImage(ref: string, cmd: string[] = []): Promise<string> {
  const { stdout } = await docker(['run', '--rm', '--network', 'none', ref, ...cmd], { timeoutMs: 60_000 });
  return stdout;
}

/** Checks a pulled image's content in one container run: the marker and every data layer's checksum. */
export async function verifyImageContent(ref: string, image: BuiltImage): Promise<string | undefined> {
  const files = image.layerSums.map((_, i) => `/data/${i}.bin`);
  const script = ['busybox cat /marker', 'echo', ...files.map((f) => `busybox sha256sum ${f}`)].join(' && ');
  const [marker = '', ...sums] = (await runImage(ref, ['busybox', 'sh', '-c', script])).split('\n');
  if (marker !== image.marker) {
    return `marker: got ${JSON.stringify(marker)}, want ${JSON.stringify(image.marker)}`;
  }
  for (const [i, want] of image.layerSums.entries()) {
    const got = sums[i]?.split(/\s+/)[0];
    if (got !== want) return `layer ${i}: got sha256 ${String(got)}, want ${want}`;
  }
  return undefined;
}

export const sha256Digest = (data: Buffer | string): string =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** The manifest bytes the registry serves for `ref` (`skopeo inspect --raw`), with their digest. */
export async function rawManifest(ref: string): Promise<{ raw: string; digest: string; json: ManifestJson }> {
  const { stdout } = await skopeo(['inspect', '--tls-verify=false', '--raw', `docker://${ref}`]);
  return { raw: stdout, digest: sha256Digest(stdout), json: JSON.parse(stdout) as ManifestJson };
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string };
  annotations?: Record<string, string>;
}

/** The fields of an image manifest or index the tests read. */
export interface ManifestJson {
  schemaVersion: number;
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
}

/** Tags of a repository as `skopeo list-tags` reports them, sorted. */
export async function listTags(repoRef: string): Promise<string[]> {
  const { stdout } = await skopeo(['list-tags', '--tls-verify=false', `docker://${repoRef}`]);
  return (JSON.parse(stdout) as { Tags: string[] }).Tags.sort();
}

/** A way to move an image between the local Docker engine and a registry. */
export interface Client {
  name: 'docker' | 'skopeo';
  /** Pushes a locally built image to `ref` (host/repo:tag). */
  push(image: BuiltImage, ref: string): Promise<void>;
  /** Pulls `ref` into the local Docker engine under the same name. */
  pull(ref: string): Promise<void>;
}

export const clients: readonly Client[] = [
  {
    name: 'docker',
    async push(image, ref) {
      await docker(['tag', image.id, ref]);
      await docker(['push', ref]);
    },
    async pull(ref) {
      await docker(['pull', ref]);
    },
  },
  {
    name: 'skopeo',
    async push(image, ref) {
      await skopeo(['copy', '--dest-tls-verify=false', `docker-daemon:${image.id}`, `docker://${ref}`]);
    },
    async pull(ref) {
      await skopeo(['copy', '--src-tls-verify=false', `docker://${ref}`, `docker-daemon:${ref}`]);
    },
  },
];

/** Platforms of a `docker manifest` list, in order; the first one is what `docker pull` picks here. */
export interface IndexEntry {
  ref: string;
  os: string;
  arch: string;
}

/**
 * Pushes a Docker manifest list at `listRef` over already pushed images, with `docker manifest
 * create/annotate/push`. The registry gets the children by digest (mounted from their repositories).
 * Returns the list's digest.
 */
export async function pushManifestList(listRef: string, entries: IndexEntry[]): Promise<string> {
  await docker(['manifest', 'create', '--insecure', listRef, ...entries.map((e) => e.ref)]);
  for (const e of entries) {
    await docker(['manifest', 'annotate', '--os', e.os, '--arch', e.arch, listRef, e.ref]);
  }
  const { stdout } = await docker(['manifest', 'push', '--insecure', '--purge', listRef]);
  const digest = /sha256:[0-9a-f]{64}\s*$/.exec(stdout.trim())?.[0];
  if (digest === undefined) throw new Error(`no digest in docker manifest push output: ${stdout}`);
  return digest.trim();
}

/** Files of one image in an OCI layout directory, with the layers applied in order (no whiteouts). */
export interface OciLayoutImage {
  manifestDigest: string;
  manifest: ManifestJson;
  files: Map<string, Buffer>;
}

/** Reads the image tagged `tag` in an OCI image layout, checking every blob against its digest. */
export async function readOciLayout(dir: string, tag: string): Promise<OciLayoutImage> {
  const readBlob = async (digest: string): Promise<Buffer> => {
    const [alg, hex] = digest.split(':');
    const data = await readFile(join(dir, 'blobs', String(alg), String(hex)));
    if (sha256Digest(data) !== digest) throw new Error(`blob ${digest} in ${dir} does not match its digest`);
    return data;
  };
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as ManifestJson;
  const desc = index.manifests?.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (desc === undefined) throw new Error(`tag ${tag} not in ${dir}/index.json`);
  const manifest = JSON.parse((await readBlob(desc.digest)).toString('utf8')) as ManifestJson;
  const files = new Map<string, Buffer>();
  for (const layer of manifest.layers ?? []) {
    const blob = await readBlob(layer.digest);
    const tar = layer.mediaType.endsWith('gzip') ? gunzipSync(blob) : blob;
    for (const [name, data] of untar(tar)) files.set(name, data);
  }
  return { manifestDigest: desc.digest, manifest, files };
}

/** Regular files of a ustar archive; enough for layers built by `docker build` from small files. */
function* untar(tar: Buffer): Generator<[string, Buffer]> {
  let off = 0;
  while (off + 512 <= tar.length) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) return;
    const field = (start: number, len: number): string =>
      header.toString('utf8', start, start + len).replace(/\0.*$/s, '');
    const prefix = field(345, 155);
    const name = (prefix === '' ? '' : `${prefix}/`) + field(0, 100);
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const type = field(156, 1);
    const body = tar.subarray(off + 512, off + 512 + size);
    if (type === '0' || type === '') yield [name.replace(/^\.?\//, ''), Buffer.from(body)];
    off += 512 + Math.ceil(size / 512) * 512;
  }
}

/** Checks an image read from an OCI layout against what was built: the marker and each data layer. */
export function verifyLayoutContent(layout: OciLayoutImage, image: BuiltImage): string | undefined {
  const marker = layout.files.get('marker')?.toString('utf8');
  if (marker !== image.marker) return `marker: got ${String(marker)}, want ${image.marker}`;
  if (!layout.files.has('bin/busybox')) return 'bin/busybox missing';
  for (const [i, want] of image.layerSums.entries()) {
    const data = layout.files.get(`data/${i}.bin`);
    if (data === undefined) return `data/${i}.bin missing`;
    const got = createHash('sha256').update(data).digest('hex');
    if (got !== want) return `data/${i}.bin: got sha256 ${got}, want ${want}`;
  }
  return undefined;
}
