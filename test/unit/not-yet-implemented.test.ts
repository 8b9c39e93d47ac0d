import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../config/load.js';
import { notYetImplemented } from '../../src/not-yet-implemented.js';

test('TLS and auth are implemented: neither stops the server; a plain config passes', () => {
  const tls = parseConfig({ http: { tls: { certificate: '/c.pem', key: '/k.pem' } } }).config;
  assert.deepEqual(notYetImplemented(tls).errors, []);
  const auth = parseConfig({ auth: { htpasswd: { realm: 'r', path: '/p' } } }).config;
  assert.deepEqual(notYetImplemented(auth).errors, []);
  const plain = notYetImplemented(parseConfig({}).config);
  assert.deepEqual(plain, { errors: [], warnings: [] });
});

test('a prefix is still only warned about', () => {
  const config = parseConfig({ http: { prefix: '/registry' } }).config;
  assert.match(notYetImplemented(config).warnings.join(), /http\.prefix/);
});
