// The admin side of auth, for `wharf passwd` and `wharf token`: reading a password, parsing an expiry,
// and printing robot tokens. The commands themselves are registered in src/cli.ts.
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { parseDuration, type Config } from '../../config/schema.js';
import { ALL_ACTIONS, type AccessAction } from './access.js';
import type { RobotRecord } from './robots.js';

/** The htpasswd file the config names: Basic auth's, else the token server's. */
export function htpasswdPathOf(config: Config): string | undefined {
  return config.auth?.htpasswd?.path ?? config.auth?.tokenserver?.htpasswd;
}

/**
 * Reads a password: from a terminal, twice and without echo; from a pipe, the first line (so that
 * `printf %s "$PW" | wharf passwd alice` works and the password never shows in `ps`).
 */
export async function readPassword(input: NodeJS.ReadStream, output: Writable): Promise<string> {
  if (!input.isTTY) {
    let text = '';
    for await (const chunk of input as AsyncIterable<Buffer>) text += chunk.toString('utf8');
    return text.split(/\r?\n/)[0] ?? '';
  }
  const ask = (prompt: string) =>
    new Promise<string>((resolve) => {
      // The prompt is written, then everything readline echoes is swallowed.
      let muted = false;
      const silent = new Writable({
        write(chunk: Buffer, _encoding, done) {
          if (!muted) output.write(chunk);
          done();
        },
      });
      const rl = createInterface({ input, output: silent, terminal: true });
      rl.question(prompt, (answer) => {
        rl.close();
        output.write('\n');
        resolve(answer);
      });
      muted = true;
    });
  const first = await ask('Password: ');
  const second = await ask('Again: ');
  if (first !== second) throw new Error('the passwords do not match');
  return first;
}

/** `30d`, `12h`, `90m` or any Go duration: how long a robot token lives, in ms. */
export function parseExpiry(text: string): number {
  const days = /^(\d+)d$/.exec(text);
  const ms = days ? Number(days[1]) * 86_400_000 : parseDuration(text);
  if (!(ms > 0)) throw new Error(`--expires must be a positive duration such as 30d or 12h, got "${text}"`);
  return ms;
}

export function parseActions(text: string): AccessAction[] {
  const actions = text.split(',').map((a) => a.trim());
  for (const action of actions) {
    if (!(ALL_ACTIONS as readonly string[]).includes(action)) {
      throw new Error(`--actions takes ${ALL_ACTIONS.join(', ')}; got "${action}"`);
    }
  }
  return [...new Set(actions)] as AccessAction[];
}

const GLOB = /^[a-z0-9._/*-]+$/;

export function checkGlobs(globs: readonly string[]): string[] {
  if (globs.length === 0) throw new Error('give at least one --repo GLOB');
  for (const glob of globs) if (!GLOB.test(glob)) throw new Error(`--repo: not a repository glob: "${glob}"`);
  return [...globs];
}

/** The one time a robot token's secret is shown. */
export function formatCreatedRobot(record: RobotRecord, token: string): string {
  return [
    'robot token created; the password is shown only now:',
    `  username: ${record.name}`,
    `  password: ${token}`,
    `  id:       ${record.id}`,
    `  repos:    ${record.repositories.join(' ')}`,
    `  actions:  ${record.actions.join(',')}`,
    `  expires:  ${record.expiresAt}`,
    `log in with: printf %s "$PASSWORD" | docker login -u ${record.name} --password-stdin <registry>`,
    '',
  ].join('\n');
}

export function formatRobots(records: readonly RobotRecord[], now = Date.now()): string {
  if (records.length === 0) return 'no robot tokens\n';
  const rows = records.map((r) => [
    r.id,
    r.name,
    r.repositories.join(' '),
    r.actions.join(','),
    `${r.expiresAt}${Date.parse(r.expiresAt) <= now ? ' (expired)' : ''}`,
  ]);
  const header = ['ID', 'NAME', 'REPOSITORIES', 'ACTIONS', 'EXPIRES'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
  return `${[header, ...rows]
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}
