// Manifest GET requests/s at a fixed concurrency, by tag and by digest. wrk with one thread is the
// load generator (it competes for the same 2 cores, and costs far less CPU per request than node);
// without wrk a node load generator in a separate process stands in, and the table says so.
import { execFile, spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { OCI_MANIFEST, pushSmallImage, send } from './client.js';
import { errorText, fmt, timed, type Row } from './report.js';
import type { Registry } from './servers.js';

const execFileAsync = promisify(execFile);

const ACCEPT = [
  OCI_MANIFEST,
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

export type LoadTool = 'wrk' | 'node';

export function detectLoadTool(): { tool: LoadTool; message?: string } {
  const probe = spawnSync('wrk', ['--version'], { encoding: 'utf8' });
  if (probe.error === undefined) return { tool: 'wrk' };
  return {
    tool: 'node',
    message:
      'wrk is not installed (apt-get install -y wrk); using the node load generator (bench/loadgen.ts) ' +
      'instead, which spends more CPU per request, so both servers get less of the 2 cores',
  };
}

interface LoadResult {
  requests: number;
  errors: number;
  seconds: number;
  latency?: string;
}

async function runWrk(
  url: string,
  concurrency: number,
  seconds: number,
  script: string,
): Promise<LoadResult> {
  const { stdout } = await execFileAsync(
    'wrk',
    ['-t1', `-c${concurrency}`, `-d${seconds}s`, '--timeout', '10s', '--latency', '-s', script, url],
    { timeout: (seconds + 30) * 1000 },
  );
  const num = (re: RegExp): number => Number(re.exec(stdout)?.[1] ?? 0);
  const total = num(/(\d+) requests in/);
  const elapsed = Number(/requests in ([\d.]+)s/.exec(stdout)?.[1] ?? seconds);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  const socketErrors = socket === null ? 0 : socket.slice(1).reduce((a, b) => a + Number(b), 0);
  const non2xx = num(/Non-2xx or 3xx responses: (\d+)/);
  const p50 = /^\s+50%\s+(\S+)/m.exec(stdout)?.[1];
  const p99 = /^\s+99%\s+(\S+)/m.exec(stdout)?.[1];
  return {
    requests: total - non2xx,
    errors: non2xx + socketErrors,
    seconds: elapsed,
    latency: p50 === undefined ? undefined : `p50 ${p50}, p99 ${p99 ?? '?'}`,
  };
}

async function runNode(url: string, concurrency: number, seconds: number): Promise<LoadResult> {
  const { stdout } = await execFileAsync(
    process.execPath,
    [
      '--import',
      'tsx',
      join(import.meta.dirname, 'loadgen.ts'),
      url,
      String(concurrency),
      String(seconds),
      ACCEPT,
    ],
    { timeout: (seconds + 30) * 1000 },
  );
  return JSON.parse(stdout.trim()) as LoadResult;
}

export interface ManifestOptions {
  tool: LoadTool;
  concurrency: number;
  seconds: number;
  warmupSeconds: number;
  workDir: string;
}

export async function benchManifest(regs: readonly Registry[], opts: ManifestOptions): Promise<Row[]> {
  const script = join(opts.workDir, 'manifest.lua');
  await writeFile(script, `wrk.method = "GET"\nwrk.headers["Accept"] = "${ACCEPT}"\n`);
  const load = (url: string, seconds: number): Promise<LoadResult> =>
    opts.tool === 'wrk'
      ? runWrk(url, opts.concurrency, seconds, script)
      : runNode(url, opts.concurrency, seconds);

  const digests = new Map<string, string>();
  for (const reg of regs)
    digests.set(reg.name, await pushSmallImage(reg.server.url, 'bench/manifest', 'latest'));

  const rows: Row[] = [];
  for (const by of ['tag', 'digest'] as const) {
    const how = `${opts.tool === 'wrk' ? 'wrk -t1' : 'node loadgen'} c=${opts.concurrency} ${opts.seconds}s`;
    const row: Row = {
      metric: `manifest GET by ${by}`,
      unit: 'req/s',
      compare: 'higher',
      target: 2.0,
      values: {},
      notes: {},
    };
    const cores: Row = {
      metric: `manifest GET by ${by}, server CPU`,
      unit: 'cores',
      compare: 'none',
      values: {},
    };
    process.stdout.write(`manifest GET by ${by}: ${how}\n`);
    for (const reg of regs) {
      const ref = by === 'tag' ? 'latest' : digests.get(reg.name)!;
      const url = `${reg.server.url}/v2/bench/manifest/manifests/${ref}`;
      try {
        const check = await send('GET', url, { accept: ACCEPT });
        if (check.status !== 200) throw new Error(`GET ${ref}: status ${check.status}`);
        if (opts.warmupSeconds > 0) await load(url, opts.warmupSeconds);
        let result: LoadResult | undefined;
        const s = await timed(reg.server.pid, async () => {
          result = await load(url, opts.seconds);
        });
        const r = result!;
        if (r.errors > r.requests / 100)
          throw new Error(`${r.errors} failed requests of ${r.requests + r.errors}`);
        row.values[reg.name] = r.requests / r.seconds;
        cores.values[reg.name] = s.serverCpu / s.seconds;
        row.notes![reg.name] =
          `${how}, ${r.requests} requests${r.errors > 0 ? `, ${r.errors} errors` : ''}` +
          (r.latency === undefined ? '' : `, latency ${r.latency}`);
        process.stdout.write(`  ${reg.name.padEnd(12)} ${fmt(r.requests / r.seconds)} req/s\n`);
      } catch (err) {
        row.notes![reg.name] = errorText(err);
        process.stdout.write(`  ${reg.name}: ${errorText(err)}\n`);
      }
    }
    rows.push(row, cores);
  }
  return rows;
}
