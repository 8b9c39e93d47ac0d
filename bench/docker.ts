// `docker push` and `docker pull` wall time of a FROM-scratch image: static busybox plus N random
// layers. Built once and pushed a few times to each registry, deleting the manifest and blob links
// in between (else a second push only HEADs existing blobs); then pulled a few times with
// `docker rmi` before each pull so every layer is downloaded.
import { execFile } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MiB, writeRandomFile } from './content.js';
import { OCI_MANIFEST, send } from './client.js';
import { errorText, fmt, median, type Row } from './report.js';
import type { Registry, RegistryName } from './servers.js';

const execFileAsync = promisify(execFile);
const BUSYBOX = '/bin/busybox';
const REPO = 'bench/docker';
const MANIFEST_TYPES = `application/vnd.docker.distribution.manifest.v2+json, ${OCI_MANIFEST}`;

async function docker(args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const { stdout } = await execFileAsync('docker', args, {
    env: env ?? process.env,
    timeout: 300_000,
    maxBuffer: 16 * MiB,
  });
  return stdout.trim();
}

async function wallTime(args: string[]): Promise<{ seconds: number; stdout: string }> {
  const t0 = performance.now();
  const stdout = await docker(args);
  return { seconds: (performance.now() - t0) / 1000, stdout };
}

function blobDigests(doc: unknown): string[] {
  const digestOf = (d: unknown): string | undefined =>
    typeof d === 'object' && d !== null && 'digest' in d && typeof d.digest === 'string'
      ? d.digest
      : undefined;
  if (typeof doc !== 'object' || doc === null) return [];
  const config = 'config' in doc ? digestOf(doc.config) : undefined;
  const layers = 'layers' in doc && Array.isArray(doc.layers) ? doc.layers.map(digestOf) : [];
  return [config, ...layers].filter((d): d is string => d !== undefined);
}

/**
 * Deletes the pushed manifest and the repository's links to its blobs, so that the next
 * `docker push` uploads every layer again (its HEAD checks answer 404).
 */
async function forget(reg: Registry, repo: string, digest: string): Promise<void> {
  const base = `${reg.server.url}/v2/${repo}`;
  const manifest = await send('GET', `${base}/manifests/${digest}`, { accept: MANIFEST_TYPES });
  if (manifest.status !== 200) throw new Error(`GET manifest: status ${manifest.status}`);
  const blobs = blobDigests(JSON.parse(manifest.body.toString('utf8')));
  for (const url of [...blobs.map((d) => `${base}/blobs/${d}`), `${base}/manifests/${digest}`]) {
    const reply = await send('DELETE', url);
    if (reply.status !== 202)
      throw new Error(`DELETE ${url.slice(url.indexOf('/v2/'))}: status ${reply.status}`);
  }
}

/** Why the docker measurement cannot run here, or undefined when it can. */
export async function dockerUnavailable(): Promise<string | undefined> {
  try {
    await execFileAsync('docker', ['info', '--format', '{{.ServerVersion}}'], { timeout: 15_000 });
  } catch {
    return 'dockerd is not reachable; start it with: dockerd --iptables=false --bridge=none >/tmp/dockerd.log 2>&1 &';
  }
  if (!existsSync(BUSYBOX))
    return `${BUSYBOX} is missing; install it with: apt-get install -y busybox-static`;
  return undefined;
}

export interface DockerOptions {
  layers: number;
  layerSize: number;
  pushReps: number;
  pullReps: number;
  workDir: string;
}

export async function benchDocker(regs: readonly Registry[], opts: DockerOptions): Promise<Row[]> {
  const ctx = join(opts.workDir, 'docker-context');
  await mkdir(ctx, { recursive: true });
  await copyFile(BUSYBOX, join(ctx, 'busybox'));
  const lines = ['FROM scratch', 'COPY busybox /bin/busybox'];
  for (let i = 1; i <= opts.layers; i++) {
    await writeRandomFile(join(ctx, `layer${i}.bin`), opts.layerSize);
    lines.push(`COPY layer${i}.bin /data/layer${i}.bin`);
  }
  lines.push('CMD ["/bin/busybox", "true"]', '');
  await writeFile(join(ctx, 'Dockerfile'), lines.join('\n'));

  const image = `wharf-bench-image:${process.pid}`;
  const refs = regs.map((r) => `${r.server.host}/${REPO}:latest`);
  const what = `${opts.layers} x ${opts.layerSize / MiB} MiB + busybox`;
  const push: Row = {
    metric: `docker push ${what}, median`,
    unit: 's',
    compare: 'lower',
    target: 1.0,
    values: {},
    notes: {},
  };
  const pull: Row = {
    metric: `docker pull ${what}, median`,
    unit: 's',
    compare: 'lower',
    target: 1.0,
    values: {},
    notes: {},
  };
  try {
    process.stdout.write(`docker: building ${image} (${what})\n`);
    // The legacy builder: Debian's docker.io ships without buildx.
    await docker(['build', '-q', '-t', image, ctx], { ...process.env, DOCKER_BUILDKIT: '0' });

    for (const ref of refs) await docker(['tag', image, ref]);
    const pushTimes = new Map<RegistryName, number[]>();
    const pushed = new Map<RegistryName, string>();
    for (let rep = 0; rep < opts.pushReps; rep++) {
      const order = rep % 2 === 0 ? [...regs.entries()] : [...regs.entries()].reverse();
      for (const [i, reg] of order) {
        if (push.notes![reg.name] !== undefined) continue;
        const digest = pushed.get(reg.name);
        if (rep > 0 && digest === undefined) continue;
        try {
          if (digest !== undefined) await forget(reg, REPO, digest);
        } catch (err) {
          push.notes![reg.name] = `no repeat push: ${errorText(err)}`;
          continue;
        }
        try {
          const { seconds, stdout } = await wallTime(['push', refs[i]!]);
          const manifest = /digest: (sha256:[0-9a-f]{64})/.exec(stdout)?.[1];
          if (manifest === undefined)
            throw new Error(`no digest in docker push output: ${stdout.slice(-200)}`);
          // A repeat push that skipped layers would measure HEAD requests, not uploads.
          if (/already exists|Mounted from/.test(stdout)) throw new Error('docker push skipped layers');
          pushed.set(reg.name, manifest);
          pushTimes.set(reg.name, [...(pushTimes.get(reg.name) ?? []), seconds]);
          process.stdout.write(`  push ${reg.name.padEnd(12)} ${seconds.toFixed(2)} s\n`);
        } catch (err) {
          push.notes![reg.name] = errorText(err);
          process.stdout.write(`  push ${reg.name}: ${errorText(err)}\n`);
        }
      }
    }
    for (const [name, ts] of pushTimes) {
      push.values[name] = median(ts);
      const note = push.notes![name];
      push.notes![name] =
        `runs ${ts.map((t) => fmt(t)).join(', ')} s${note === undefined ? '' : `; ${note}`}`;
    }
    // Remove every tag so the image and its layers are gone before each pull (a tag that failed
    // above makes rmi complain about it; the others are still removed).
    await docker(['rmi', '-f', image, ...refs]).catch(() => '');

    const times = new Map<string, number[]>();
    for (let rep = 0; rep < opts.pullReps; rep++) {
      const order = rep % 2 === 0 ? [...regs.entries()] : [...regs.entries()].reverse();
      for (const [i, reg] of order) {
        if (push.values[reg.name] === undefined || pull.notes![reg.name] !== undefined) continue;
        const ref = refs[i]!;
        try {
          const { seconds: s } = await wallTime(['pull', ref]);
          await docker(['rmi', ref]);
          times.set(reg.name, [...(times.get(reg.name) ?? []), s]);
          process.stdout.write(`  pull ${reg.name.padEnd(12)} ${s.toFixed(2)} s\n`);
        } catch (err) {
          pull.notes![reg.name] = errorText(err);
          process.stdout.write(`  pull ${reg.name}: ${errorText(err)}\n`);
        }
      }
    }
    for (const reg of regs) {
      const ts = times.get(reg.name);
      if (ts === undefined || ts.length === 0) continue;
      pull.values[reg.name] = median(ts);
      pull.notes![reg.name] = `runs ${ts.map((t) => fmt(t)).join(', ')} s`;
    }
  } finally {
    await docker(['rmi', '-f', image, ...refs]).catch(() => '');
  }
  return [push, pull];
}
