// The one definition of Wharf's configuration. Keys follow CNCF Distribution's config.yml wherever
// the feature exists there, so an existing Distribution config loads unchanged (see config/load.ts
// for the keys Distribution has and Wharf ignores with a warning).
import { z } from 'zod';

/** Facts about a field that the loader and `wharf config check` need beyond its type. */
export interface FieldInfo {
  /** Masked when the effective config is printed. */
  secret?: boolean;
  /** A Go duration string in the file ("10s", "168h"); milliseconds in the parsed Config. */
  duration?: boolean;
}
export const fieldInfo = z.registry<FieldInfo>();

const DURATION_UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3, // U+00B5, as Go accepts
  μs: 1e-3, // U+03BC
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const DURATION_PART = /(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/** Parses a Go duration ("300ms", "1.5h", "2h45m", "0") into milliseconds, as Go's time.ParseDuration. */
export function parseDuration(text: string): number {
  const sign = text.startsWith('-') ? -1 : 1;
  const rest = text.startsWith('-') || text.startsWith('+') ? text.slice(1) : text;
  if (rest === '0') return 0;
  if (rest === '') throw new Error(`invalid duration "${text}"`);
  let total = 0;
  let pos = 0;
  while (pos < rest.length) {
    DURATION_PART.lastIndex = pos;
    const part = DURATION_PART.exec(rest);
    if (!part) throw new Error(`invalid duration "${text}"`);
    total += Number(part[1]) * (DURATION_UNIT_MS[part[2] ?? ''] ?? Number.NaN);
    pos = DURATION_PART.lastIndex;
  }
  return sign * total;
}

/** The inverse of parseDuration, in the compact form Distribution's docs use ("168h", "1h30m", "10s"). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  const sign = ms < 0 ? '-' : '';
  let rest = Math.abs(ms);
  let out = '';
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  if (rest > 0) out += `${rest}ms`;
  return sign + out;
}

function duration(defaultValue: string) {
  return durationValue().prefault(defaultValue);
}

/** A Go duration string in the file, milliseconds after parsing. Shared with config/agent-schema.ts. */
export function durationValue() {
  return z
    .string({ error: 'expected a duration string such as "10s", "5m" or "168h"' })
    .transform((text, ctx) => {
      let ms: number;
      try {
        ms = parseDuration(text);
      } catch {
        ctx.addIssue({
          code: 'custom',
          message: `expected a duration such as "10s", "5m" or "168h", got "${text}"`,
        });
        return z.NEVER;
      }
      if (ms < 0) ctx.addIssue({ code: 'custom', message: `must not be negative, got "${text}"` });
      return ms;
    })
    .register(fieldInfo, { duration: true });
}

const DEFAULT_GC_GRACE = '1h';

const secret = () => z.string().register(fieldInfo, { secret: true });

export const regexString = z.string().refine(
  (source) => {
    try {
      new RegExp(source);
      return true;
    } catch {
      return false;
    }
  },
  { error: (iss) => `not a valid regular expression: ${JSON.stringify(iss.input)}` },
);

// "host:port", ":port" or "[v6]:port", as Go's net.Listen takes it.
const LISTEN_ADDR = /^(\[[0-9a-fA-F:.%\w]+\]|[^:[\]]*):(\d{1,5})$/;

/** Splits `http.addr` into what node's `server.listen` takes; an empty host means every interface. */
export function parseListenAddress(addr: string): { host: string | undefined; port: number } {
  const m = LISTEN_ADDR.exec(addr);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new Error(`invalid listen address "${addr}" (expected host:port or :port)`);
  const host = (m[1] ?? '').replace(/^\[(.*)\]$/, '$1');
  return { host: host === '' ? undefined : host, port };
}

export const listenAddress = z.string().refine(
  (addr) => {
    try {
      parseListenAddress(addr);
      return true;
    } catch {
      return false;
    }
  },
  { error: (iss) => `expected host:port or :port, got ${JSON.stringify(iss.input)}` },
);

// A driver section may be written empty (`inmemory:`), which YAML reads as null.
const driverSection = <T extends z.core.$ZodLooseShape>(shape: T) =>
  z.preprocess((v) => v ?? {}, z.strictObject(shape));

export const STORAGE_DRIVERS = ['filesystem', 'inmemory', 's3'] as const;
export type StorageDriverName = (typeof STORAGE_DRIVERS)[number];

const filesystemSchema = driverSection({
  rootdirectory: z.string().min(1).default('./data'),
  // Distribution's bound on concurrent blocking fs operations; the same floor of 25.
  maxthreads: z.int().min(25).default(100),
});

const s3Schema = driverSection({
  bucket: z.string().min(1),
  region: z.string().min(1),
  regionendpoint: z.url().optional(),
  forcepathstyle: z.boolean().default(false),
  accesskey: secret().optional(),
  secretkey: secret().optional(),
  rootdirectory: z.string().optional(),
  encrypt: z.boolean().default(false),
  storageclass: z.string().default('STANDARD'),
  // S3 rejects multipart parts under 5 MiB; Distribution's default is 10 MiB.
  chunksize: z
    .int()
    .min(5 * 1024 * 1024)
    .default(10 * 1024 * 1024),
  // Wharf's own: Distribution's s3 driver has no such keys.
  connecttimeout: duration('5s'),
  requesttimeout: duration('60s'),
  maxretries: z.int().min(0).max(20).default(4),
});

function configuredDrivers(storage: unknown): StorageDriverName[] {
  const section = storage as Partial<Record<StorageDriverName, unknown>>;
  return STORAGE_DRIVERS.filter((name) => section[name] !== undefined);
}

const storageSchema = z
  .strictObject({
    filesystem: filesystemSchema.optional(),
    inmemory: driverSection({}).optional(),
    s3: s3Schema.optional(),
    delete: z.strictObject({ enabled: z.boolean().default(false) }).prefault({}),
    redirect: z.strictObject({ disable: z.boolean().default(false) }).prefault({}),
    cache: z.strictObject({ blobdescriptor: z.enum(['inmemory']).optional() }).prefault({}),
    maintenance: z
      .strictObject({
        uploadpurging: z
          .strictObject({
            enabled: z.boolean().default(true),
            age: duration('168h'),
            interval: duration('24h'),
            dryrun: z.boolean().default(false),
          })
          .prefault({}),
      })
      .prefault({}),
  })
  .refine((storage) => configuredDrivers(storage).length <= 1, {
    error: (iss) =>
      `exactly one storage driver must be configured, got ${configuredDrivers(iss.input).join(' and ')}`,
    // Also when a driver section has errors of its own: two drivers is the mistake to report first.
    when: (payload) => typeof payload.value === 'object' && payload.value !== null,
  })
  // No driver at all means the zero-setup default: the filesystem under ./data.
  .transform((storage) => {
    if (configuredDrivers(storage).length > 0) return storage;
    const { filesystem: _none, ...rest } = storage;
    return { filesystem: filesystemSchema.parse({}), ...rest };
  })
  .prefault({});

export const ACCESS_ACTIONS = ['pull', 'push', 'delete'] as const;
export type AccessAction = (typeof ACCESS_ACTIONS)[number];
/** What the token verifier accepts (Distribution 3's `signingalgorithms`); never `none` or HMAC. */
export const TOKEN_ALGORITHMS = [
  ...['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'],
  'EdDSA',
] as const;

// A repository glob: `*` stays inside one path component, `**` crosses them (src/auth/access.ts).
export const repositoryGlob = z
  .string()
  .regex(/^[a-z0-9._/*-]+$/, { error: (iss) => `not a repository glob: ${JSON.stringify(iss.input)}` });

// Distribution's `auth` keys (htpasswd, token) plus Wharf's token server, access rules and login limits.
const authSchema = z
  .strictObject({
    htpasswd: z.strictObject({ realm: z.string().min(1), path: z.string().min(1) }).optional(),
    token: z
      .strictObject({
        realm: z.url().optional(),
        service: z.string().min(1),
        issuer: z.string().min(1),
        rootcertbundle: z.string().min(1).optional(),
        jwks: z.string().min(1).optional(),
        signingalgorithms: z.array(z.enum(TOKEN_ALGORITHMS)).min(1).optional(),
      })
      .optional(),
    tokenserver: z
      .strictObject({
        enabled: z.boolean().default(false),
        /** The users the token server authenticates (bcrypt htpasswd). */
        htpasswd: z.string().min(1).optional(),
        /** PEM private key or private JWK (EC P-256/P-384, RSA, Ed25519). */
        signingkey: z.string().min(1).optional(),
        issuer: z.string().min(1).optional(),
        service: z.string().min(1).optional(),
        expiration: duration('5m'),
      })
      .optional(),
    access: z
      .strictObject({
        groups: z.record(z.string(), z.array(z.string().min(1))).default({}),
        rules: z
          .array(
            z.strictObject({
              repositories: z.array(repositoryGlob).min(1),
              users: z.array(z.string().min(1)).default([]),
              groups: z.array(z.string().min(1)).default([]),
              actions: z.array(z.enum(ACCESS_ACTIONS)).default([]),
              /** Anyone, without credentials, may pull these repositories. */
              anonymous: z.boolean().default(false),
            }),
          )
          .default([]),
      })
      .optional(),
    ratelimit: z
      .strictObject({
        peruser: z.int().min(1).default(10),
        peraddress: z.int().min(1).default(50),
        window: duration('5m'),
      })
      .prefault({}),
  })
  .superRefine((auth, ctx) => {
    const problem = (path: string[], message: string) => {
      ctx.addIssue({ code: 'custom', path, message });
    };
    const server = auth.tokenserver?.enabled === true ? auth.tokenserver : undefined;
    if (server) {
      if (server.htpasswd === undefined) problem(['tokenserver', 'htpasswd'], 'required when enabled');
      if (server.signingkey === undefined) problem(['tokenserver', 'signingkey'], 'required when enabled');
      if (auth.htpasswd) {
        problem(
          ['htpasswd'],
          'with the token server on, the registry takes tokens; its users go in auth.tokenserver.htpasswd',
        );
      }
      for (const key of ['issuer', 'service'] as const) {
        const own = server[key];
        const verified = auth.token?.[key];
        if (own !== undefined && verified !== undefined && own !== verified) {
          problem(
            ['tokenserver', key],
            `must equal auth.token.${key} ("${verified}"), or the registry refuses its tokens`,
          );
        }
      }
    } else {
      if (auth.htpasswd && auth.token) problem([], 'configure exactly one of auth.htpasswd and auth.token');
      if (!auth.htpasswd && !auth.token) {
        problem([], 'configure auth.htpasswd, auth.token or auth.tokenserver (or remove the auth section)');
      }
      if (auth.token) {
        if (auth.token.realm === undefined) problem(['token', 'realm'], 'required (the token server URL)');
        if (auth.token.rootcertbundle === undefined && auth.token.jwks === undefined) {
          problem(['token'], 'rootcertbundle or jwks is required to verify tokens');
        }
      }
    }
    const groups = auth.access?.groups ?? {};
    for (const [i, rule] of (auth.access?.rules ?? []).entries()) {
      for (const group of rule.groups) {
        if (!(group in groups)) problem(['access', 'rules', String(i), 'groups'], `unknown group "${group}"`);
      }
    }
  });

export type AuthConfig = z.output<typeof authSchema>;

export const configSchema = z
  .strictObject({
    // YAML reads `version: 0.1` as a number; Distribution writes it that way.
    version: z
      .union([z.literal('0.1'), z.literal(0.1)], { error: 'expected version 0.1' })
      .transform(() => '0.1' as const)
      .optional(),
    log: z
      .strictObject({
        level: z.enum(['error', 'warn', 'info', 'debug', 'trace']).default('info'),
        // Unset: human-readable on a terminal, JSON lines otherwise (a log collector, a container).
        formatter: z.enum(['json', 'text']).optional(),
        fields: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
      })
      .prefault({}),
    http: z
      .strictObject({
        addr: listenAddress.default(':5000'),
        prefix: z.string().startsWith('/').optional(),
        host: z.url().optional(),
        draintimeout: duration('10s'),
        headers: z.record(z.string(), z.array(z.string())).default({}),
        // Distribution's debug server. With `addr`, metrics (and the health endpoints) are served on that
        // listener instead of the main one; `prometheus` moves the metrics path or turns it off.
        debug: z
          .strictObject({
            addr: listenAddress.optional(),
            prometheus: z
              .strictObject({
                enabled: z.boolean().default(true),
                path: z
                  .string()
                  .regex(/^\/[A-Za-z0-9._~/-]*$/, 'expected an absolute URL path')
                  .refine((path) => !/^\/v2(\/|$)/.test(path), 'must not be under /v2')
                  .default('/metrics'),
              })
              .prefault({}),
          })
          .optional(),
        tls: z.strictObject({ certificate: z.string().min(1), key: z.string().min(1) }).optional(),
      })
      .prefault({}),
    storage: storageSchema,
    auth: authSchema.optional(),
    // Wharf's own section: online garbage collection (src/gc/collect.ts). Absent means the defaults
    // below and no schedule; `wharf gc` runs it once either way.
    gc: z
      .strictObject({
        interval: durationValue().optional(),
        grace: duration(DEFAULT_GC_GRACE),
        deleteuntagged: z.boolean().default(false),
      })
      .optional(),
    // >>> notifications (webhooks; owner: src/notifications) >>>
    // Distribution's `notifications` section, plus Wharf's `secret` and `maxbackoff` per endpoint.
    // Absent: no webhooks. Zero `timeout`, `threshold` or `backoff` mean the default, as in Distribution.
    notifications: z
      .strictObject({
        events: z.strictObject({ includereferences: z.boolean().default(false) }).prefault({}),
        endpoints: z
          .array(
            z.strictObject({
              name: z.string().min(1),
              disabled: z.boolean().default(false),
              url: z.url({
                protocol: /^https?$/,
                error: (iss) =>
                  iss.input === undefined
                    ? 'required (an http or https URL)'
                    : `expected an http or https URL, got ${JSON.stringify(iss.input)}`,
              }),
              // Header values often carry credentials (Authorization), so all of them are masked.
              headers: z.record(z.string(), z.array(secret())).default({}),
              timeout: duration('1s'),
              threshold: z.int().min(0).default(10),
              backoff: duration('1s'),
              ignoredmediatypes: z.array(z.string()).default([]),
              ignore: z
                .strictObject({
                  mediatypes: z.array(z.string()).default([]),
                  actions: z.array(z.enum(['push', 'pull', 'delete', 'mount'])).default([]),
                })
                .prefault({}),
              /** HMAC-SHA256 key: each request carries `X-Wharf-Signature-256: sha256=<hex>` of its body. */
              secret: secret().optional(),
              /** The longest wait between retries once backoff grows. */
              maxbackoff: duration('5m'),
            }),
          )
          .default([])
          .refine((endpoints) => new Set(endpoints.map((e) => e.name)).size === endpoints.length, {
            error: 'endpoint names must be unique (each has its own queue)',
          }),
      })
      .optional(),
    // <<< notifications <<<
    // >>> verification (quarantine, trusted keys; owner: src/verify) >>>
    // Wharf's own section: pulls BY TAG from `quarantine` repositories need a passing verdict signed by a
    // key in `trustedkeys` (a JWKS file, or an http(s) URL such as the agent's /.well-known/jwks.json,
    // fetched again every `refreshinterval`). Pulls by digest stay open (the agent pulls that way).
    verification: z
      .strictObject({
        quarantine: z.array(repositoryGlob).default([]),
        trustedkeys: z.string().min(1).optional(),
        refreshinterval: duration('5m'),
        /** How long a passing decision is reused: a newer FAILED verdict takes this long to bite. */
        cachettl: duration('30s'),
      })
      .superRefine((verification, ctx) => {
        if (verification.quarantine.length > 0 && verification.trustedkeys === undefined) {
          ctx.addIssue({
            code: 'custom',
            path: ['trustedkeys'],
            message: 'required when verification.quarantine is set (a JWKS file path or http(s) URL)',
          });
        }
      })
      .optional(),
    // <<< verification <<<
    validation: z
      .strictObject({
        manifests: z
          .strictObject({
            // Wharf's own key: the manifest size limit (413 above it). The spec asks for at least 4 MiB.
            maxsize: z
              .int()
              .min(1024)
              .default(4 * 1024 * 1024),
            urls: z
              .strictObject({ allow: z.array(regexString).optional(), deny: z.array(regexString).optional() })
              .optional(),
          })
          .prefault({}),
      })
      .prefault({}),
  })
  .prefault({});

export type Config = z.output<typeof configSchema>;

export interface GcSettings {
  /** Milliseconds between scheduled runs; undefined: the server schedules none. */
  readonly interval: number | undefined;
  readonly grace: number;
  readonly deleteuntagged: boolean;
}

/** The `gc` section with its defaults applied (the section is optional). */
export function gcSettings(config: Config): GcSettings {
  return {
    interval: config.gc?.interval,
    grace: config.gc?.grace ?? parseDuration(DEFAULT_GC_GRACE),
    deleteuntagged: config.gc?.deleteuntagged ?? false,
  };
}
/** What a config file may contain (before defaults and duration parsing). */
export type ConfigInput = z.input<typeof configSchema>;

export type StorageDriverConfig =
  | { name: 'filesystem'; params: NonNullable<Config['storage']['filesystem']> }
  | { name: 'inmemory'; params: NonNullable<Config['storage']['inmemory']> }
  | { name: 's3'; params: NonNullable<Config['storage']['s3']> };

/** The one configured storage driver (the schema guarantees exactly one). */
export function storageDriver(storage: Config['storage']): StorageDriverConfig {
  if (storage.s3) return { name: 's3', params: storage.s3 };
  if (storage.inmemory) return { name: 'inmemory', params: storage.inmemory };
  return { name: 'filesystem', params: storage.filesystem ?? filesystemSchema.parse({}) };
}

/**
 * Keys that CNCF Distribution's config.yml has and Wharf does not implement yet. They are removed
 * before validation with a warning, so existing configs still load. A key here also covers its children.
 */
export const DISTRIBUTION_ONLY_KEYS: readonly string[] = [
  'loglevel',
  'log.accesslog',
  'log.hooks',
  'auth.silly',
  'auth.token.autoredirect',
  'auth.token.autoredirectpath',
  'middleware',
  'catalog',
  'tags',
  'redis',
  'health',
  'proxy',
  'reporting',
  'compatibility',
  'http.net',
  'http.secret',
  'http.relativeurls',
  'http.http2',
  'http.h2c',
  'http.tls.clientcas',
  'http.tls.clientauth',
  'http.tls.minimumtls',
  'http.tls.ciphersuites',
  'http.tls.letsencrypt',
  'storage.tag',
  'storage.cache.blobdescriptorsize',
  'storage.maintenance.readonly',
  ...[
    'redirectendpoint',
    'keyid',
    'secure',
    'skipverify',
    'v4auth',
    'multipartcopychunksize',
    'multipartcopymaxconcurrency',
    'multipartcopythresholdsize',
    'useragent',
    'usedualstack',
    'accelerate',
    'usefipsendpoint',
    'objectacl',
    'loglevel',
    'sessiontoken',
  ].map((key) => `storage.s3.${key}`),
  'validation.enabled',
  'validation.disabled',
  'validation.manifests.indexes',
];

/** Why ignoring a key changes what the registry does, where that matters for safety. */
export const DISTRIBUTION_ONLY_CONSEQUENCES: Readonly<Record<string, string>> = {
  'storage.maintenance.readonly': 'read-only mode is not available, writes are accepted',
  'http.tls.clientcas': 'client certificates are not checked',
};

/**
 * Distribution keys whose absence would be unsafe: ignoring them would open the registry, so a config
 * that sets them is refused until Wharf implements them.
 */
export const DISTRIBUTION_ONLY_REFUSED: Readonly<Record<string, string>> = {
  'auth.silly':
    'the silly access controller admits any credentials; use auth.htpasswd, auth.token or auth.tokenserver',
};

/** Values Distribution accepts that Wharf maps onto its nearest equivalent, with a warning. */
export const DISTRIBUTION_VALUE_ALIASES: readonly { path: string; from: string; to: string }[] = [
  { path: 'log.formatter', from: 'logstash', to: 'json' },
  { path: 'storage.cache.blobdescriptor', from: 'redis', to: 'inmemory' },
];

/** Storage drivers Distribution has and Wharf does not: a config naming one cannot be served. */
export const DISTRIBUTION_ONLY_DRIVERS: readonly string[] = ['azure', 'gcs', 'swift', 'oss'];
