import type { Command } from 'commander';

/** `wharf agent`: the verification agent, a separate process (issue 6). */
export function registerAgentCommand(program: Command): void {
  program
    .command('agent')
    .description('run the verification agent')
    .option('-c, --config <file>', 'agent config file (YAML)')
    .action(() => {
      throw new Error('wharf agent is not implemented yet');
    });
}
