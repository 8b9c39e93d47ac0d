// Loads the config: YAML file → environment overrides → Distribution compatibility → schema.
//
// Environment: `WHARF_<PATH>` and Distribution's `REGISTRY_<PATH>` (WHARF_ wins), the key path
// upper-cased and joined with `_`, resolved against the schema's own key paths. Values are coerced
// to the key's type; lists and mappings take JSON or YAML flow syntax (`[nosniff]`). Also:
// - a mapping's entries: `WHARF_LOG_FIELDS_SERVICE=registry` sets `log.fields.service`;
// - a list's elements: `WHARF_VALIDATION_MANIFESTS_URLS_ALLOW_0=...`;
// - the driver: `WHARF_STORAGE=inmemory`, as Distribution's `REGISTRY_STORAGE=s3`.
// An override under another driver than the file's (`WHARF_STORAGE_S3_BUCKET` on a filesystem
// config) replaces the file's driver section, so one variable can switch a deployment's storage.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import YAML from 'yaml';
import {
  configSchema,
  DISTRIBUTION_ONLY_CONSEQUENCES,
  DISTRIBUTION_ONLY_REFUSED,
  DISTRIBUTION_ONLY_DRIVERS,
  DISTRIBUTION_ONLY_KEYS,
  DISTRIBUTION_VALUE_ALIASES,
  fieldInfo,
  formatDuration,
  STORAGE_DRIVERS,
  type Config,
  type FieldInfo,
} from './schema.js';

export interface ConfigProblem {
  /** Dotted key path, e.g. `http.addr`; empty for the whole document. */
  path: string;
  reason: string;
  /** Where the bad value came from: `file config.yml`, `env WHARF_HTTP_ADDR`. */
  source?: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly problems: readonly ConfigProblem[]) {
    // One line, so the CLI can print it as is.
    super(
      problems
        .map((p) => `config: ${p.path ? `${p.path}: ` : ''}${p.reason}${p.source ? ` (${p.source})` : ''}`)
        .join('; '),
    );
  }
}

export interface LoadedConfig {
  config: Config;
  warnings: string[];
}

/** Variables the CLI reads itself; not config keys. */
const RESERVED_ENV = new Set(['WHARF_CONFIG']);
const ENV_PREFIXES = ['REGISTRY_', 'WHARF_'] as const; // in order of application: WHARF_ wins

/**
 * Reads `file` (YAML; none means built-in defaults), applies overrides from `env` (default
 * `process.env`) and validates. Throws ConfigError naming every bad key, its reason and its source.
 */
export function loadConfig(opts: { file?: string; env?: NodeJS.ProcessEnv } = {}): LoadedConfig {
  const { file, env = process.env } = opts;
  if (file === undefined) return parseConfig({}, { env });
  const source = `file ${file}`;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ path: '', reason: `cannot read: ${(err as Error).message}`, source }]);
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (err) {
    throw new ConfigError([{ path: '', reason: `invalid YAML: ${oneLine((err as Error).message)}`, source }]);
  }
  return parseConfig(raw ?? {}, { env, source });
}

/** The same pipeline on an already parsed document; a config builder for tests. */
export function parseConfig(
  raw: unknown,
  opts: { env?: NodeJS.ProcessEnv; source?: string } = {},
): LoadedConfig {
  const { env = {}, source } = opts;
  if (!isMapping(raw)) {
    throw new ConfigError([
      { path: '', reason: `expected a mapping at the top level, got ${show(raw)}`, source },
    ]);
  }
  const doc = structuredClone(raw);
  const warnings: string[] = [];
  const problems: ConfigProblem[] = [];
  const envSources = applyEnv(doc, env, warnings, problems);
  applyDistributionCompat(doc, warnings, problems, envSources);

  const result = configSchema.safeParse(doc, { reportInput: true, error: errorMessage });
  if (!result.success) {
    for (const issue of result.error.issues) problems.push(...toProblems(issue, envSources, source));
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  return { config: result.data, warnings };
}

// ---- the schema's key tree, walked for env names, suggestions and rendering ----

type SchemaNode =
  | { kind: 'object'; children: Map<string, SchemaNode>; info: FieldInfo }
  | { kind: 'record'; value: SchemaNode; info: FieldInfo }
  | { kind: 'array'; element: SchemaNode; info: FieldInfo }
  | { kind: 'leaf'; type: 'string' | 'number' | 'boolean'; info: FieldInfo };

function describe(schema: z.core.$ZodType, info: FieldInfo = {}): SchemaNode {
  const here = { ...info, ...fieldInfo.get(schema) };
  if (
    schema instanceof z.ZodOptional ||
    schema instanceof z.ZodNullable ||
    schema instanceof z.ZodDefault ||
    schema instanceof z.ZodPrefault
  ) {
    return describe(schema.unwrap(), here);
  }
  if (schema instanceof z.ZodPipe) {
    // A preprocess (transform → schema) is described by its target, a transform by its input.
    return describe(schema.in instanceof z.ZodTransform ? schema.out : schema.in, here);
  }
  if (schema instanceof z.ZodObject) {
    const children = new Map<string, SchemaNode>();
    for (const [key, child] of Object.entries<z.core.$ZodType>(schema.shape))
      children.set(key, describe(child));
    return { kind: 'object', children, info: here };
  }
  if (schema instanceof z.ZodRecord) return { kind: 'record', value: describe(schema.valueType), info: here };
  if (schema instanceof z.ZodArray) return { kind: 'array', element: describe(schema.element), info: here };
  if (schema instanceof z.ZodNumber) return { kind: 'leaf', type: 'number', info: here };
  if (schema instanceof z.ZodBoolean) return { kind: 'leaf', type: 'boolean', info: here };
  return { kind: 'leaf', type: 'string', info: here };
}

const schemaTree = describe(configSchema);

interface EnvTarget {
  path: string[];
  node: SchemaNode;
  /** Set when the variable names one element of a list (`..._ALLOW_0`). */
  index?: number;
}

/** Every env name the schema defines (without prefix), e.g. `HTTP_ADDR` → http.addr. */
function envIndex(): Map<string, EnvTarget> {
  const index = new Map<string, EnvTarget>();
  const visit = (node: SchemaNode, path: string[]) => {
    if (path.length > 0 && path[0] !== 'version') index.set(path.join('_').toUpperCase(), { path, node });
    if (node.kind === 'object') for (const [key, child] of node.children) visit(child, [...path, key]);
  };
  visit(schemaTree, []);
  return index;
}
const ENV_INDEX = envIndex();

function resolveEnvName(name: string): EnvTarget | undefined {
  const exact = ENV_INDEX.get(name);
  if (exact) return exact;
  // The longest container whose name prefixes this one: a mapping entry or a list element.
  let best: EnvTarget | undefined;
  let bestLength = -1;
  for (const [envName, target] of ENV_INDEX) {
    if (!name.startsWith(`${envName}_`) || envName.length <= bestLength) continue;
    const rest = name.slice(envName.length + 1);
    if (target.node.kind === 'record') {
      best = { path: [...target.path, rest.toLowerCase()], node: target.node.value };
    } else if (target.node.kind === 'array' && /^\d+$/.test(rest)) {
      best = { path: [...target.path, rest], node: target.node.element, index: Number(rest) };
    } else continue;
    bestLength = envName.length;
  }
  return best;
}

function coerceEnv(text: string, node: SchemaNode): unknown {
  if (node.kind !== 'leaf') {
    try {
      return YAML.parse(text) as unknown;
    } catch {
      throw new Error(`expected JSON or YAML, got ${JSON.stringify(text)}`);
    }
  }
  switch (node.type) {
    case 'string':
      return text;
    case 'number': {
      const n = Number(text.trim());
      if (text.trim() === '' || !Number.isFinite(n))
        throw new Error(`expected number, got ${JSON.stringify(text)}`);
      return n;
    }
    case 'boolean':
      if (/^(true|1)$/i.test(text.trim())) return true;
      if (/^(false|0)$/i.test(text.trim())) return false;
      throw new Error(`expected true or false, got ${JSON.stringify(text)}`);
  }
}

/** Applies env overrides to `doc`; returns which dotted path each variable set. */
function applyEnv(
  doc: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  warnings: string[],
  problems: ConfigProblem[],
): Map<string, string> {
  const sources = new Map<string, string>();
  const envDrivers = new Set<string>();
  for (const prefix of ENV_PREFIXES) {
    // Sorted, as Distribution does, so a section is set before the keys inside it.
    const names = Object.keys(env)
      .filter((n) => n.startsWith(prefix) && !RESERVED_ENV.has(n))
      .sort();
    for (const name of names) {
      const text = env[name] ?? '';
      const rest = name.slice(prefix.length);
      const source = `env ${name}`;
      if (rest === 'STORAGE') {
        const driver = text.trim().toLowerCase();
        if (!(STORAGE_DRIVERS as readonly string[]).includes(driver)) {
          problems.push({
            path: 'storage',
            reason: `expected ${STORAGE_DRIVERS.join(' or ')}, got ${show(text)}`,
            source,
          });
          continue;
        }
        const storage = ensureMapping(doc, ['storage']);
        if (!isMapping(storage[driver])) storage[driver] = {};
        envDrivers.add(driver);
        sources.set(`storage.${driver}`, name);
        continue;
      }
      const target = resolveEnvName(rest);
      if (!target) {
        const unsupported = DISTRIBUTION_ONLY_KEYS.find(
          (key) => rest === envNameOf(key) || rest.startsWith(`${envNameOf(key)}_`),
        );
        const refusal = unsupported === undefined ? undefined : DISTRIBUTION_ONLY_REFUSED[unsupported];
        if (unsupported !== undefined && refusal !== undefined) {
          problems.push({ path: unsupported, reason: refusal, source });
          continue;
        }
        warnings.push(
          unsupported
            ? `config key ${unsupported} (${source}) is not supported yet and is ignored`
            : `unknown environment variable ${name} is ignored`,
        );
        continue;
      }
      let value: unknown;
      try {
        value = coerceEnv(text, target.node);
      } catch (err) {
        problems.push({ path: target.path.join('.'), reason: (err as Error).message, source });
        continue;
      }
      setPath(doc, target, value);
      sources.set(target.path.join('.'), name);
      const [top, driver] = target.path;
      if (
        top === 'storage' &&
        driver !== undefined &&
        (STORAGE_DRIVERS as readonly string[]).includes(driver)
      ) {
        envDrivers.add(driver);
      }
    }
  }
  // An override for another driver replaces the file's driver section.
  const storage = doc.storage;
  if (envDrivers.size > 0 && isMapping(storage)) {
    for (const key of [...STORAGE_DRIVERS, ...DISTRIBUTION_ONLY_DRIVERS]) {
      if (!envDrivers.has(key)) Reflect.deleteProperty(storage, key);
    }
  }
  return sources;
}

function applyDistributionCompat(
  doc: Record<string, unknown>,
  warnings: string[],
  problems: ConfigProblem[],
  envSources: Map<string, string>,
): void {
  for (const key of DISTRIBUTION_ONLY_KEYS) {
    const path = key.split('.');
    const parent = getPath(doc, path.slice(0, -1));
    const last = path.at(-1) ?? '';
    if (!isMapping(parent) || !(last in parent)) continue;
    Reflect.deleteProperty(parent, last);
    const refusal = DISTRIBUTION_ONLY_REFUSED[key];
    if (refusal !== undefined) {
      const envName = envSources.get(key);
      problems.push({ path: key, reason: refusal, source: envName ? `env ${envName}` : undefined });
      continue;
    }
    const consequence = DISTRIBUTION_ONLY_CONSEQUENCES[key];
    warnings.push(
      `config key ${key} is not supported yet and is ignored${consequence ? `: ${consequence}` : ''}`,
    );
  }
  for (const alias of DISTRIBUTION_VALUE_ALIASES) {
    const path = alias.path.split('.');
    const parent = getPath(doc, path.slice(0, -1));
    const last = path.at(-1) ?? '';
    if (!isMapping(parent) || parent[last] !== alias.from) continue;
    parent[last] = alias.to;
    warnings.push(`config key ${alias.path}: ${alias.from} is not supported yet, using ${alias.to}`);
  }
  const storage = doc.storage;
  if (!isMapping(storage)) return;
  for (const driver of DISTRIBUTION_ONLY_DRIVERS) {
    if (!(driver in storage)) continue;
    problems.push({
      path: `storage.${driver}`,
      reason: `storage driver ${driver} is not supported (use ${STORAGE_DRIVERS.join(', ')})`,
      source: envSources.has(`storage.${driver}`)
        ? `env ${envSources.get(`storage.${driver}`) ?? ''}`
        : undefined,
    });
  }
}

// ---- errors ----

const TYPE_NAMES: Record<string, string> = {
  int: 'integer',
  object: 'mapping',
  record: 'mapping',
  array: 'list',
};

const errorMessage: z.core.$ZodErrorMap = (iss) => {
  switch (iss.code) {
    case 'invalid_type': {
      const expected = TYPE_NAMES[iss.expected] ?? iss.expected;
      return iss.input === undefined
        ? `required (${expected})`
        : `expected ${expected}, got ${show(iss.input)}`;
    }
    case 'invalid_value':
      return `expected ${iss.values.map((v) => JSON.stringify(v)).join(' or ')}, got ${show(iss.input)}`;
    case 'too_small':
      if (iss.origin === 'string' && Number(iss.minimum) === 1) return 'must not be empty';
      return `must be ${iss.inclusive ? 'at least' : 'more than'} ${iss.minimum}, got ${show(iss.input)}`;
    case 'too_big':
      return `must be ${iss.inclusive ? 'at most' : 'less than'} ${iss.maximum}, got ${show(iss.input)}`;
    case 'invalid_format':
      if (iss.format === 'starts_with')
        return `must start with "${String(iss.prefix)}", got ${show(iss.input)}`;
      return `expected ${iss.format}, got ${show(iss.input)}`;
    case 'invalid_union':
      return `unexpected value ${show(iss.input)}`;
    default:
      return undefined;
  }
};

function toProblems(
  issue: z.core.$ZodIssue,
  envSources: Map<string, string>,
  fileSource?: string,
): ConfigProblem[] {
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => {
      const hint = suggestKey(path, key);
      return {
        path: [...path, key].join('.'),
        reason: `unknown key${hint ? ` (did you mean ${hint}?)` : ''}`,
        source: sourceOf([...path, key], envSources, fileSource),
      };
    });
  }
  return [{ path: path.join('.'), reason: issue.message, source: sourceOf(path, envSources, fileSource) }];
}

function sourceOf(path: string[], envSources: Map<string, string>, fileSource?: string): string | undefined {
  // The variable that set this key or a section around it.
  for (let i = path.length; i > 0; i--) {
    const name = envSources.get(path.slice(0, i).join('.'));
    if (name !== undefined) return `env ${name}`;
  }
  // A section whose contents came partly from variables, e.g. two drivers from file and env.
  const prefix = `${path.join('.')}.`;
  const inside = [...envSources]
    .filter(([p]) => path.length === 0 || p.startsWith(prefix))
    .map(([, n]) => `env ${n}`);
  return [fileSource, ...inside].filter(Boolean).join(', ') || undefined;
}

function suggestKey(path: string[], key: string): string | undefined {
  let node: SchemaNode | undefined = schemaTree;
  for (const part of path) node = node?.kind === 'object' ? node.children.get(part) : undefined;
  if (node?.kind !== 'object') return undefined;
  const wanted = key.toLowerCase().replace(/[_-]/g, '');
  return [...node.children.keys()].find((k) => k === wanted);
}

// ---- rendering (wharf config check) ----

/** The effective config as YAML that loads again: durations written back, secrets masked. */
export function renderConfig(config: Config): string {
  return YAML.stringify(renderNode(config, schemaTree));
}

function renderNode(value: unknown, node: SchemaNode | undefined): unknown {
  if (value === undefined || value === null || node === undefined) return value;
  if (node.info.secret) return '********';
  if (node.info.duration && typeof value === 'number') return formatDuration(value);
  if (node.kind === 'object' && isMapping(value)) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, renderNode(v, node.children.get(k))]),
    );
  }
  if (node.kind === 'record' && isMapping(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, renderNode(v, node.value)]));
  }
  if (node.kind === 'array' && Array.isArray(value)) return value.map((v) => renderNode(v, node.element));
  return value;
}

// ---- small helpers ----

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function getPath(doc: unknown, path: string[]): unknown {
  let cur = doc;
  for (const part of path) cur = isMapping(cur) ? cur[part] : undefined;
  return cur;
}

function ensureMapping(doc: Record<string, unknown>, path: string[]): Record<string, unknown> {
  let cur = doc;
  for (const part of path) {
    const next = cur[part];
    if (isMapping(next)) cur = next;
    else cur = cur[part] = {};
  }
  return cur;
}

function setPath(doc: Record<string, unknown>, target: EnvTarget, value: unknown): void {
  if (target.index === undefined) {
    ensureMapping(doc, target.path.slice(0, -1))[target.path.at(-1) ?? ''] = value;
    return;
  }
  const listPath = target.path.slice(0, -1);
  const parent = ensureMapping(doc, listPath.slice(0, -1));
  const key = listPath.at(-1) ?? '';
  const list = Array.isArray(parent[key]) ? (parent[key] as unknown[]) : (parent[key] = []);
  list[target.index] = value;
}

function envNameOf(dottedKey: string): string {
  return dottedKey.replaceAll('.', '_').toUpperCase();
}

function show(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  const text = JSON.stringify(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function oneLine(text: string): string {
  return text.split('\n')[0] ?? text;
}
