import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../../config/load.js';

function problems(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  assert.fail('expected a ConfigError');
}

const htpasswd = { realm: 'r', path: '/etc/wharf/htpasswd' };
const token = { realm: 'https://auth.test/token', service: 's', issuer: 'i', rootcertbundle: '/b.pem' };

void describe('auth config', () => {
  void test('Distribution configs load as they are', () => {
    const basic = parseConfig({ auth: { htpasswd } }).config.auth;
    assert.ok(basic);
    assert.deepEqual(basic.htpasswd, htpasswd);
    assert.deepEqual(basic.ratelimit, { peruser: 10, peraddress: 50, window: 300_000 });
    const bearer = parseConfig({ auth: { token } }).config.auth;
    assert.deepEqual(bearer?.token, token);
  });

  void test('the environment sets auth keys, Distribution names included', () => {
    const { config } = parseConfig(
      {},
      {
        env: {
          REGISTRY_AUTH_TOKEN_REALM: 'https://auth.test/token',
          REGISTRY_AUTH_TOKEN_SERVICE: 's',
          REGISTRY_AUTH_TOKEN_ISSUER: 'i',
          WHARF_AUTH_TOKEN_JWKS: '/jwks.json',
          WHARF_AUTH_ACCESS_RULES: '[{repositories: ["pub/**"], anonymous: true}]',
        },
      },
    );
    assert.equal(config.auth?.token?.jwks, '/jwks.json');
    assert.deepEqual(config.auth.access?.rules, [
      { repositories: ['pub/**'], anonymous: true, users: [], groups: [], actions: [] },
    ]);
  });

  void test('the built-in token server alone is enough; its defaults', () => {
    const auth = parseConfig({
      auth: { tokenserver: { enabled: true, htpasswd: '/h', signingkey: '/k.pem' } },
    }).config.auth;
    assert.equal(auth?.tokenserver?.expiration, 300_000);
    assert.equal(auth.token, undefined);
  });

  const bad: { name: string; auth: object; error: RegExp }[] = [
    {
      name: 'both htpasswd and token',
      auth: { htpasswd, token },
      error: /auth: configure exactly one of auth\.htpasswd and auth\.token/,
    },
    {
      name: 'neither',
      auth: { access: { rules: [] } },
      error: /auth: configure auth\.htpasswd, auth\.token or auth\.tokenserver/,
    },
    {
      name: 'token without keys',
      auth: { token: { ...token, rootcertbundle: undefined } },
      error: /auth\.token: rootcertbundle or jwks is required/,
    },
    {
      name: 'token without realm',
      auth: { token: { ...token, realm: undefined } },
      error: /auth\.token\.realm: required/,
    },
    {
      name: 'token server without files',
      auth: { tokenserver: { enabled: true } },
      error: /tokenserver\.htpasswd: required when enabled.*tokenserver\.signingkey: required/,
    },
    {
      name: 'token server with a Basic htpasswd section',
      auth: { htpasswd, tokenserver: { enabled: true, htpasswd: '/h', signingkey: '/k' } },
      error: /auth\.htpasswd: with the token server on, the registry takes tokens/,
    },
    {
      name: 'token server issuer that the verifier would refuse',
      auth: { token, tokenserver: { enabled: true, htpasswd: '/h', signingkey: '/k', issuer: 'other' } },
      error: /auth\.tokenserver\.issuer: must equal auth\.token\.issuer \("i"\)/,
    },
    {
      name: 'unknown group',
      auth: { htpasswd, access: { rules: [{ repositories: ['a'], groups: ['ghosts'] }] } },
      error: /auth\.access\.rules\.0\.groups: unknown group "ghosts"/,
    },
    {
      name: 'a bad glob',
      auth: { htpasswd, access: { rules: [{ repositories: ['Team/*'] }] } },
      error: /not a repository glob: "Team\/\*"/,
    },
    {
      name: 'an unknown action',
      auth: { htpasswd, access: { rules: [{ repositories: ['a'], actions: ['admin'] }] } },
      error: /actions\.0: expected "pull" or "push" or "delete"/,
    },
    {
      name: 'alg none',
      auth: { token: { ...token, signingalgorithms: ['none'] } },
      error: /signingalgorithms\.0/,
    },
    {
      name: 'HS256',
      auth: { token: { ...token, signingalgorithms: ['HS256'] } },
      error: /signingalgorithms\.0/,
    },
    {
      name: 'a typo',
      auth: { htpasswd: { ...htpasswd, paht: '/x' } },
      error: /auth\.htpasswd\.paht: unknown key/,
    },
  ];
  for (const c of bad) {
    void test(`refused: ${c.name}`, () => {
      assert.match(
        problems(() => parseConfig({ auth: c.auth })),
        c.error,
      );
    });
  }

  void test('autoredirect is ignored with a warning; silly is refused', () => {
    const { warnings } = parseConfig({ auth: { token: { ...token, autoredirect: true } } });
    assert.deepEqual(warnings, ['config key auth.token.autoredirect is not supported yet and is ignored']);
    assert.match(
      problems(() => parseConfig({ auth: { silly: { realm: 'r', service: 's' } } })),
      /auth\.silly: the silly access controller/,
    );
  });
});
