// The container image (Dockerfile), built and run as an operator would: FROM a local Node base (no image
// can be pulled here; scripts/build-base-image.sh makes one from the host's node), then healthy on its own
// HEALTHCHECK, a registry for `docker push`/`pull` with the data in the mounted volume, and a clean exit on
// `docker stop`. One build per run; the build stage's layers stay in Docker's cache for the next run.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chown, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildImage, removeImages, verifyImageContent } from '../helpers/images.js';
import { freePort, repoRoot, waitForHttp } from '../helpers/processes.js';
import { docker, requireTools, run } from '../helpers/tools.js';

const skip = await requireTools('docker', 'busybox');

const baseImage = 'wharf-image-test/node-base:20';
const runId = randomBytes(4).toString('hex');
const image = `wharf-image-test/wharf:${runId}`;
const container = `wharf-image-test-${runId}`;
const wharfUid = 10001;
const MB = 1000 * 1000;
// Generous: the base alone holds node (~95 MB) and npm; Wharf's production dependencies add ~60 MB.
const maxImageBytes = 400 * MB;

interface HealthLog {
  ExitCode: number;
  Output: string;
}
interface ContainerState {
  Status: string;
  Running: boolean;
  ExitCode: number;
  OOMKilled: boolean;
  Health?: { Status: string; Log: HealthLog[] | null };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function inspect<T>(ref: string, format: string): Promise<T> {
  const { stdout } = await docker(['inspect', '--format', `{{json ${format}}}`, ref]);
  return JSON.parse(stdout) as T;
}

/** Builds the base unless one from this host's node version is there already. */
async function ensureBaseImage(): Promise<string> {
  let env: string[] = [];
  try {
    env = await inspect<string[]>(baseImage, '.Config.Env');
  } catch {
    // Absent: build it below.
  }
  const want = `NODE_VERSION=${process.versions.node}`;
  if (env.includes(want)) return `reused ${baseImage} (${want})`;
  const started = Date.now();
  await run(join(repoRoot, 'scripts/build-base-image.sh'), [baseImage], {
    env: { DOCKER_BUILDKIT: '0' },
    timeoutMs: 180_000,
  });
  return `built ${baseImage} in ${((Date.now() - started) / 1000).toFixed(1)} s`;
}

/** What the build needs to reach the npm registry from here; none of it reaches the runtime image. */
async function npmBuildArgs(): Promise<string[]> {
  const { stdout } = await run('npm', ['config', 'get', 'registry'], { cwd: repoRoot });
  // The base carries this host's CA bundle there, which holds any TLS-intercepting proxy's CA.
  const args = [
    `NPM_CONFIG_REGISTRY=${stdout.trim()}`,
    'NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt',
  ];
  // Docker's predefined proxy args, passed by name: their values stay out of the image history.
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy']) {
    if (process.env[name]) args.push(name);
  }
  return args.flatMap((a) => ['--build-arg', a]);
}

/** Waits for Docker's own health verdict from the image's HEALTHCHECK; returns its last output. */
async function waitHealthy(timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = await inspect<ContainerState>(container, '.State');
    const last = state.Health?.Log?.at(-1);
    if (!state.Running) {
      const { stdout, stderr } = await docker(['logs', container]);
      assert.fail(`container exited with ${state.ExitCode}\n${stdout}${stderr}`);
    }
    if (state.Health?.Status === 'healthy') return last?.Output.trim() ?? '';
    if (state.Health?.Status === 'unhealthy' || Date.now() > deadline) {
      assert.fail(`health ${String(state.Health?.Status)}; log: ${JSON.stringify(state.Health?.Log)}`);
    }
    await sleep(500);
  }
}

async function findFiles(dir: string, name: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile() && e.name === name).map((e) => join(e.parentPath, e.name));
}

void describe('container image', { skip, timeout: 600_000 }, () => {
  let dataDir = '';
  let port = 0;
  const localRefs: string[] = [];
  // before() has no diagnostic(); the first test reports these.
  const buildNotes: string[] = [];

  before(async () => {
    buildNotes.push(await ensureBaseImage());
    const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    const started = Date.now();
    await docker(
      [
        'build',
        '--network',
        'host',
        '--force-rm',
        '--build-arg',
        `BASE_IMAGE=${baseImage}`,
        '--build-arg',
        `VERSION=${pkg.version}`,
        '--build-arg',
        `CREATED=${new Date().toISOString()}`,
        ...(await npmBuildArgs()),
        '--tag',
        image,
        repoRoot,
      ],
      { timeoutMs: 480_000 },
    );
    buildNotes.push(`built ${image} in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    dataDir = await mkdtemp(join(tmpdir(), 'wharf-image-test-data-'));
    await chown(dataDir, wharfUid, wharfUid);
    port = await freePort();
    // Host network: the engine runs with --bridge=none, and the registry must be on loopback for docker push.
    await docker([
      'run',
      '--detach',
      '--name',
      container,
      '--network',
      'host',
      '--env',
      `WHARF_HTTP_ADDR=127.0.0.1:${port}`,
      '--volume',
      `${dataDir}:/var/lib/wharf`,
      image,
    ]);
  });

  after(async () => {
    try {
      // Warnings and errors only (pino levels 40 and up), as printOutput does for servers from source.
      const { stdout, stderr } = await docker(['logs', container]);
      const notable = `${stdout}${stderr}`.split('\n').filter((l) => /"level":([4-9]\d)/.test(l));
      if (notable.length > 0) console.error(`--- ${container} ---\n${notable.join('\n')}\n--- end ---`);
    } catch {
      // Never started.
    }
    await docker(['rm', '--force', '--volumes', container]).catch(() => undefined);
    await removeImages(...localRefs, image);
    if (dataDir !== '') await rm(dataDir, { recursive: true, force: true });
  });

  void test('holds the runtime only, set up for a non-root registry', async (t) => {
    for (const note of buildNotes) t.diagnostic(note);
    const size = await inspect<number>(image, '.Size');
    t.diagnostic(`image size ${(size / MB).toFixed(1)} MB`);
    assert.ok(size < maxImageBytes, `image is ${size} bytes, over ${maxImageBytes}`);

    const config = await inspect<{
      User: string;
      Entrypoint: string[];
      Cmd: string[];
      ExposedPorts: Record<string, object>;
      Volumes: Record<string, object>;
      StopSignal: string;
      Healthcheck: { Test: string[] };
      Labels: Record<string, string>;
      Env: string[];
    }>(image, '.Config');
    assert.equal(config.User, `${wharfUid}:${wharfUid}`);
    assert.deepEqual(config.Entrypoint, ['node', '/app/dist/src/cli.js']);
    assert.deepEqual(config.Cmd, ['serve']);
    assert.ok(config.Env.includes('WHARF_CONFIG=/etc/wharf/config.yml'));
    assert.deepEqual(Object.keys(config.ExposedPorts), ['5000/tcp']);
    assert.deepEqual(Object.keys(config.Volumes), ['/var/lib/wharf']);
    assert.equal(config.StopSignal, 'SIGTERM');
    assert.deepEqual(config.Healthcheck.Test.slice(0, 2), ['CMD', 'node']);
    assert.equal(config.Labels['org.opencontainers.image.title'], 'Wharf');
    assert.equal(config.Labels['org.opencontainers.image.licenses'], 'Apache-2.0');

    // Build-only settings (npm registry, CA bundle) stay in the build stages.
    const { stdout: history } = await docker(['history', '--no-trunc', '--format', '{{.CreatedBy}}', image]);
    assert.doesNotMatch(`${history}${config.Env.join('\n')}`, /NPM_CONFIG_REGISTRY|NODE_EXTRA_CA_CERTS/);

    // The shipped config: every subcommand reads it; data under the volume, port 5000.
    const { stdout: effective } = await docker([
      'run',
      '--rm',
      '--network',
      'none',
      image,
      'config',
      'check',
    ]);
    assert.match(effective, /^ {4}rootdirectory: \/var\/lib\/wharf$/m);
    assert.match(effective, /^ {2}addr: :5000$/m);

    // No dev dependencies, sources, tests, .git or data: list what is there, from inside the image.
    const script = [
      'ls -A /app',
      'echo --',
      'cd /app/node_modules && ls -d * @*/*',
      'echo --',
      'find /app -path /app/node_modules -prune -o \\( -name "*.ts" -o -name "*.test.*" \\) -print',
      'find / -xdev -name .git',
      'echo --',
      'ls -A /var/lib/wharf',
    ].join('; ');
    const { stdout } = await docker([
      'run',
      '--rm',
      '--network',
      'none',
      '--entrypoint',
      'sh',
      image,
      '-c',
      script,
    ]);
    const [app = '', modules = '', strays = '', data = ''] = stdout.split('--\n').map((s) => s.trim());
    assert.deepEqual(app.split('\n').sort(), ['config', 'dist', 'node_modules', 'package.json', 'scripts']);
    const installed = new Set(modules.split('\n'));
    const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    for (const dep of Object.keys(pkg.dependencies)) assert.ok(installed.has(dep), `${dep} is in the image`);
    // The lockfile marks what only development needs (typescript, eslint, tsx and esbuild, ...).
    const lock = JSON.parse(await readFile(join(repoRoot, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean }>;
    };
    const devOnly = Object.entries(lock.packages)
      .filter(([path, entry]) => entry.dev === true && /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path))
      .map(([path]) => path.slice('node_modules/'.length));
    assert.ok(devOnly.includes('typescript'));
    assert.deepEqual(
      devOnly.filter((name) => installed.has(name)),
      [],
      'no dev-only package in the image',
    );
    assert.equal(strays, '', 'no TypeScript sources, tests or .git in the image');
    assert.equal(data, '', 'the data directory ships empty');
  });

  void test('becomes healthy on the configured address, running as non-root', async (t) => {
    const health = await waitHealthy(90_000);
    t.diagnostic(`HEALTHCHECK: ${health}`);
    assert.match(health, new RegExp(`^healthy: http://127\\.0\\.0\\.1:${port}/`));
    await waitForHttp(`http://127.0.0.1:${port}/v2/`, { status: 200, timeoutMs: 30_000 });

    const { stdout: uid } = await docker(['exec', container, 'id', '-u']);
    assert.equal(uid.trim(), String(wharfUid));
    // The server itself (PID 1), not only what `docker exec` starts.
    const { stdout: status } = await docker(['exec', container, 'cat', '/proc/1/status']);
    assert.match(status, new RegExp(`^Uid:\\s+${wharfUid}\\s+${wharfUid}\\s`, 'm'));
  });

  void test('HEALTHCHECK: /healthz decides; without one (404), /v2/ answering 200 or 401 means alive', async () => {
    const cases = [
      { healthz: 200, v2: 500, healthy: true },
      { healthz: 404, v2: 401, healthy: true },
      { healthz: 404, v2: 200, healthy: true },
      { healthz: 503, v2: 200, healthy: false },
      { healthz: 404, v2: 404, healthy: false },
      { healthz: 0, v2: 0, healthy: false }, // nothing listening
    ];
    const servers: Server[] = [];
    try {
      const ports: number[] = [];
      for (const c of cases) {
        if (c.healthz === 0) {
          ports.push(await freePort());
          continue;
        }
        const server = createServer((req, res) => {
          res.statusCode = req.url === '/healthz' ? c.healthz : req.url === '/v2/' ? c.v2 : 404;
          res.end();
        });
        servers.push(server);
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        ports.push((server.address() as AddressInfo).port);
      }
      // One container runs the image's own check against each fake server in turn.
      const loop = ports
        .map(
          (p) => `WHARF_HTTP_ADDR=127.0.0.1:${p} node /app/scripts/container-healthcheck.mjs; echo "exit=$?"`,
        )
        .join('; ');
      const { stdout } = await docker([
        'run',
        '--rm',
        '--network',
        'host',
        '--entrypoint',
        'sh',
        image,
        '-c',
        loop,
      ]);
      const exits = [...stdout.matchAll(/^exit=(\d+)$/gm)].map((m) => Number(m[1]));
      assert.deepEqual(
        exits.map((code) => code === 0),
        cases.map((c) => c.healthy),
        stdout,
      );
      assert.ok(
        exits.every((code) => code === 0 || code === 1),
        'docker reads 0 as healthy and 1 as unhealthy',
      );
    } finally {
      for (const server of servers) server.close();
    }
  });

  void test('docker push and pull through it; the data lands in the volume', async () => {
    const ref = `127.0.0.1:${port}/image-test/busybox:1`;
    const pushed = await buildImage(ref, { layers: 1, layerBytes: 256 * 1024 });
    localRefs.push(pushed.id, ref);
    await docker(['push', ref]);
    await removeImages(pushed.id, ref);
    await docker(['pull', ref]);
    assert.equal(await verifyImageContent(ref, pushed), undefined);

    const v2 = join(dataDir, 'docker/registry/v2');
    const tagLink = join(v2, 'repositories/image-test/busybox/_manifests/tags/1/current/link');
    const manifestDigest = (await readFile(tagLink, 'utf8')).trim();
    assert.match(manifestDigest, /^sha256:[0-9a-f]{64}$/);
    const manifestBlob = join(
      v2,
      'blobs/sha256',
      manifestDigest.slice(7, 9),
      manifestDigest.slice(7),
      'data',
    );
    const manifest = JSON.parse(await readFile(manifestBlob, 'utf8')) as { layers: { digest: string }[] };
    assert.equal(manifest.layers.length, 3, 'busybox, marker and one data layer');
    assert.equal((await findFiles(join(v2, 'blobs'), 'data')).length, 5, 'config, manifest and 3 layers');
    assert.equal((await stat(manifestBlob)).uid, wharfUid, 'written by the non-root user');

    // Other subcommands read the same config, so they find the volume's content.
    const { stdout: usage } = await docker([
      'run',
      '--rm',
      '--network',
      'none',
      '--volume',
      `${dataDir}:/var/lib/wharf`,
      image,
      'du',
      '--json',
    ]);
    assert.match(usage, /image-test\/busybox/);
  });

  void test('docker stop: SIGTERM drains and the server exits 0 by itself', async (t) => {
    const started = Date.now();
    // Far more time than the drain timeout (10 s), so a 0 means it exited on its own, not killed.
    await docker(['stop', '--time', '60', container], { timeoutMs: 90_000 });
    t.diagnostic(`stopped in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const state = await inspect<ContainerState>(container, '.State');
    assert.equal(state.Running, false);
    assert.equal(state.OOMKilled, false);
    assert.equal(state.ExitCode, 0);
    const { stdout } = await docker(['logs', container]);
    const lines = stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; signal?: string });
    assert.equal(lines.find((l) => l.msg === 'shutting down')?.signal, 'SIGTERM', stdout);
    assert.equal(lines.at(-1)?.msg, 'shut down', stdout);
  });
});
