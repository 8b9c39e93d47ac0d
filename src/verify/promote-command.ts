import type { Command } from 'commander';

/** `wharf promote SRC DST`: a server-side copy of a manifest, optionally only when verified (issue 6). */
export function registerPromoteCommand(program: Command): void {
  program
    .command('promote')
    .description('copy a manifest from one repository to another on the server')
    .argument('<src>', 'REPO:TAG or REPO@DIGEST')
    .argument('<dst>', 'REPO:TAG')
    .action(() => {
      throw new Error('wharf promote is not implemented yet');
    });
}
