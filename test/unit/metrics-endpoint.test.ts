// Where the config puts the metrics endpoint: `http.debug` as Distribution's config.yml has it.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig, parseConfig } from '../../config/load.js';
import { metricsEndpoint } from '../../src/metrics/endpoint.js';
import { notYetImplemented } from '../../src/not-yet-implemented.js';

const cases: { name: string; http: object; want: ReturnType<typeof metricsEndpoint> }[] = [
  {
    name: 'no debug section: /metrics on the main listener',
    http: {},
    want: { listener: 'main', path: '/metrics' },
  },
  {
    name: 'a debug address: metrics move there',
    http: { debug: { addr: 'localhost:5001' } },
    want: { listener: 'debug', path: '/metrics' },
  },
  {
    name: 'another path, on the main listener',
    http: { debug: { prometheus: { path: '/internal/metrics' } } },
    want: { listener: 'main', path: '/internal/metrics' },
  },
  {
    name: 'prometheus disabled: no endpoint',
    http: { debug: { addr: ':5001', prometheus: { enabled: false } } },
    want: undefined,
  },
];
for (const { name, http, want } of cases) {
  test(name, () => {
    const { config, warnings } = parseConfig({ http });
    assert.deepEqual(metricsEndpoint(config), want);
    assert.deepEqual(warnings, []);
    assert.deepEqual(notYetImplemented(config).warnings, []);
  });
}

test('a metrics path under /v2 or not absolute is refused', () => {
  for (const path of ['/v2/metrics', '/v2', 'metrics']) {
    assert.throws(() => parseConfig({ http: { debug: { prometheus: { path } } } }), ConfigError, path);
  }
});

test("Distribution's example config loads http.debug.prometheus without a warning about it", () => {
  const file = join(import.meta.dirname, '../../config/examples/distribution-compatible.yaml');
  const { config, warnings } = loadConfig({ file, env: {} });
  assert.ok(!warnings.some((w) => w.includes('http.debug')), warnings.join('\n'));
  assert.deepEqual(metricsEndpoint(config), { listener: 'debug', path: '/metrics' });
});

test('WHARF_HTTP_DEBUG_ADDR sets the debug address', () => {
  const { config } = parseConfig({}, { env: { WHARF_HTTP_DEBUG_ADDR: '127.0.0.1:5001' } });
  assert.equal(config.http.debug?.addr, '127.0.0.1:5001');
  assert.equal(metricsEndpoint(config)?.listener, 'debug');
});
