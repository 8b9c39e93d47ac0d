import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../../config/load.js';
import { notYetImplemented } from '../../src/not-yet-implemented.js';

test('TLS configured but not implemented stops the server; a plain config passes', () => {
  const tls = parseConfig({ http: { tls: { certificate: '/c.pem', key: '/k.pem' } } }).config;
  assert.match(notYetImplemented(tls).errors.join(), /http\.tls/);
  const plain = notYetImplemented(parseConfig({}).config);
  assert.deepEqual(plain, { errors: [], warnings: [] });
});
