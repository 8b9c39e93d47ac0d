import type { Command } from 'commander';
import { shutDownOnSignals } from '../shutdown.js';

/** `wharf agent`: the verification agent, a separate process (issue 6). */
export function registerAgentCommand(program: Command): void {
  program
    .command('agent')
    .description(
      'run the verification agent: receives push events, runs each image in isolation through the ' +
        'Docker engine and pushes a signed verdict as a referrer',
    )
    .requiredOption('-c, --config <file>', 'agent config file (YAML; see config/examples/agent/agent.yaml)')
    .action(runAgent);
}

async function runAgent(opts: { config: string }): Promise<void> {
  const { AgentConfigError, loadAgentConfig } = await import('../../config/agent-schema.js');
  const { createLogger } = await import('../log.js');
  const { startAgent } = await import('./agent.js');
  let config;
  try {
    config = loadAgentConfig(opts.config);
  } catch (err) {
    if (!(err instanceof AgentConfigError)) throw err;
    process.stderr.write(`wharf agent: ${err.message}\n`);
    process.exit(2);
  }
  const logger = createLogger(config.log);
  if (config.agent.insecure && config.agent.token === undefined && config.agent.secret === undefined) {
    logger.warn('agent.insecure: events are accepted from anyone who can reach the agent');
  }
  let agent: Awaited<ReturnType<typeof startAgent>>;
  try {
    agent = await startAgent(config, logger);
  } catch (err) {
    logger.fatal({ err }, 'agent failed to start');
    process.exit(1);
  }
  shutDownOnSignals({
    logger,
    signals: ['SIGTERM', 'SIGINT'],
    close: () => agent.close(),
    message: 'shutting down; unfinished jobs stay in the journal',
  });
}
