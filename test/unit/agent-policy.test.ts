import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_POLICY, parseAgentConfig, type Policy } from '../../config/agent-schema.js';
import { judge, PolicySet } from '../../src/agent/policy.js';
import type { RunOutcome } from '../../src/agent/runner.js';

function policy(raw: Record<string, unknown>): Policy {
  const config = parseAgentConfig({
    agent: {
      registry: { url: 'http://r' },
      token: 't',
      policies: [{ name: 'p', repositories: ['**'], ...raw }],
    },
  });
  const [p] = config.agent.policies;
  assert.ok(p);
  return p;
}

describe('PolicySet', () => {
  const set = new PolicySet(
    parseAgentConfig({
      agent: {
        registry: { url: 'http://r' },
        token: 't',
        policies: [
          { name: 'exact', repositories: ['team/app'] },
          { name: 'one-level', repositories: ['team/*'] },
          { name: 'deep', repositories: ['team/**', 'other/**'] },
        ],
      },
    }).agent.policies,
  );
  for (const [repo, want] of [
    ['team/app', 'exact'],
    ['team/web', 'one-level'],
    ['team/web/api', 'deep'],
    ['other/x', 'deep'],
    ['team', 'default'],
    ['elsewhere/app', 'default'],
  ] as const) {
    test(`${repo} → ${want} (first match wins)`, () => {
      assert.equal(set.for(repo).name, want);
    });
  }
  test('no policies: the default', () => {
    assert.equal(new PolicySet([]).for('any/thing'), DEFAULT_POLICY);
  });
});

describe('judge', () => {
  const exited = (exitCode: number, output = ''): RunOutcome => ({
    kind: 'exited',
    exitCode,
    output,
    durationMs: 10,
    oomKilled: false,
  });
  const cases: [
    string,
    Policy,
    RunOutcome,
    boolean,
    { passed: boolean; passedTests: string[]; failedTests: string[]; reason: RegExp },
  ][] = [
    [
      'exit 0 under the default',
      DEFAULT_POLICY,
      exited(0),
      false,
      { passed: true, passedTests: ['exitcode'], failedTests: [], reason: /exit code 0/ },
    ],
    [
      'exit 1 under the default',
      DEFAULT_POLICY,
      exited(1),
      false,
      { passed: false, passedTests: [], failedTests: ['exitcode'], reason: /exit code 1, expected 0/ },
    ],
    [
      'an expected exit code 3',
      policy({ expect: { exitcode: 3 } }),
      exited(3),
      false,
      { passed: true, passedTests: ['exitcode'], failedTests: [], reason: /exit code 3/ },
    ],
    [
      'output matches',
      policy({ expect: { output: '^ready$' } }),
      exited(0, 'boot\nready\n'),
      false,
      { passed: true, passedTests: ['exitcode', 'output'], failedTests: [], reason: /output matched/ },
    ],
    [
      'output does not match',
      policy({ expect: { output: '^ready$' } }),
      exited(0, 'boot\n'),
      false,
      { passed: false, passedTests: ['exitcode'], failedTests: ['output'], reason: /did not match/ },
    ],
    [
      'both wrong',
      policy({ expect: { output: 'x' } }),
      exited(2, ''),
      false,
      {
        passed: false,
        passedTests: [],
        failedTests: ['exitcode', 'output'],
        reason: /expected 0.*did not match/,
      },
    ],
    [
      'out of memory',
      DEFAULT_POLICY,
      { ...exited(137), oomKilled: true } as RunOutcome,
      false,
      { passed: false, passedTests: [], failedTests: ['exitcode'], reason: /out of memory/ },
    ],
    [
      'timeout',
      DEFAULT_POLICY,
      { kind: 'timeout', health: undefined, output: '', durationMs: 30_000 },
      false,
      {
        passed: false,
        passedTests: [],
        failedTests: ['timeout', 'exitcode'],
        reason: /timeout: still running after 30000 ms/,
      },
    ],
    [
      'start failed',
      DEFAULT_POLICY,
      { kind: 'start-failed', reason: 'start: no such file', output: '', durationMs: 1 },
      false,
      { passed: false, passedTests: [], failedTests: ['start', 'exitcode'], reason: /no such file/ },
    ],
    [
      'running, no healthcheck',
      policy({ expect: { running: '2s' } }),
      { kind: 'running', health: undefined, output: '', durationMs: 2000 },
      false,
      { passed: true, passedTests: ['running'], failedTests: [], reason: /running after 2000 ms$/ },
    ],
    [
      'running and healthy',
      policy({ expect: { running: '2s' } }),
      { kind: 'running', health: 'healthy', output: '', durationMs: 2500 },
      true,
      { passed: true, passedTests: ['running', 'healthy'], failedTests: [], reason: /and healthy/ },
    ],
    [
      'unhealthy',
      policy({ expect: { running: '2s' } }),
      { kind: 'unhealthy', output: '', durationMs: 1500 },
      true,
      { passed: false, passedTests: ['running'], failedTests: ['healthy'], reason: /unhealthy/ },
    ],
    [
      'never healthy within the limit',
      policy({ expect: { running: '2s' } }),
      { kind: 'timeout', health: 'starting', output: '', durationMs: 30_000 },
      true,
      {
        passed: false,
        passedTests: ['running'],
        failedTests: ['timeout', 'healthy'],
        reason: /health: starting/,
      },
    ],
    [
      'exited before the running time',
      policy({ expect: { running: '2s' } }),
      exited(0),
      false,
      {
        passed: false,
        passedTests: [],
        failedTests: ['running'],
        reason: /exited with code 0 before 2000 ms/,
      },
    ],
  ];
  for (const [name, p, outcome, healthcheck, want] of cases) {
    test(name, () => {
      const got = judge(p, outcome, healthcheck);
      assert.equal(got.passed, want.passed);
      assert.deepEqual(got.passedTests, want.passedTests);
      assert.deepEqual(got.failedTests, want.failedTests);
      assert.match(got.reason, want.reason);
    });
  }
});
