#!/usr/bin/env node
import cluster from 'node:cluster';
import { Command } from 'commander';
import { pino } from 'pino';
import { ConfigError, loadConfig, renderConfig, type LoadedConfig } from '../config/load.js';
import { gcSettings } from '../config/schema.js';
import { registerAgentCommand } from './agent/command.js';
import { createLogger } from './log.js';
import { shutDownOnSignals } from './shutdown.js';
import { registerPromoteCommand } from './verify/promote-command.js';

// Wharf supports Node 20 on purpose; the AWS SDK's notice about its future Node 22 requirement would
// only alarm operators. Set before the server (and so the SDK) is loaded below.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// How long after http.draintimeout a shutdown may still take before the process gives up on it.
const SHUTDOWN_GRACE_MS = 5000;

// Read by `serve --workers` (src/cluster.ts), not config keys: kept from the config's env overrides.
const SERVE_ENV = new Set(['WHARF_WORKERS', 'WHARF_WORKER_SLOT']);

/** --config, else $WHARF_CONFIG, else the built-in defaults; a bad config exits 2 with one line. */
function load(file: string | undefined): LoadedConfig {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !SERVE_ENV.has(name)));
  try {
    return loadConfig({ file: file ?? (process.env.WHARF_CONFIG || undefined), env });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`wharf: ${err.message}`);
    process.exit(2);
  }
}

async function serve(opts: { config?: string; workers?: string }): Promise<void> {
  const loaded = load(opts.config);
  let config = loaded.config;
  const logger = createLogger(config.log);
  const inWorker = cluster.isWorker;
  // A worker's primary has logged them already.
  if (!inWorker) for (const warning of loaded.warnings) logger.warn({ warning }, 'config warning');

  const workers = opts.workers ?? (process.env.WHARF_WORKERS || undefined);
  if (!inWorker && workers !== undefined) {
    const { parseWorkerCount, runPrimary } = await import('./cluster.js');
    let count: number;
    try {
      count = parseWorkerCount(workers);
    } catch (err) {
      console.error(`wharf: --workers: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(2);
    }
    await runPrimary({ workers: count, config, logger });
    return;
  }
  const { announceReady, withoutSchedules, WORKER_SLOT_ENV } = await import('./cluster.js');
  // One worker runs the scheduled GC and upload purge for the whole process group.
  if (inWorker && process.env[WORKER_SLOT_ENV] !== '1') config = withoutSchedules(config);

  // Loaded here so that `config check` does not load the whole server.
  const { startServer } = await import('./main.js');
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(config, logger);
  } catch (err) {
    logger.fatal({ err }, 'server failed to start');
    process.exit(1);
  }
  announceReady();

  // Ctrl-C reaches every process of the group; a worker waits for the SIGTERM its primary sends.
  if (inWorker) process.on('SIGINT', () => undefined);
  shutDownOnSignals({
    logger,
    signals: inWorker ? ['SIGTERM'] : ['SIGTERM', 'SIGINT'],
    close: () => server.close(),
    fields: { draintimeoutMs: config.http.draintimeout },
    // close() drains within http.draintimeout; the timeout only guards against a close that hangs.
    timeoutMs: config.http.draintimeout + SHUTDOWN_GRACE_MS,
  });
}

function checkConfig(opts: { config?: string }): void {
  const { config, warnings } = load(opts.config);
  for (const warning of warnings) console.error(`wharf: warning: ${warning}`);
  process.stdout.write(renderConfig(config));
}

/** Writes the command's result to stdout and exits once it is flushed (a storage client may hold sockets). */
function finish(text: string, code = 0): void {
  process.stdout.write(text, () => process.exit(code));
}

/** For the one-shot storage commands: logs go to stderr, stdout carries the result. */
function loadForStorageCommand(file: string | undefined) {
  const { config, warnings } = load(file);
  const logger = createLogger(config.log, { destination: pino.destination({ fd: 2, sync: true }) });
  for (const warning of warnings) logger.warn({ warning }, 'config warning');
  return { config, logger };
}

async function gc(opts: { config?: string; dryRun?: boolean; deleteUntagged?: boolean; json?: boolean }) {
  const { config, logger } = loadForStorageCommand(opts.config);
  const { createDriver } = await import('../storage-drivers/index.js');
  const { collectGarbage } = await import('./gc/collect.js');
  const { LeaseHeldError } = await import('./gc/lease.js');
  const { TerminalProgress, silentProgress } = await import('./gc/progress.js');
  const { formatSummary } = await import('./gc/summary.js');
  const settings = gcSettings(config);
  const dryRun = opts.dryRun === true;
  if (!dryRun && settings.grace < 2000) {
    logger.warn(
      { graceMs: settings.grace },
      'gc.grace under 2s is safe only while no registry serves this storage',
    );
  }
  const purging = config.storage.maintenance.uploadpurging;
  try {
    const summary = await collectGarbage(createDriver(config.storage), {
      dryRun,
      deleteUntagged: opts.deleteUntagged === true || settings.deleteuntagged,
      graceMs: settings.grace,
      ...(purging.enabled && { uploadPurgeAgeMs: purging.age }),
      progress: process.stderr.isTTY ? new TerminalProgress(process.stderr) : silentProgress,
      logger,
    });
    finish(opts.json ? `${JSON.stringify(summary, null, 2)}\n` : formatSummary(summary));
  } catch (err) {
    if (err instanceof LeaseHeldError) {
      console.error(`wharf: ${err.message}`);
      process.exit(3);
    }
    console.error(`wharf: gc failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}

async function du(opts: { config?: string; json?: boolean }) {
  const { config } = loadForStorageCommand(opts.config);
  const { createDriver } = await import('../storage-drivers/index.js');
  const { diskUsage, formatDiskUsage } = await import('./gc/du.js');
  const { TerminalProgress, silentProgress } = await import('./gc/progress.js');
  try {
    const progress = process.stderr.isTTY ? new TerminalProgress(process.stderr) : silentProgress;
    const usage = await diskUsage(createDriver(config.storage), progress);
    finish(opts.json ? `${JSON.stringify(usage, null, 2)}\n` : formatDiskUsage(usage));
  } catch (err) {
    console.error(`wharf: du failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}

const fail = (what: string, err: unknown): never => {
  console.error(`wharf: ${what}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
};

async function passwd(user: string, opts: { config?: string; file?: string; cost: string }) {
  const admin = await import('./auth/admin.js');
  const { setHtpasswdEntry } = await import('./auth/htpasswd.js');
  const file = opts.file ?? admin.htpasswdPathOf(load(opts.config).config);
  if (file === undefined)
    fail('passwd', 'give --file, or a config with auth.htpasswd.path or auth.tokenserver.htpasswd');
  try {
    const password = await admin.readPassword(process.stdin, process.stderr);
    if (password === '') throw new Error('the password is empty');
    const done = await setHtpasswdEntry(file as string, user, password, Number(opts.cost));
    finish(`${done} ${user} in ${file as string}\n`);
  } catch (err) {
    fail('passwd', err);
  }
}

/** Robot tokens live in the registry's storage, so these commands need its storage config. */
async function robotStore(configFile: string | undefined) {
  const { config } = loadForStorageCommand(configFile);
  const { createDriver } = await import('../storage-drivers/index.js');
  const { storageDriver } = await import('../config/schema.js');
  const { RobotStore } = await import('./auth/robots.js');
  if (storageDriver(config.storage).name === 'inmemory') {
    fail(
      'token',
      'the inmemory storage forgets robot tokens; give the config of the registry that checks them',
    );
  }
  return new RobotStore(createDriver(config.storage));
}

async function tokenCreate(opts: {
  config?: string;
  repo: string[];
  actions: string;
  expires: string;
  name?: string;
  json?: boolean;
}) {
  const admin = await import('./auth/admin.js');
  try {
    const repositories = admin.checkGlobs(opts.repo);
    const actions = admin.parseActions(opts.actions);
    const expiresInMs = admin.parseExpiry(opts.expires);
    const store = await robotStore(opts.config);
    const { record, token } = await store.create({
      repositories,
      actions,
      expiresInMs,
      ...(opts.name && { name: opts.name }),
    });
    const { secret: _hash, ...shown } = record;
    finish(
      opts.json
        ? `${JSON.stringify({ ...shown, username: record.name, password: token }, null, 2)}\n`
        : admin.formatCreatedRobot(record, token),
    );
  } catch (err) {
    fail('token create', err);
  }
}

async function tokenList(opts: { config?: string; json?: boolean }) {
  const admin = await import('./auth/admin.js');
  try {
    const records = await (await robotStore(opts.config)).list();
    const shown = records.map(({ secret: _hash, ...rest }) => rest);
    finish(opts.json ? `${JSON.stringify(shown, null, 2)}\n` : admin.formatRobots(records));
  } catch (err) {
    fail('token list', err);
  }
}

async function tokenRevoke(id: string, opts: { config?: string }) {
  try {
    const revoked = await (await robotStore(opts.config)).revoke(id);
    if (!revoked) fail('token revoke', `no robot token with id ${id}`);
    // Replicas may accept it for up to 30 s more (their cache), and tokens already issued until they expire.
    finish(`revoked ${id}\n`);
  } catch (err) {
    fail('token revoke', err);
  }
}

const program = new Command('wharf').description(
  'an OCI registry that stores content in the CNCF Distribution layout',
);
const configOption = [
  '-c, --config <file>',
  'YAML config file (default: $WHARF_CONFIG, else built-in defaults)',
] as const;

program
  .command('serve')
  .description('run the registry')
  .option(...configOption)
  .option(
    '-w, --workers <n>',
    'serve from N worker processes on the one port; 0 or auto: one per CPU (default: $WHARF_WORKERS, ' +
      'else a single process)',
  )
  .action(serve);
program
  .command('gc')
  .description(
    'collect garbage once: remove blobs no manifest references (and, with --delete-untagged, untagged ' +
      'manifests) unused for gc.grace, and purge stale uploads; safe while registries serve the storage',
  )
  .option(...configOption)
  .option('--dry-run', 'list what would be removed, remove nothing')
  .option(
    '--delete-untagged',
    'also remove untagged manifests older than gc.grace (default: gc.deleteuntagged)',
  )
  .option('--json', 'print the summary as JSON')
  .action(gc);
program
  .command('du')
  .description('show what deduplication saves: logical and stored bytes per repository and in total')
  .option(...configOption)
  .option('--json', 'print the report as JSON')
  .action(du);
program
  .command('passwd')
  .description(
    'add or change a user in the htpasswd file (bcrypt); reads the password from the terminal or stdin',
  )
  .argument('<user>')
  .option(...configOption)
  .option('-f, --file <path>', 'the htpasswd file (default: from the config)')
  .option('--cost <n>', 'bcrypt cost', '10')
  .action(passwd);
const token = program
  .command('token')
  .description('robot tokens for CI: Basic passwords with their own scope');
token
  .command('create')
  .description('mint a robot token; its password is printed once')
  .option(...configOption)
  .requiredOption(
    '--repo <glob>',
    'repository glob (* within a path component, ** across); repeatable',
    (v: string, all: string[]) => [...all, v],
    [],
  )
  .option('--actions <list>', 'pull, push, delete, comma-separated', 'pull')
  .option('--expires <duration>', 'lifetime: 30d, 12h, 90m', '30d')
  .option('--name <name>', 'the user name to log in with (default: robot-<id>)')
  .option('--json', 'print as JSON')
  .action(tokenCreate);
token
  .command('list')
  .description('list robot tokens')
  .option(...configOption)
  .option('--json', 'print as JSON')
  .action(tokenList);
token
  .command('revoke')
  .description('delete a robot token')
  .argument('<id>')
  .option(...configOption)
  .action(tokenRevoke);
program
  .command('config')
  .description('configuration tools')
  .command('check')
  .description('validate the config and print the effective config as YAML, secrets masked')
  .option(...configOption)
  .action(checkConfig);

registerAgentCommand(program);
registerPromoteCommand(program);

await program.parseAsync();
