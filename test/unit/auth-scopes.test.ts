import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ANONYMOUS, AccessRules } from '../../src/auth/access.js';
import { parseAuthorization, safeEqual } from '../../src/auth/credentials.js';
import { formatScope, parseScopes } from '../../src/auth/scopes.js';
import { grantScopes, subjectClaim } from '../../src/auth/token-server.js';

void describe('scopes', () => {
  void test('parses repeated and space-separated scopes, classes, and names with colons', () => {
    assert.deepEqual(
      parseScopes([
        'repository:a/b:pull,push repository(plugin):c:pull',
        'registry:catalog:*',
        'repository:host:5000/x:pull',
      ]),
      [
        { type: 'repository', name: 'a/b', actions: ['pull', 'push'] },
        { type: 'repository', name: 'c', actions: ['pull'] },
        { type: 'registry', name: 'catalog', actions: ['*'] },
        { type: 'repository', name: 'host:5000/x', actions: ['pull'] },
      ],
    );
  });

  void test('drops malformed scopes', () => {
    assert.deepEqual(
      parseScopes(['', 'repository', 'repository:x', ':x:pull', 'repository::pull', 'repository:x:']),
      [],
    );
  });

  void test('formats as the challenge and the token response write them', () => {
    assert.equal(
      formatScope({ type: 'repository', name: 'a/b', actions: ['pull', 'push'] }),
      'repository:a/b:pull,push',
    );
  });
});

void describe('grants', () => {
  const rules = new AccessRules({
    groups: {},
    rules: [
      {
        repositories: ['team/**'],
        users: ['alice'],
        groups: [],
        actions: ['pull', 'push'],
        anonymous: false,
      },
      { repositories: ['pub/*'], users: [], groups: [], actions: [], anonymous: true },
    ],
  });
  const alice = { kind: 'user', name: 'alice' } as const;

  void test('the intersection of what was asked and what the rules allow; * asks for everything', () => {
    assert.deepEqual(
      grantScopes(
        rules,
        alice,
        parseScopes(['repository:team/a:pull,push,delete', 'repository:team/b:*', 'repository:other:pull']),
      ),
      [
        { type: 'repository', name: 'team/a', actions: ['pull', 'push'] },
        { type: 'repository', name: 'team/b', actions: ['pull', 'push'] },
      ],
    );
  });

  void test('repeated scopes for one repository merge; invalid names and unknown types get nothing', () => {
    assert.deepEqual(
      grantScopes(
        rules,
        alice,
        parseScopes([
          'repository:team/a:pull',
          'repository:team/a:push',
          'repository:Team/A:pull',
          'plugin:x:pull',
        ]),
      ),
      [{ type: 'repository', name: 'team/a', actions: ['pull', 'push'] }],
    );
  });

  void test('the catalog goes to a logged-in subject only', () => {
    const catalog = parseScopes(['registry:catalog:*']);
    assert.deepEqual(grantScopes(rules, alice, catalog), [
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    assert.deepEqual(grantScopes(rules, ANONYMOUS, catalog), []);
    assert.deepEqual(grantScopes(rules, ANONYMOUS, parseScopes(['repository:pub/x:pull,push'])), [
      { type: 'repository', name: 'pub/x', actions: ['pull'] },
    ]);
  });

  void test('subject claims: user name, robot:<id>, empty for anonymous', () => {
    assert.equal(subjectClaim(alice), 'alice');
    assert.equal(subjectClaim(ANONYMOUS), '');
    assert.equal(
      subjectClaim({ kind: 'robot', id: 'abc', name: 'ci', repositories: [], actions: [] }),
      'robot:abc',
    );
  });
});

void describe('Authorization header', () => {
  void test('Basic, Bearer, none and malformed', () => {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    assert.deepEqual(parseAuthorization(undefined), { scheme: 'none' });
    assert.deepEqual(parseAuthorization(`Basic ${b64('u:p:with:colons')}`), {
      scheme: 'basic',
      username: 'u',
      password: 'p:with:colons',
    });
    assert.deepEqual(parseAuthorization(`basic ${b64('u:')}`), {
      scheme: 'basic',
      username: 'u',
      password: '',
    });
    assert.deepEqual(parseAuthorization('Bearer abc'), { scheme: 'bearer', token: 'abc' });
    assert.deepEqual(
      parseAuthorization(`Basic ${b64(':')}`),
      { scheme: 'none' },
      'an empty pair is no credentials',
    );
    for (const bad of [
      'Basic',
      'Bearer ',
      `Basic ${b64(':p')}`,
      `Basic ${b64('nocolon')}`,
      'Negotiate xyz',
    ]) {
      assert.deepEqual(parseAuthorization(bad), { scheme: 'malformed' }, bad);
    }
  });

  void test('safeEqual compares whole values of any length', () => {
    assert.equal(safeEqual('abc', 'abc'), true);
    assert.equal(safeEqual('abc', 'abd'), false);
    assert.equal(safeEqual('abc', 'abcd'), false);
    assert.equal(safeEqual('', ''), true);
  });
});
