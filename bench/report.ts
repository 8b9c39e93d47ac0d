// Result rows and the table they print as. A ratio is always "Wharf relative to Distribution, higher
// is better": Wharf/Distribution for throughputs, Distribution/Wharf for times.
import { performance } from 'node:perf_hooks';
import { cpuUsage } from './proc.js';
import type { Registry, RegistryName } from './servers.js';

export type Compare = 'higher' | 'lower' | 'none';

export interface Row {
  metric: string;
  unit: string;
  compare: Compare;
  /** The ratio the issue asks for, if any. */
  target?: number;
  values: Partial<Record<RegistryName, number>>;
  /** Short detail per registry, printed under the table (best/median, latency, errors). */
  notes?: Partial<Record<RegistryName, string>>;
  /** Absolute limit on Wharf's value instead of a ratio (memory). */
  wharfMax?: number;
}

export interface Sample {
  seconds: number;
  /** CPU seconds the server's process tree used meanwhile. */
  serverCpu: number;
  /** CPU seconds this (client) process used meanwhile. */
  clientCpu: number;
  /** Minor page faults of the server meanwhile. */
  serverFaults: number;
}

export async function timed(pid: number, fn: () => Promise<void>): Promise<Sample> {
  const server0 = cpuUsage(pid);
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const seconds = (performance.now() - t0) / 1000;
  const client = process.cpuUsage(client0);
  const server = cpuUsage(pid);
  return {
    seconds,
    serverCpu: server.seconds - server0.seconds,
    clientCpu: (client.user + client.system) / 1e6,
    serverFaults: server.minorFaults - server0.minorFaults,
  };
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Sample with the median duration (the lower middle one for an even count). */
export function medianSample(samples: readonly Sample[]): Sample {
  const s = [...samples].sort((a, b) => a.seconds - b.seconds);
  return s[Math.floor((s.length - 1) / 2)]!;
}

export function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 100) return Math.round(v).toLocaleString('en-US');
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

export function ratioOf(row: Row): number | undefined {
  const d = row.values.distribution;
  const w = row.values.wharf;
  if (row.compare === 'none' || d === undefined || w === undefined || d === 0 || w === 0) return undefined;
  return row.compare === 'higher' ? w / d : d / w;
}

function verdict(row: Row): string {
  const w = row.values.wharf;
  if (row.wharfMax !== undefined && w !== undefined) {
    return w <= row.wharfMax ? `<= ${fmt(row.wharfMax)}  ok` : `<= ${fmt(row.wharfMax)}  MISSED`;
  }
  const ratio = ratioOf(row);
  if (row.target === undefined || ratio === undefined) return '';
  // Judge the ratio as printed, so a row never reads "1.00x ... MISSED".
  return `>= ${row.target.toFixed(1)}  ${Number(ratio.toFixed(2)) >= row.target ? 'ok' : 'MISSED'}`;
}

export function renderTable(rows: readonly Row[]): string {
  const header = ['metric', 'Distribution', 'Wharf', 'W vs D', 'target'];
  const body = rows.map((row) => {
    const ratio = ratioOf(row);
    const cell = (name: RegistryName): string => {
      const v = row.values[name];
      if (v !== undefined) return fmt(v);
      return row.notes?.[name]?.startsWith('error') === true ? 'error' : '-';
    };
    return [
      `${row.metric} (${row.unit})`,
      cell('distribution'),
      cell('wharf'),
      ratio === undefined ? '' : `${ratio.toFixed(2)}x`,
      verdict(row),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 0 || i === 4 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out = [line(header), line(widths.map((w) => '-'.repeat(w)))];
  out.push(...body.map(line));
  const notes: string[] = [];
  for (const row of rows) {
    for (const name of ['distribution', 'wharf'] as const) {
      const note = row.notes?.[name];
      if (note !== undefined) notes.push(`  ${row.metric}, ${name}: ${note}`);
    }
  }
  if (notes.length > 0) out.push('', 'details:', ...notes);
  return out.join('\n');
}

export const errorText = (err: unknown): string =>
  `error: ${(err instanceof Error ? err.message : String(err)).split('\n')[0] ?? ''}`;

/**
 * Runs `fn` for each registry `reps` times, alternating the order each round so drift in
 * background load falls on both. A registry that fails is dropped for the rest of the section.
 */
export async function interleaved(
  regs: readonly Registry[],
  reps: number,
  fn: (reg: Registry, rep: number) => Promise<Sample>,
): Promise<{ samples: Map<RegistryName, Sample[]>; errors: Map<RegistryName, string> }> {
  const samples = new Map<RegistryName, Sample[]>();
  const errors = new Map<RegistryName, string>();
  for (let rep = 0; rep < reps; rep++) {
    const order = rep % 2 === 0 ? regs : [...regs].reverse();
    for (const reg of order) {
      if (errors.has(reg.name)) continue;
      try {
        const s = await fn(reg, rep);
        samples.set(reg.name, [...(samples.get(reg.name) ?? []), s]);
      } catch (err) {
        errors.set(reg.name, errorText(err));
        process.stdout.write(`  ${reg.name}: ${errorText(err)}\n`);
      }
    }
  }
  return { samples, errors };
}
