// Blob push (monolithic and chunked) and pull throughput, with the server CPU each one costs.
import { pullBlob, pushChunked, pushMonolithic } from './client.js';
import { MiB, variant, type Content } from './content.js';
import { fmt, interleaved, medianSample, timed, type Row, type Sample } from './report.js';
import type { Registry, RegistryName } from './servers.js';

const MB = 1e6;

const mbps = (size: number, s: Sample): number => size / MB / s.seconds;

function describe(size: number, samples: readonly Sample[]): string {
  const speeds = samples.map((s) => fmt(mbps(size, s))).join(', ');
  const m = medianSample(samples);
  return (
    `runs ${speeds} MB/s; median run: ${m.seconds.toFixed(2)} s, server CPU ${m.serverCpu.toFixed(2)} s ` +
    `(${(m.serverCpu / m.seconds).toFixed(2)} cores, ${m.serverFaults} page faults), client CPU ${m.clientCpu.toFixed(2)} s`
  );
}

/** Rows for one throughput measurement: median MB/s, server cores used, MB/s per server core. */
function throughputRows(
  name: string,
  size: number,
  target: number,
  result: Awaited<ReturnType<typeof interleaved>>,
  best = false,
): Row[] {
  const speed: Row = { metric: name, unit: 'MB/s', compare: 'higher', target, values: {}, notes: {} };
  const bestRow: Row = { metric: `${name}, best`, unit: 'MB/s', compare: 'higher', values: {} };
  const cores: Row = { metric: `${name}, server CPU`, unit: 'cores', compare: 'none', values: {} };
  const perCore: Row = { metric: `${name}, per server core`, unit: 'MB/s', compare: 'higher', values: {} };
  for (const [reg, samples] of result.samples) {
    const m = medianSample(samples);
    speed.values[reg] = mbps(size, m);
    bestRow.values[reg] = Math.max(...samples.map((s) => mbps(size, s)));
    cores.values[reg] = m.serverCpu / m.seconds;
    if (m.serverCpu > 0) perCore.values[reg] = size / MB / m.serverCpu;
    speed.notes![reg] = describe(size, samples);
  }
  for (const [reg, err] of result.errors) speed.notes![reg] = err;
  return best ? [speed, bestRow, cores, perCore] : [speed, cores, perCore];
}

export interface PushResult {
  rows: Row[];
  /** A blob every registry holds in `repo`, for the pull measurement. */
  pushed: Map<RegistryName, { repo: string; content: Content }>;
}

export async function benchPush(
  regs: readonly Registry[],
  base: Content,
  opts: { reps: number; chunkSize: number },
): Promise<PushResult> {
  const mono: Content[] = [];
  const chunked: Content[] = [];
  for (let i = 0; i < opts.reps; i++) {
    mono.push(await variant(base, `monolithic ${i}`));
    chunked.push(await variant(base, `chunked ${i}`));
  }
  const pushed = new Map<RegistryName, { repo: string; content: Content }>();

  process.stdout.write(`blob push, monolithic: ${opts.reps} x ${base.size / MiB} MiB per registry\n`);
  const monoResult = await interleaved(regs, opts.reps, async (reg, rep) => {
    const c = mono[rep]!;
    const s = await timed(reg.server.pid, () => pushMonolithic(reg.server.url, 'bench/monolithic', c));
    pushed.set(reg.name, { repo: 'bench/monolithic', content: c });
    process.stdout.write(`  ${reg.name.padEnd(12)} ${fmt(mbps(c.size, s))} MB/s\n`);
    return s;
  });

  const chunkMiB = opts.chunkSize / MiB;
  process.stdout.write(
    `blob push, chunked: ${opts.reps} x ${base.size / MiB} MiB in ${chunkMiB} MiB PATCHes\n`,
  );
  const chunkedResult = await interleaved(regs, opts.reps, async (reg, rep) => {
    const c = chunked[rep]!;
    const s = await timed(reg.server.pid, () =>
      pushChunked(reg.server.url, 'bench/chunked', c, opts.chunkSize),
    );
    process.stdout.write(`  ${reg.name.padEnd(12)} ${fmt(mbps(c.size, s))} MB/s\n`);
    return s;
  });

  return {
    rows: [
      ...throughputRows('blob push monolithic', base.size, 2.0, monoResult),
      ...throughputRows(`blob push chunked ${chunkMiB} MiB`, base.size, 2.0, chunkedResult),
    ],
    pushed,
  };
}

export async function benchPull(
  regs: readonly Registry[],
  pushed: Map<RegistryName, { repo: string; content: Content }>,
  reps: number,
): Promise<Row[]> {
  const size = [...pushed.values()][0]?.content.size ?? 0;
  process.stdout.write(`blob pull: ${reps} x ${size / MiB} MiB per registry\n`);
  const present = regs.filter((r) => pushed.has(r.name));
  const result = await interleaved(present, reps, async (reg) => {
    const { repo, content } = pushed.get(reg.name)!;
    const s = await timed(reg.server.pid, () => pullBlob(reg.server.url, repo, content));
    process.stdout.write(`  ${reg.name.padEnd(12)} ${fmt(mbps(size, s))} MB/s\n`);
    return s;
  });
  return throughputRows('blob pull', size, 1.0, result, true);
}
