// Resident memory of each server, sampled every 100 ms from /proc while a large blob is pushed and
// then pulled. A streaming server stays flat; one that buffers grows by the blob size. Each server
// is a fresh instance, warmed up with a 1 MiB push and pull, so the baseline is not what earlier
// sections left in its heap.
import { pullBlob, pushMonolithic } from './client.js';
import { MiB, variant, type Content } from './content.js';
import { processTree, rssBytes } from './proc.js';
import { errorText, fmt, median, timed, type Row } from './report.js';
import type { Registry } from './servers.js';

const SAMPLE_MS = 100;
/** Wharf's growth limit: "tens of MiB", against a 1 GiB blob. */
const FLAT_LIMIT_MIB = 100;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function benchMemory(
  starters: readonly (() => Promise<Registry>)[],
  blob: Content,
): Promise<Row[]> {
  const rows = {
    baseline: { metric: 'RSS before (fresh, warmed up)', unit: 'MiB', compare: 'none', values: {} } as Row,
    push: { metric: 'RSS peak during push', unit: 'MiB', compare: 'none', values: {} } as Row,
    pull: { metric: 'RSS peak during pull', unit: 'MiB', compare: 'none', values: {} } as Row,
    growth: {
      metric: `RSS peak - before, ${blob.size / MiB} MiB blob`,
      unit: 'MiB',
      compare: 'none',
      wharfMax: FLAT_LIMIT_MIB,
      values: {},
      notes: {},
    } as Row,
  };
  process.stdout.write(
    `memory: ${blob.size / MiB} MiB blob pushed then pulled, RSS sampled every ${SAMPLE_MS} ms\n`,
  );
  const warmup = await variant({ ...blob, size: Math.min(blob.size, MiB) }, 'memory warm-up');
  for (const start of starters) {
    let reg: Registry;
    try {
      reg = await start();
    } catch (err) {
      process.stdout.write(`  ${errorText(err)}\n`);
      continue;
    }
    const pids = processTree(reg.server.pid);
    const rss = (): number => rssBytes(pids) / MiB;
    try {
      await pushMonolithic(reg.server.url, 'bench/warmup', warmup);
      await pullBlob(reg.server.url, 'bench/warmup', warmup);
      await sleep(500);
      const before: number[] = [];
      for (let i = 0; i < 5; i++) {
        before.push(rss());
        await sleep(SAMPLE_MS);
      }
      const baseline = median(before);
      let peak = 0;
      let samples = 0;
      const sampler = setInterval(() => {
        peak = Math.max(peak, rss());
        samples++;
      }, SAMPLE_MS);
      let pushPeak: number;
      let pullPeak: number;
      let speeds: string;
      try {
        const pushed = await timed(reg.server.pid, () =>
          pushMonolithic(reg.server.url, 'bench/memory', blob),
        );
        pushPeak = Math.max(peak, rss());
        peak = 0;
        const pulled = await timed(reg.server.pid, () => pullBlob(reg.server.url, 'bench/memory', blob));
        pullPeak = Math.max(peak, rss());
        speeds =
          `push ${fmt(blob.size / 1e6 / pushed.seconds)} MB/s, pull ${fmt(blob.size / 1e6 / pulled.seconds)} MB/s, ` +
          `${samples} samples`;
      } finally {
        clearInterval(sampler);
      }
      rows.baseline.values[reg.name] = baseline;
      rows.push.values[reg.name] = pushPeak;
      rows.pull.values[reg.name] = pullPeak;
      rows.growth.values[reg.name] = Math.max(pushPeak, pullPeak) - baseline;
      rows.growth.notes![reg.name] = speeds;
      process.stdout.write(
        `  ${reg.name.padEnd(12)} before ${fmt(baseline)} MiB, peak push ${fmt(pushPeak)} MiB, ` +
          `peak pull ${fmt(pullPeak)} MiB\n`,
      );
    } catch (err) {
      rows.growth.notes![reg.name] = errorText(err);
      process.stdout.write(`  ${reg.name}: ${errorText(err)}\n`);
    } finally {
      await reg.server.stop();
    }
  }
  return [rows.baseline, rows.push, rows.pull, rows.growth];
}
