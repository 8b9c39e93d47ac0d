// Reads CPU time and resident memory of a server from /proc, summed over its process tree so a
// launcher wrapper or `--workers N` children are counted too.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

const CLK_TCK = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface ProcStat {
  comm: string;
  ppid: number;
  /** utime + stime over all threads, in clock ticks. */
  ticks: number;
  /** cutime + cstime: CPU of children that exited and were waited for. */
  childTicks: number;
  /** Minor page faults: each is fresh memory being touched, which is slow on these VMs. */
  minflt: number;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may hold spaces and parentheses; the fields after the last ')' are fixed.
  const close = text.lastIndexOf(')');
  const fields = text.slice(close + 2).split(' ');
  return {
    comm: text.slice(text.indexOf('(') + 1, close),
    ppid: Number(fields[1]),
    ticks: Number(fields[11]) + Number(fields[12]),
    childTicks: Number(fields[13]) + Number(fields[14]),
    minflt: Number(fields[7]),
  };
}

function allStats(): Map<number, ProcStat> {
  const stats = new Map<number, ProcStat>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(Number(name));
    if (stat !== undefined) stats.set(Number(name), stat);
  }
  return stats;
}

function descendants(stats: Map<number, ProcStat>, roots: readonly number[]): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, stat] of stats) {
    const list = children.get(stat.ppid) ?? [];
    list.push(pid);
    children.set(stat.ppid, list);
  }
  const out: number[] = [];
  const queue = [...roots];
  for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** `root` and every live descendant. */
export function processTree(root: number): number[] {
  return descendants(allStats(), [root]);
}

/** CPU seconds (user + system) and minor page faults so far of the tree under `pid`. */
export function cpuUsage(pid: number): { seconds: number; minorFaults: number } {
  let ticks = 0;
  let minorFaults = 0;
  for (const p of processTree(pid)) {
    const stat = readStat(p);
    ticks += stat?.ticks ?? 0;
    minorFaults += stat?.minflt ?? 0;
  }
  return { seconds: ticks / CLK_TCK, minorFaults };
}

/** Resident set size in bytes (VmRSS) summed over `pids`. */
export function rssBytes(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (match?.[1] !== undefined) total += Number(match[1]) * 1024;
    } catch {
      // the process exited between listing and reading
    }
  }
  return total;
}

/** CPU seconds the whole machine has been busy (all cores, kernel included) since boot. */
export function machineBusySeconds(): number {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return (fields.reduce((a, b) => a + b, 0) - idle) / CLK_TCK;
}

/** CPU seconds of everything that is not this bench: not our process tree, not dockerd/containerd. */
function otherBusySeconds(): number {
  const stats = allStats();
  const ours = [process.pid];
  for (const [pid, stat] of stats) if (stat.comm === 'dockerd' || stat.comm === 'containerd') ours.push(pid);
  let ticks = 0;
  // Exited children move their time into the parent's cutime, so counting it keeps the sum steady.
  for (const pid of descendants(stats, ours)) {
    const stat = stats.get(pid);
    if (stat !== undefined) ticks += stat.ticks + stat.childTicks;
  }
  return machineBusySeconds() - ticks / CLK_TCK;
}

/**
 * Samples, once a second, how many cores other work on the machine keeps busy: a run that shares
 * the machine with test suites gets rough numbers, and the summary says so.
 */
export function watchOtherLoad(): { stop: () => { mean: number; max: number } } {
  const loads: number[] = [];
  const first = { other: otherBusySeconds(), at: performance.now() };
  let last = first;
  const timer = setInterval(() => {
    const now = { other: otherBusySeconds(), at: performance.now() };
    // Clamped: a child that exited but is not yet waited for drops out of our tree for a moment.
    loads.push(Math.max(0, (now.other - last.other) / ((now.at - last.at) / 1000)));
    last = now;
  }, 1000);
  timer.unref();
  return {
    stop: () => {
      clearInterval(timer);
      const end = { other: otherBusySeconds(), at: performance.now() };
      const mean = Math.max(0, (end.other - first.other) / Math.max(0.001, (end.at - first.at) / 1000));
      return { mean, max: Math.max(mean, ...loads) };
    },
  };
}
