import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Writable } from 'node:stream';
import YAML from 'yaml';
import { ConfigError, loadConfig, parseConfig, renderConfig } from '../../config/load.js';
import {
  formatDuration,
  parseDuration,
  parseListenAddress,
  storageDriver,
  type Config,
} from '../../config/schema.js';
import { createLogger } from '../../src/log.js';

const root = new URL('../../', import.meta.url).pathname;
const examplesDir = join(root, 'config/examples');

const DEFAULTS: Config = {
  log: { level: 'info', fields: {} },
  http: { addr: ':5000', draintimeout: 10_000, headers: {} },
  storage: {
    filesystem: { rootdirectory: './data', maxthreads: 100 },
    delete: { enabled: false },
    redirect: { disable: false },
    cache: {},
    maintenance: {
      uploadpurging: { enabled: true, age: 168 * 3_600_000, interval: 24 * 3_600_000, dryrun: false },
    },
  },
  validation: { manifests: { maxsize: 4 * 1024 * 1024 } },
};

function get(obj: unknown, path: string): unknown {
  return path
    .split('.')
    .reduce<unknown>((cur, key) => (cur as Record<string, unknown> | undefined)?.[key], obj);
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a ConfigError');
}

function writeTemp(name: string, text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'wharf-config-')), name);
  writeFileSync(file, text);
  return file;
}

describe('defaults', () => {
  test('no file and no env give the documented defaults', () => {
    assert.deepEqual(loadConfig({ env: {} }), { config: DEFAULTS, warnings: [] });
    assert.deepEqual(parseConfig({}), { config: DEFAULTS, warnings: [] });
  });

  test('config/default.yaml spells out exactly the defaults', () => {
    const { config, warnings } = loadConfig({ file: join(root, 'config/default.yaml'), env: {} });
    assert.deepEqual(warnings, []);
    assert.deepEqual(config, { version: '0.1', ...DEFAULTS });
  });

  test('an empty file is the defaults', () => {
    assert.deepEqual(loadConfig({ file: writeTemp('empty.yml', ''), env: {} }).config, DEFAULTS);
  });

  test('storageDriver names the one driver', () => {
    assert.deepEqual(storageDriver(DEFAULTS.storage), {
      name: 'filesystem',
      params: DEFAULTS.storage.filesystem,
    });
    const mem = parseConfig({ storage: { inmemory: null } }).config;
    assert.deepEqual(storageDriver(mem.storage), { name: 'inmemory', params: {} });
    const s3 = parseConfig({ storage: { s3: { bucket: 'b', region: 'r' } } }).config;
    assert.equal(storageDriver(s3.storage).name, 's3');
  });
});

describe('config/examples', () => {
  const files = readdirSync(examplesDir).filter((f) => /\.ya?ml$/.test(f));
  test('the folder has examples', () => {
    assert.ok(files.length >= 4, files.join(', '));
  });
  for (const file of files) {
    test(`${file} validates`, () => {
      const { warnings } = loadConfig({ file: join(examplesDir, file), env: {} });
      for (const w of warnings) assert.match(w, /^config key \S+ (.*)?is not supported yet/);
    });
  }
  test('distribution-compatible.yaml warns about each Distribution-only section', () => {
    const { config, warnings } = loadConfig({
      file: join(examplesDir, 'distribution-compatible.yaml'),
      env: {},
    });
    for (const key of ['redis', 'health', 'http.secret', 'storage.tag', 'log.accesslog']) {
      assert.ok(
        warnings.some((w) => w.startsWith(`config key ${key} is not supported yet and is ignored`)),
        `no warning for ${key}: ${warnings.join('\n')}`,
      );
    }
    assert.equal(config.storage.filesystem?.rootdirectory, '/var/lib/docker-registry');
    assert.equal(config.http.draintimeout, 60_000);
  });
});

describe('environment overrides', () => {
  const cases: { name: string; file?: object; env: Record<string, string>; path: string; want: unknown }[] = [
    { name: 'string', env: { WHARF_HTTP_ADDR: '127.0.0.1:5055' }, path: 'http.addr', want: '127.0.0.1:5055' },
    {
      name: 'nested string',
      env: { WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/tmp/x' },
      path: 'storage.filesystem.rootdirectory',
      want: '/tmp/x',
    },
    {
      name: 'boolean',
      env: { WHARF_STORAGE_DELETE_ENABLED: 'true' },
      path: 'storage.delete.enabled',
      want: true,
    },
    {
      name: 'boolean false over file',
      file: { storage: { delete: { enabled: true } } },
      env: { WHARF_STORAGE_DELETE_ENABLED: 'FALSE' },
      path: 'storage.delete.enabled',
      want: false,
    },
    { name: 'enum', env: { WHARF_LOG_LEVEL: 'warn' }, path: 'log.level', want: 'warn' },
    {
      name: 'integer',
      env: { WHARF_VALIDATION_MANIFESTS_MAXSIZE: '8388608' },
      path: 'validation.manifests.maxsize',
      want: 8_388_608,
    },
    { name: 'duration', env: { WHARF_HTTP_DRAINTIMEOUT: '1m30s' }, path: 'http.draintimeout', want: 90_000 },
    {
      name: 'record as JSON',
      env: { WHARF_HTTP_HEADERS: '{"X-Frame-Options":["DENY"]}' },
      path: 'http.headers',
      want: { 'X-Frame-Options': ['DENY'] },
    },
    {
      name: 'record as YAML flow',
      env: { WHARF_HTTP_HEADERS: '{X-Content-Type-Options: [nosniff]}' },
      path: 'http.headers',
      want: { 'X-Content-Type-Options': ['nosniff'] },
    },
    {
      name: 'record entry',
      env: { REGISTRY_LOG_FIELDS_SERVICE: 'registry' },
      path: 'log.fields.service',
      want: 'registry',
    },
    {
      name: 'list element',
      env: { WHARF_VALIDATION_MANIFESTS_URLS_ALLOW_0: '^https://' },
      path: 'validation.manifests.urls.allow',
      want: ['^https://'],
    },
    { name: 'REGISTRY_ name', env: { REGISTRY_HTTP_ADDR: ':6000' }, path: 'http.addr', want: ':6000' },
    {
      name: 'WHARF_ wins over REGISTRY_',
      env: { REGISTRY_HTTP_ADDR: ':6000', WHARF_HTTP_ADDR: ':7000' },
      path: 'http.addr',
      want: ':7000',
    },
    {
      name: 'env wins over file',
      file: { log: { level: 'debug' } },
      env: { REGISTRY_LOG_LEVEL: 'error' },
      path: 'log.level',
      want: 'error',
    },
    {
      name: 'driver chosen by WHARF_STORAGE replaces the file driver',
      file: { storage: { filesystem: { rootdirectory: '/x' }, delete: { enabled: true } } },
      env: { WHARF_STORAGE: 'inmemory' },
      path: 'storage',
      want: { ...DEFAULTS.storage, filesystem: undefined, inmemory: {}, delete: { enabled: true } },
    },
    {
      name: 'a key under another driver replaces the file driver',
      file: { storage: { filesystem: { rootdirectory: '/x' } } },
      env: { WHARF_STORAGE_S3_BUCKET: 'b', REGISTRY_STORAGE_S3_REGION: 'eu-west-1' },
      path: 'storage.filesystem',
      want: undefined,
    },
    {
      name: 's3 from env only',
      env: {
        WHARF_STORAGE_S3_BUCKET: 'b',
        WHARF_STORAGE_S3_REGION: 'r',
        WHARF_STORAGE_S3_FORCEPATHSTYLE: 'true',
      },
      path: 'storage.s3.forcepathstyle',
      want: true,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { config, warnings } = parseConfig(c.file ?? {}, { env: c.env });
      assert.deepEqual(warnings, []);
      const got = get(config, c.path);
      if (c.path === 'storage')
        assert.deepEqual(JSON.parse(JSON.stringify(got)), JSON.parse(JSON.stringify(c.want)));
      else assert.deepEqual(got, c.want);
    });
  }

  test('loadConfig reads process.env when no env is given', () => {
    process.env.WHARF_LOG_LEVEL = 'trace';
    try {
      assert.equal(loadConfig().config.log.level, 'trace');
    } finally {
      delete process.env.WHARF_LOG_LEVEL;
    }
  });

  const bad: { env: Record<string, string>; message: RegExp }[] = [
    {
      env: { WHARF_VALIDATION_MANIFESTS_MAXSIZE: 'big' },
      message:
        /validation\.manifests\.maxsize: expected number, got "big" \(env WHARF_VALIDATION_MANIFESTS_MAXSIZE\)/,
    },
    {
      env: { REGISTRY_STORAGE_DELETE_ENABLED: 'yes' },
      message:
        /storage\.delete\.enabled: expected true or false, got "yes" \(env REGISTRY_STORAGE_DELETE_ENABLED\)/,
    },
    {
      env: { WHARF_HTTP_HEADERS: '{a: [' },
      message: /http\.headers: expected JSON or YAML.*\(env WHARF_HTTP_HEADERS\)/,
    },
    {
      env: { WHARF_HTTP_HEADERS: '["x"]' },
      message: /http\.headers: expected mapping, got a list \(env WHARF_HTTP_HEADERS\)/,
    },
    {
      env: { WHARF_LOG_LEVEL: 'loud' },
      message: /log\.level: expected "error" or .* got "loud" \(env WHARF_LOG_LEVEL\)/,
    },
    {
      env: { WHARF_STORAGE: 'azure' },
      message: /storage: expected filesystem or inmemory or s3, got "azure" \(env WHARF_STORAGE\)/,
    },
    {
      env: { WHARF_VALIDATION_MANIFESTS_MAXSIZE: '1.5' },
      message:
        /validation\.manifests\.maxsize: expected integer, got 1\.5 \(env WHARF_VALIDATION_MANIFESTS_MAXSIZE\)/,
    },
    {
      env: { WHARF_HTTP_DRAINTIMEOUT: '10' },
      message: /http\.draintimeout: expected a duration .*"10" \(env WHARF_HTTP_DRAINTIMEOUT\)/,
    },
    {
      env: { WHARF_STORAGE_S3_BUCKET: 'b', WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/x' },
      message:
        /storage: exactly one storage driver must be configured, got filesystem and s3 \(env WHARF_STORAGE_/,
    },
  ];
  for (const c of bad) {
    test(`rejects ${Object.keys(c.env).join(' + ')}=${Object.values(c.env).join(',')}`, () => {
      assert.match(configError(() => parseConfig({}, { env: c.env })).message, c.message);
    });
  }

  const warned: { env: Record<string, string>; warning?: string }[] = [
    { env: { WHARF_BOGUS: '1' }, warning: 'unknown environment variable WHARF_BOGUS is ignored' },
    {
      env: { REGISTRY_HTTP_ADDRESS: '1' },
      warning: 'unknown environment variable REGISTRY_HTTP_ADDRESS is ignored',
    },
    {
      env: { WHARF_HTTP_SECRET: 's' },
      warning: 'config key http.secret (env WHARF_HTTP_SECRET) is not supported yet and is ignored',
    },
    { env: { WHARF_CONFIG: '/some/file.yml' } }, // read by the CLI, not a key
  ];
  for (const c of warned) {
    test(`${Object.keys(c.env).join()} ${c.warning ? 'warns' : 'is silent'}`, () => {
      assert.deepEqual(parseConfig({}, { env: c.env }).warnings, c.warning ? [c.warning] : []);
    });
  }
});

describe('file errors name the key, the reason and the source', () => {
  const cases: { name: string; raw: object; message: RegExp }[] = [
    {
      name: 'wrong type',
      raw: { http: { addr: 5000 } },
      message: /^config: http\.addr: expected string, got 5000\b/,
    },
    { name: 'unknown top-level key', raw: { bogus: 1 }, message: /^config: bogus: unknown key\b/ },
    { name: 'unknown nested key', raw: { http: { port: 1 } }, message: /^config: http\.port: unknown key\b/ },
    {
      name: 'camelCase key',
      raw: { storage: { filesystem: { rootDirectory: '/x' } } },
      message: /^config: storage\.filesystem\.rootDirectory: unknown key \(did you mean rootdirectory\?\)/,
    },
    {
      name: 'bad enum',
      raw: { log: { formatter: 'xml' } },
      message: /^config: log\.formatter: expected "json" or "text", got "xml"/,
    },
    {
      name: 'below minimum',
      raw: { validation: { manifests: { maxsize: 100 } } },
      message: /maxsize: must be at least 1024/,
    },
    {
      name: 'bad listen address',
      raw: { http: { addr: 'localhost' } },
      message: /^config: http\.addr: expected host:port/,
    },
    {
      name: 'prefix without slash',
      raw: { http: { prefix: 'v2' } },
      message: /http\.prefix: must start with "\/"/,
    },
    {
      name: 'bad regex',
      raw: { validation: { manifests: { urls: { allow: ['('] } } } },
      message: /validation\.manifests\.urls\.allow\.0: not a valid regular expression/,
    },
    {
      name: 'two drivers',
      raw: { storage: { filesystem: {}, inmemory: null } },
      message: /^config: storage: exactly one storage driver must be configured, got filesystem and inmemory/,
    },
    {
      name: 'driver Wharf does not have',
      raw: { storage: { azure: { accountname: 'x' } } },
      message: /^config: storage\.azure: storage driver azure is not supported/,
    },
    {
      name: 's3 without bucket',
      raw: { storage: { s3: { region: 'r' } } },
      message: /storage\.s3\.bucket: required/,
    },
    {
      name: 'bad duration',
      raw: { storage: { maintenance: { uploadpurging: { age: '1 week' } } } },
      message: /uploadpurging\.age: expected a duration/,
    },
    {
      name: 'negative duration',
      raw: { http: { draintimeout: '-1s' } },
      message: /http\.draintimeout: must not be negative/,
    },
    { name: 'wrong version', raw: { version: '0.2' }, message: /^config: version: expected version 0\.1/ },
    {
      name: 'not a mapping',
      raw: ['a'],
      message: /^config: expected a mapping at the top level, got a list/,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const file = writeTemp('config.yml', YAML.stringify(c.raw));
      const err = configError(() => loadConfig({ file, env: {} }));
      assert.match(err.message, c.message);
      assert.ok(err.message.includes(`(file ${file})`), err.message);
      assert.ok(!err.message.includes('\n'), 'one line');
    });
  }

  test('every problem is reported, not just the first', () => {
    const err = configError(() => parseConfig({ http: { addr: 1, bogus: 2 }, log: { level: 'x' } }));
    assert.deepEqual(err.problems.map((p) => p.path).sort(), ['http.addr', 'http.bogus', 'log.level']);
  });

  test('a missing file', () => {
    assert.match(
      configError(() => loadConfig({ file: '/nonexistent/wharf.yml', env: {} })).message,
      /cannot read: ENOENT.*\(file \/nonexistent\/wharf\.yml\)/,
    );
  });

  test('invalid YAML', () => {
    const file = writeTemp('bad.yml', 'http:\n  addr: [\n');
    assert.match(configError(() => loadConfig({ file, env: {} })).message, /^config: invalid YAML: /);
  });

  test('duplicate keys are an error, not a silent override', () => {
    const file = writeTemp('dup.yml', 'http:\n  addr: ":1"\n  addr: ":2"\n');
    assert.match(configError(() => loadConfig({ file, env: {} })).message, /invalid YAML: .*unique/i);
  });
});

describe('Distribution compatibility', () => {
  // The silly controller admits any credentials, so a config naming it is refused (auth tests: auth-config).
  for (const c of [
    { name: 'file', run: () => parseConfig({ auth: { silly: { realm: 'r', service: 's' } } }) },
    { name: 'env', run: () => parseConfig({}, { env: { REGISTRY_AUTH_SILLY_REALM: '/x' } }) },
  ]) {
    test(`auth.silly from ${c.name} is refused`, () => {
      assert.match(configError(c.run).message, /auth\.silly: the silly access controller admits any/);
    });
  }

  const cases: { raw: object; warning: string; path: string }[] = [
    {
      raw: { redis: { addrs: ['x:6379'] } },
      warning: 'config key redis is not supported yet and is ignored',
      path: 'redis',
    },
    {
      raw: { health: { storagedriver: { enabled: true } } },
      warning: 'config key health is not supported yet and is ignored',
      path: 'health',
    },
    {
      raw: { proxy: { remoteurl: 'https://x' } },
      warning: 'config key proxy is not supported yet and is ignored',
      path: 'proxy',
    },
    {
      raw: { middleware: { storage: [] } },
      warning: 'config key middleware is not supported yet and is ignored',
      path: 'middleware',
    },
    {
      raw: { reporting: {} },
      warning: 'config key reporting is not supported yet and is ignored',
      path: 'reporting',
    },
    {
      raw: { compatibility: {} },
      warning: 'config key compatibility is not supported yet and is ignored',
      path: 'compatibility',
    },
    {
      raw: { http: { secret: 's' } },
      warning: 'config key http.secret is not supported yet and is ignored',
      path: 'http.secret',
    },
    {
      raw: { storage: { s3: { bucket: 'b', region: 'r', v4auth: true } } },
      warning: 'config key storage.s3.v4auth is not supported yet and is ignored',
      path: 'storage.s3.v4auth',
    },
    {
      raw: { log: { formatter: 'logstash' } },
      warning: 'config key log.formatter: logstash is not supported yet, using json',
      path: 'log.formatter',
    },
  ];
  for (const c of cases) {
    test(c.path, () => {
      const { config, warnings } = parseConfig(c.raw);
      assert.deepEqual(warnings, [c.warning]);
      if (c.path === 'log.formatter') assert.equal(config.log.formatter, 'json');
      else assert.equal(get(config, c.path), undefined);
    });
  }

  test('version 0.1 as YAML writes it (a number) is accepted', () => {
    assert.equal(loadConfig({ file: writeTemp('v.yml', 'version: 0.1\n'), env: {} }).config.version, '0.1');
  });

  test('an empty driver section (inmemory:) is accepted', () => {
    const { config } = loadConfig({ file: writeTemp('m.yml', 'storage:\n  inmemory:\n'), env: {} });
    assert.deepEqual(config.storage.inmemory, {});
    assert.equal(config.storage.filesystem, undefined);
  });
});

describe('durations', () => {
  const valid: [string, number][] = [
    ['0', 0],
    ['10s', 10_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['168h', 604_800_000],
    ['1.5h', 5_400_000],
    ['2h45m', 9_900_000],
    ['1m30.5s', 90_500],
    ['300ms', 300],
    ['100us', 0.1],
    ['100µs', 0.1],
    ['1000000ns', 1],
    ['-1h', -3_600_000],
  ];
  for (const [text, ms] of valid) {
    test(`parseDuration(${JSON.stringify(text)}) = ${ms}`, () => {
      assert.equal(parseDuration(text), ms);
    });
  }
  for (const text of ['', '10', 'h', '1x', '1h 2m', ' 1h', '1d', 'abc', '.s']) {
    test(`parseDuration(${JSON.stringify(text)}) throws`, () => {
      assert.throws(() => parseDuration(text), /invalid duration/);
    });
  }
  for (const ms of [0, 300, 10_000, 90_500, 3_600_000, 5_400_000, 604_800_000, 0.1]) {
    test(`formatDuration(${ms}) parses back`, () => {
      assert.equal(parseDuration(formatDuration(ms)), ms);
    });
  }
  test('formatDuration writes the compact form', () => {
    assert.deepEqual(
      [formatDuration(604_800_000), formatDuration(5_400_000), formatDuration(10_000)],
      ['168h', '1h30m', '10s'],
    );
  });
});

describe('parseListenAddress', () => {
  const cases: [string, { host: string | undefined; port: number } | null][] = [
    [':5000', { host: undefined, port: 5000 }],
    ['0.0.0.0:5000', { host: '0.0.0.0', port: 5000 }],
    ['localhost:5001', { host: 'localhost', port: 5001 }],
    ['[::1]:5000', { host: '::1', port: 5000 }],
    ['127.0.0.1:0', { host: '127.0.0.1', port: 0 }],
    ['localhost', null],
    [':99999', null],
    ['::1:5000', null],
  ];
  for (const [addr, want] of cases) {
    test(addr, () => {
      if (want) assert.deepEqual(parseListenAddress(addr), want);
      else assert.throws(() => parseListenAddress(addr), /invalid listen address/);
    });
  }
});

describe('renderConfig', () => {
  test('masks secrets, writes durations back and loads again', () => {
    const { config } = parseConfig({
      http: { draintimeout: '90s' },
      storage: { s3: { bucket: 'b', region: 'r', accesskey: 'AKIA', secretkey: 'hunter2' } },
    });
    const text = renderConfig(config);
    assert.ok(!text.includes('hunter2') && !text.includes('AKIA'), text);
    const doc = YAML.parse(text) as unknown;
    assert.equal(get(doc, 'storage.s3.secretkey'), '********');
    assert.equal(get(doc, 'http.draintimeout'), '1m30s');
    assert.equal(get(doc, 'storage.maintenance.uploadpurging.age'), '168h');
    assert.deepEqual(parseConfig(doc).config, {
      ...config,
      storage: {
        ...config.storage,
        s3: { ...config.storage.s3, accesskey: '********', secretkey: '********' },
      },
    });
  });
});

describe('createLogger', () => {
  function capture() {
    const chunks: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        chunks.push(chunk.toString());
        done();
      },
    });
    return { destination, text: () => chunks.join('') };
  }

  test('json lines with the configured fields, level and redaction', () => {
    const out = capture();
    const log = createLogger({ level: 'warn', formatter: 'json', fields: { service: 'wharf' } }, out);
    log.info('hidden');
    log.warn(
      {
        req: { headers: { authorization: 'Basic c2VjcmV0' } },
        s3: { secretkey: 'k', accesskey: 'a' },
        token: 't',
      },
      'shown',
    );
    const lines = out.text().trim().split('\n');
    assert.equal(lines.length, 1);
    const entry = JSON.parse(lines[0] ?? '') as Record<string, unknown>;
    assert.equal(entry.msg, 'shown');
    assert.equal(entry.service, 'wharf');
    assert.ok(!out.text().includes('c2VjcmV0') && !out.text().includes('"k"') && !out.text().includes('"t"'));
    assert.equal(get(entry, 'req.headers.authorization'), '[redacted]');
  });

  test('formatter text writes readable lines, not JSON', () => {
    const out = capture();
    createLogger({ level: 'info', formatter: 'text', fields: {} }, out).info({ password: 'p' }, 'hello');
    assert.match(out.text(), /INFO.*hello/);
    assert.throws(() => JSON.parse(out.text()) as unknown);
    assert.ok(!out.text().includes('"p"'));
  });
});
