// The verification agent's own config (`wharf agent --config FILE`). It is a separate process with a
// separate file; only the conventions (durations, listen addresses, repository globs) are shared.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import YAML from 'yaml';
import { durationValue, fieldInfo, listenAddress, regexString, repositoryGlob } from './schema.js';

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
const SIZE = /^(\d+)([bkmg]?)$/i;

/** Parses a size the way `docker run --memory` does ("64m", "1g", "512k", bytes without a unit). */
export function parseSize(text: string): number {
  const m = SIZE.exec(text.trim());
  if (!m) throw new Error(`invalid size "${text}" (expected e.g. 64m, 1g, 512k)`);
  return Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toLowerCase()] ?? Number.NaN);
}

/** A size as text in the file, its text kept (tmpfs takes it as is) and its bytes checked. */
const sizeText = (min: number) =>
  z
    .union([z.string(), z.int()])
    .transform((v) => String(v))
    .superRefine((text, ctx) => {
      try {
        if (parseSize(text) < min) ctx.addIssue({ code: 'custom', message: `must be at least ${min} bytes` });
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
    });

const secret = () => z.string().min(1).register(fieldInfo, { secret: true });

export const DEFAULT_LIMITS = {
  memory: '64m',
  cpus: 0.5,
  pids: 64,
  timeout: '30s',
  tmpfs: '16m',
} as const;

const limitsSchema = z
  .strictObject({
    // Docker refuses a memory limit under 6 MiB.
    memory: sizeText(6 * 1024 * 1024).default(DEFAULT_LIMITS.memory),
    cpus: z.number().positive().max(64).default(DEFAULT_LIMITS.cpus),
    pids: z.int().min(1).default(DEFAULT_LIMITS.pids),
    timeout: durationValue().prefault(DEFAULT_LIMITS.timeout),
    tmpfs: sizeText(4096).default(DEFAULT_LIMITS.tmpfs),
  })
  .prefault({});

const policySchema = z
  .strictObject({
    name: z.string().min(1),
    repositories: z.array(repositoryGlob).min(1),
    run: z
      .strictObject({
        /** Replaces the image's CMD (the ENTRYPOINT stays). */
        command: z.array(z.string()).min(1).optional(),
        env: z
          .union([
            z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
            z.array(z.string().regex(/^[^=]+=/, 'expected NAME=value')),
          ])
          .optional()
          .transform((env) =>
            env === undefined
              ? []
              : Array.isArray(env)
                ? env
                : Object.entries(env).map(([k, v]) => `${k}=${String(v)}`),
          ),
        user: z
          .union([z.string().min(1), z.int().min(0)])
          .optional()
          .transform((u) => (u === undefined ? undefined : String(u))),
      })
      .prefault({}),
    expect: z
      .strictObject({
        exitcode: z.int().min(0).max(255).default(0),
        output: regexString.optional(),
        /** Passes when the container is still running after this long (and healthy, with a HEALTHCHECK). */
        running: durationValue().optional(),
      })
      .prefault({}),
    limits: limitsSchema,
  })
  .superRefine((policy, ctx) => {
    if (policy.expect.running !== undefined && policy.expect.running >= policy.limits.timeout) {
      ctx.addIssue({
        code: 'custom',
        path: ['expect', 'running'],
        message: 'must be shorter than limits.timeout',
      });
    }
  });

export type Policy = z.output<typeof policySchema>;

/** What an image must do when no policy names its repository: exit 0 within the default limits. */
export const DEFAULT_POLICY: Policy = policySchema.parse({ name: 'default', repositories: ['**'] });

export const agentConfigSchema = z.strictObject({
  log: z
    .strictObject({
      level: z.enum(['error', 'warn', 'info', 'debug', 'trace']).default('info'),
      formatter: z.enum(['json', 'text']).default('json'),
      fields: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
    })
    .prefault({}),
  agent: z
    .strictObject({
      listen: listenAddress.default(':5002'),
      registry: z.strictObject({
        url: z.url({ protocol: /^https?$/ }),
        /** The registry's host[:port] as the Docker engine pulls from it; the URL's host by default. */
        name: z.string().min(1).optional(),
        // A robot token (`wharf token create`) is a username and a password too.
        username: z.string().min(1).optional(),
        password: secret().optional(),
      }),
      docker: z.strictObject({ socket: z.string().min(1).default('/var/run/docker.sock') }).prefault({}),
      concurrency: z.int().min(1).max(64).default(2),
      statedir: z.string().min(1).default('./agent-data'),
      /** A private JWK (ES256) file; generated (mode 0600) when it does not exist. */
      signingkey: z.string().min(1).optional(),
      /** Shared bearer token that `POST /events` must carry. */
      token: secret().optional(),
      /** HMAC-SHA256 secret: `X-Wharf-Signature-256: sha256=<hex>` over the body. */
      secret: secret().optional(),
      /** Accept events without a token or signature (tests, a trusted loopback only). */
      insecure: z.boolean().default(false),
      policies: z.array(policySchema).default([]),
    })
    .superRefine((agent, ctx) => {
      if (agent.token === undefined && agent.secret === undefined && !agent.insecure) {
        ctx.addIssue({
          code: 'custom',
          path: ['token'],
          message: 'set agent.token and/or agent.secret (or agent.insecure: true to accept anyone)',
        });
      }
      if (agent.registry.password !== undefined && agent.registry.username === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['registry', 'username'],
          message: 'password needs a username',
        });
      }
      const names = new Set<string>();
      for (const [i, policy] of agent.policies.entries()) {
        if (names.has(policy.name)) {
          ctx.addIssue({
            code: 'custom',
            path: ['policies', i, 'name'],
            message: `duplicate policy "${policy.name}"`,
          });
        }
        names.add(policy.name);
      }
    }),
});

export type AgentConfig = z.output<typeof agentConfigSchema>;
export type AgentConfigInput = z.input<typeof agentConfigSchema>;

export class AgentConfigError extends Error {
  override name = 'AgentConfigError';
}

/** Validates a parsed document; the error lists every bad key on one line. */
export function parseAgentConfig(raw: unknown, source = 'config'): AgentConfig {
  const result = agentConfigSchema.safeParse(raw ?? {});
  if (result.success) return result.data;
  const problems = result.error.issues.map(
    (issue) => `${issue.path.length > 0 ? `${issue.path.join('.')}: ` : ''}${issue.message}`,
  );
  throw new AgentConfigError(`${source}: ${problems.join('; ')}`);
}

/** Reads and validates a YAML agent config file. */
export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new AgentConfigError(`file ${file}: cannot read: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (err) {
    throw new AgentConfigError(`file ${file}: invalid YAML: ${(err as Error).message.split('\n')[0] ?? ''}`);
  }
  return parseAgentConfig(raw, `file ${file}`);
}
