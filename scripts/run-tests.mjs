#!/usr/bin/env node
// Runs the whole suite with node's test runner. Node 20's --test does not expand globs or find .ts
// files, so this finds them. Fast groups run in parallel; e2e runs alone, since it drives one dockerd.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const groups = {
  unit: ['test/unit'],
  drivers: ['storage-drivers'],
  integration: ['test/integration'],
  e2e: ['test/e2e'],
};

function find(dir) {
  let out = [];
  let entries;
  try {
    entries = readdirSync(join(root, dir));
  } catch {
    return out;
  }
  for (const name of entries) {
    if (name === 'node_modules') continue;
    const rel = join(dir, name);
    if (statSync(join(root, rel)).isDirectory()) out = out.concat(find(rel));
    else if (name.endsWith('.test.ts')) out.push(rel);
  }
  return out.sort();
}

const args = process.argv.slice(2);
const onlyIdx = args.indexOf('--only');
const only = onlyIdx >= 0 ? args[onlyIdx + 1].split(',') : Object.keys(groups);
const filters = args.filter((a, i) => !a.startsWith('--') && i !== onlyIdx + 1);

function run(files, concurrency) {
  if (files.length === 0) return 0;
  const res = spawnSync(
    process.execPath,
    // A default per-test bound, so a hang fails one test with its name instead of stalling the run.
    ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-timeout=600000', ...files],
    {
      cwd: root,
      stdio: 'inherit',
      // Node 20 is supported on purpose; the AWS SDK's Node 22 notice is noise in test output.
      env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...process.env },
    },
  );
  return res.status ?? 1;
}

const pick = (names) =>
  names
    .flatMap((g) => groups[g].flatMap(find))
    .filter((f) => filters.length === 0 || filters.some((p) => f.includes(p)))
    .map((f) => relative(root, join(root, f)));

// One runner invocation keeps a single pass/fail summary at the end for CI to read.
const fast = pick(only.filter((g) => g !== 'e2e'));
const slow = pick(only.filter((g) => g === 'e2e'));
let status = 0;
if (fast.length && slow.length) {
  status = run([...fast, ...slow], 1) || status;
} else {
  status = run(fast.length ? fast : slow, fast.length ? 2 : 1) || status;
}
process.exit(status);
