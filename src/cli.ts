#!/usr/bin/env node
import { Command } from 'commander';
import { ConfigError, loadConfig, renderConfig, type LoadedConfig } from '../config/load.js';
import { createLogger } from './log.js';

// Wharf supports Node 20 on purpose; the AWS SDK's notice about its future Node 22 requirement would
// only alarm operators. Set before the server (and so the SDK) is loaded below.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// How long after http.draintimeout a shutdown may still take before the process gives up on it.
const SHUTDOWN_GRACE_MS = 5000;

/** --config, else $WHARF_CONFIG, else the built-in defaults; a bad config exits 2 with one line. */
function load(file: string | undefined): LoadedConfig {
  try {
    return loadConfig({ file: file ?? (process.env.WHARF_CONFIG || undefined), env: process.env });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`wharf: ${err.message}`);
    process.exit(2);
  }
}

async function serve(opts: { config?: string }): Promise<void> {
  const { config, warnings } = load(opts.config);
  const logger = createLogger(config.log);
  for (const warning of warnings) logger.warn({ warning }, 'config warning');

  // Loaded here so that `config check` does not load the whole server.
  const { startServer } = await import('./main.js');
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(config, logger);
  } catch (err) {
    logger.fatal({ err }, 'server failed to start');
    process.exit(1);
  }

  let closing = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (closing) {
      logger.warn({ signal }, 'second signal, exiting without draining');
      process.exit(1);
    }
    closing = true;
    logger.info({ signal, draintimeoutMs: config.http.draintimeout }, 'shutting down');
    // close() drains within http.draintimeout; this only guards against a close that hangs.
    setTimeout(() => {
      logger.error('shutdown did not finish in time, exiting');
      process.exit(1);
    }, config.http.draintimeout + SHUTDOWN_GRACE_MS).unref();
    server.close().then(
      () => {
        logger.info('shut down');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

function checkConfig(opts: { config?: string }): void {
  const { config, warnings } = load(opts.config);
  for (const warning of warnings) console.error(`wharf: warning: ${warning}`);
  process.stdout.write(renderConfig(config));
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
  .action(serve);
program
  .command('config')
  .description('configuration tools')
  .command('check')
  .description('validate the config and print the effective config as YAML, secrets masked')
  .option(...configOption)
  .action(checkConfig);

await program.parseAsync();
