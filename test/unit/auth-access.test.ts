import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig } from '../../config/load.js';
import { AccessRules, ANONYMOUS, compileGlob, type Subject } from '../../src/auth/access.js';

void describe('repository globs', () => {
  const cases: { glob: string; matches: string[]; misses: string[] }[] = [
    {
      glob: 'team/*',
      matches: ['team/app', 'team/a-b.c_d'],
      misses: ['team', 'team/a/b', 'teams/app', 'xteam/app'],
    },
    { glob: 'team/**', matches: ['team/app', 'team/a/b/c'], misses: ['team', 'teamx/a'] },
    { glob: '**', matches: ['a', 'a/b/c'], misses: [] },
    { glob: '*', matches: ['alpine'], misses: ['library/alpine'] },
    { glob: '*/base', matches: ['team/base'], misses: ['base', 'a/b/base'] },
    { glob: 'a.b', matches: ['a.b'], misses: ['aab'] },
    { glob: 'exact/name', matches: ['exact/name'], misses: ['exact/name/x', 'exact/names'] },
  ];
  for (const c of cases) {
    void test(c.glob, () => {
      const re = compileGlob(c.glob);
      for (const name of c.matches) assert.ok(re.test(name), `${c.glob} should match ${name}`);
      for (const name of c.misses) assert.ok(!re.test(name), `${c.glob} should not match ${name}`);
    });
  }
});

const accessOf = (access: object) =>
  parseConfig({ auth: { htpasswd: { realm: 'r', path: '/p' }, access } }).config.auth?.access;
const user = (name: string): Subject => ({ kind: 'user', name });
const actions = (rules: AccessRules, subject: Subject, name: string) =>
  [...rules.allowed(subject, name)].sort();

void describe('access rules', () => {
  const rules = new AccessRules(
    accessOf({
      groups: { devs: ['alice', 'bob'], ops: ['carol'] },
      rules: [
        { repositories: ['team/**'], groups: ['devs'], actions: ['pull'] },
        { repositories: ['team/app'], users: ['alice'], actions: ['push'] },
        { repositories: ['team/**'], groups: ['ops'], actions: ['pull', 'delete'] },
        { repositories: ['public/**'], users: ['*'], actions: ['pull', 'push'], anonymous: true },
        { repositories: ['mirror/*'], anonymous: true },
      ],
    }),
  );

  void test('rules add up: groups, users and the * user', () => {
    assert.deepEqual(actions(rules, user('alice'), 'team/app'), ['pull', 'push']);
    assert.deepEqual(actions(rules, user('alice'), 'team/db'), ['pull']);
    assert.deepEqual(actions(rules, user('bob'), 'team/app'), ['pull']);
    assert.deepEqual(actions(rules, user('carol'), 'team/app'), ['delete', 'pull']);
    assert.deepEqual(actions(rules, user('zed'), 'team/app'), []);
    assert.deepEqual(actions(rules, user('zed'), 'public/x'), ['pull', 'push']);
  });

  void test('anonymous rules grant pull, and only pull, to everyone', () => {
    assert.deepEqual(actions(rules, ANONYMOUS, 'public/x'), ['pull']);
    assert.deepEqual(actions(rules, ANONYMOUS, 'mirror/alpine'), ['pull']);
    assert.deepEqual(actions(rules, user('zed'), 'mirror/alpine'), ['pull']);
    assert.deepEqual(actions(rules, ANONYMOUS, 'team/app'), []);
    assert.equal(rules.hasAnonymous, true);
  });

  void test('without an access section: authenticated users may do everything, anonymous nothing', () => {
    const open = new AccessRules(undefined);
    assert.deepEqual(actions(open, user('anyone'), 'x/y'), ['delete', 'pull', 'push']);
    assert.deepEqual(actions(open, ANONYMOUS, 'x/y'), []);
    assert.equal(open.hasAnonymous, false);
  });

  void test('an empty rule list grants nothing to anyone', () => {
    const closed = new AccessRules(accessOf({ rules: [] }));
    assert.deepEqual(actions(closed, user('alice'), 'x'), []);
  });

  void test('a robot has its own globs and actions, whatever the rules say', () => {
    const robot: Subject = {
      kind: 'robot',
      id: '0123456789abcdef',
      name: 'ci',
      repositories: ['ci/**', 'tools/*'],
      actions: ['pull', 'push'],
    };
    assert.deepEqual(actions(rules, robot, 'ci/a/b'), ['pull', 'push']);
    assert.deepEqual(actions(rules, robot, 'tools/x'), ['pull', 'push']);
    assert.deepEqual(actions(rules, robot, 'team/app'), []);
    // User rules do not widen a robot's grant; what anyone may pull, it may pull too.
    assert.deepEqual(actions(rules, robot, 'public/x'), ['pull']);
  });
});
