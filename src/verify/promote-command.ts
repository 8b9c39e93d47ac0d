import type { Command } from 'commander';
import { isValidName, isValidTag } from '../registry/names.js';

const DEFAULT_REGISTRY = 'http://127.0.0.1:5000';
const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

interface PromoteCommandOptions {
  registry?: string;
  username?: string;
  passwordStdin?: boolean;
  requireVerified?: boolean;
  trustedKeys?: string;
  verdicts: boolean;
}

class UsageError extends Error {}

/** `[host/]repo:tag` or `[host/]repo@digest`; a host is a first component with a dot or a port, or localhost. */
export function parseReference(
  text: string,
  opts: { digestAllowed: boolean },
): {
  host?: string;
  repo: string;
  ref: string;
} {
  let rest = text;
  let host: string | undefined;
  const slash = rest.indexOf('/');
  const first = slash > 0 ? rest.slice(0, slash) : '';
  if (first !== '' && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    host = first;
    rest = rest.slice(slash + 1);
  }
  let repo: string;
  let ref: string;
  const at = rest.indexOf('@');
  if (at >= 0) {
    if (!opts.digestAllowed) throw new UsageError(`${text}: give the target as REPO:TAG`);
    repo = rest.slice(0, at);
    ref = rest.slice(at + 1);
    if (!DIGEST.test(ref)) throw new UsageError(`${text}: ${ref} is not a digest`);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon < 0)
      throw new UsageError(`${text}: give a tag (REPO:TAG${opts.digestAllowed ? ' or REPO@DIGEST' : ''})`);
    repo = rest.slice(0, colon);
    ref = rest.slice(colon + 1);
    if (!isValidTag(ref)) throw new UsageError(`${text}: ${ref} is not a valid tag`);
  }
  if (!isValidName(repo)) throw new UsageError(`${text}: ${repo} is not a valid repository name`);
  return { ...(host !== undefined && { host }), repo, ref };
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

/** Writes and exits once the output is flushed (fetch may keep sockets open). */
function exit(code: number, out: string, err: string): void {
  if (err !== '') process.stderr.write(err);
  process.stdout.write(out, () => process.exit(code));
}

async function run(src: string, dst: string, opts: PromoteCommandOptions): Promise<void> {
  const { PROMOTE_EXIT_CODES, PromoteError, promote } = await import('./promote.js');
  const { RegistryClient } = await import('../client/registry-client.js');
  const { TrustedKeys } = await import('./trusted-keys.js');
  try {
    const from = parseReference(src, { digestAllowed: true });
    const to = parseReference(dst, { digestAllowed: false });
    let url = opts.registry ?? (process.env.WHARF_REGISTRY || undefined);
    const host = from.host ?? to.host;
    if (from.host !== undefined && to.host !== undefined && from.host !== to.host) {
      throw new UsageError('source and target must be on the same registry (promotion copies on the server)');
    }
    if (url === undefined) url = host !== undefined ? `http://${host}` : DEFAULT_REGISTRY;
    else if (host !== undefined && new URL(url).host !== host) {
      throw new UsageError(`the references name ${host} but --registry is ${url}`);
    }
    const username = opts.username ?? (process.env.WHARF_USERNAME || undefined);
    let password = process.env.WHARF_PASSWORD;
    if (opts.passwordStdin === true) {
      if (opts.username === undefined) throw new UsageError('--password-stdin needs --username');
      password = await readStdin();
    }
    const trustedKeys = opts.trustedKeys ?? (process.env.WHARF_TRUSTED_KEYS || undefined);
    if (opts.requireVerified === true && trustedKeys === undefined) {
      throw new UsageError(
        '--require-verified needs --trusted-keys (a JWKS file or URL) or $WHARF_TRUSTED_KEYS',
      );
    }
    let keys;
    if (opts.requireVerified === true && trustedKeys !== undefined) {
      keys = new TrustedKeys(trustedKeys, { refreshMs: Number.MAX_SAFE_INTEGER });
      try {
        await keys.get();
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    }
    const client = new RegistryClient({
      url,
      ...(username !== undefined && { username }),
      ...(password !== undefined && { password }),
    });
    const result = await promote({
      client,
      from: { repo: from.repo, ref: from.ref },
      to: { repo: to.repo, tag: to.ref },
      ...(keys && { trustedKeys: keys }),
      copyVerdicts: opts.verdicts,
    });
    const verdicts = result.verdicts.length;
    exit(
      0,
      `${to.repo}:${to.ref}@${result.digest}\n`,
      `wharf: promoted ${from.repo}${from.ref.includes(':') ? '@' : ':'}${from.ref} to ${to.repo}:${to.ref}` +
        ` (${result.mounted} blobs mounted, ${verdicts} verdict${verdicts === 1 ? '' : 's'} copied` +
        `${result.decision?.passed === true ? ', verified' : ''})\n`,
    );
  } catch (err) {
    if (err instanceof UsageError) exit(PROMOTE_EXIT_CODES.usage, '', `wharf: promote: ${err.message}\n`);
    else if (err instanceof PromoteError) {
      const what = ['not-found', 'mount-failed'].includes(err.kind) ? 'failed' : 'refused';
      exit(PROMOTE_EXIT_CODES[err.kind], '', `wharf: promote ${what}: ${err.message}\n`);
    } else {
      const message = err instanceof Error ? err.message : String(err);
      exit(PROMOTE_EXIT_CODES.error, '', `wharf: promote failed: ${message}\n`);
    }
  }
}

const EXIT_CODE_HELP = `
Exit codes:
   0  promoted; stdout has REPO:TAG@DIGEST of the target
   1  error: registry unreachable, unexpected answer, authentication failed
   2  usage: bad reference or option, trusted keys unreadable
   3  the source image does not exist
   4  a blob could not be mounted (the registry offered an upload; nothing is copied through the client)
  10  refused: no verification verdict is attached to the source image
  11  refused: the newest valid verdict FAILED (its failed tests are printed)
  12  refused: the verdict's signature does not verify with the trusted keys
  13  refused: the verdict's subject digest is not the source image's
  14  refused: the verdict is invalid (malformed envelope, wrong payload or predicate type, annotation mismatch)

With --require-verified the newest valid verdict decides (a FAILED one newer than a PASSED one refuses).
An index without verdicts of its own needs a passing verdict for every linux/amd64 child.
Verdicts are copied to the target with the image (unless --no-verdicts), so a quarantined target serves it.
Credentials: --username with --password-stdin, or $WHARF_USERNAME and $WHARF_PASSWORD.
`;

/** `wharf promote SRC DST`: a server-side copy of a manifest, optionally only when verified (issue 6). */
export function registerPromoteCommand(program: Command): void {
  program
    .command('promote')
    .description('copy an image from one repository to another on the server (blobs are mounted, not copied)')
    .argument('<src>', 'REPO:TAG or REPO@DIGEST')
    .argument('<dst>', 'REPO:TAG')
    .option('--registry <url>', `registry URL (default: $WHARF_REGISTRY, else ${DEFAULT_REGISTRY})`)
    .option('-u, --username <user>', 'user name (default: $WHARF_USERNAME)')
    .option('--password-stdin', 'read the password from stdin (default: $WHARF_PASSWORD)')
    .option('--require-verified', 'refuse unless a passing verdict signed by a trusted key is attached')
    .option(
      '--trusted-keys <jwks>',
      "JWKS file or http(s) URL, e.g. the agent's /.well-known/jwks.json (default: $WHARF_TRUSTED_KEYS)",
    )
    .option('--no-verdicts', 'do not copy the verdicts to the target')
    .addHelpText('after', EXIT_CODE_HELP)
    .action(run);
}
