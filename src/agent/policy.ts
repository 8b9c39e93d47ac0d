// Chooses the policy for a repository and turns what the container did into a verdict's result.
import { DEFAULT_POLICY, type Policy } from '../../config/agent-schema.js';
import { compileGlob } from '../auth/access.js';
import type { RunOutcome } from './runner.js';

/** The policies in config order with their globs compiled; the first match wins, DEFAULT_POLICY last. */
export class PolicySet {
  private readonly compiled: { policy: Policy; globs: RegExp[] }[];

  constructor(policies: readonly Policy[]) {
    this.compiled = policies.map((policy) => ({ policy, globs: policy.repositories.map(compileGlob) }));
  }

  for(repository: string): Policy {
    return this.compiled.find((c) => c.globs.some((g) => g.test(repository)))?.policy ?? DEFAULT_POLICY;
  }
}

export interface Judgement {
  passed: boolean;
  passedTests: string[];
  failedTests: string[];
  /** One line on why it failed (or what passed), for the verdict and the log. */
  reason: string;
}

/** The tests a policy runs, in the order a verdict lists them. */
export function testsOf(policy: Policy, healthcheck: boolean): string[] {
  if (policy.expect.running !== undefined) return healthcheck ? ['running', 'healthy'] : ['running'];
  return policy.expect.output !== undefined ? ['exitcode', 'output'] : ['exitcode'];
}

function split(tests: string[], failed: (test: string) => boolean) {
  return { passedTests: tests.filter((t) => !failed(t)), failedTests: tests.filter(failed) };
}

/** Decides PASSED or FAILED for one run under `policy`. Pure, so every case is unit-tested. */
export function judge(policy: Policy, outcome: RunOutcome, healthcheck: boolean): Judgement {
  const tests = testsOf(policy, healthcheck);
  const all = () => true;
  switch (outcome.kind) {
    case 'start-failed':
      return { passed: false, passedTests: [], failedTests: ['start', ...tests], reason: outcome.reason };
    case 'timeout': {
      const limit = `${policy.limits.timeout} ms`;
      if (policy.expect.running !== undefined) {
        // Still running, but the HEALTHCHECK never said healthy within the limit.
        return {
          passed: false,
          ...split(tests, (t) => t === 'healthy'),
          failedTests: ['timeout', 'healthy'],
          reason: `not healthy within ${limit} (health: ${outcome.health ?? 'none'})`,
        };
      }
      return {
        passed: false,
        passedTests: [],
        failedTests: ['timeout', ...tests],
        reason: `timeout: still running after ${limit}`,
      };
    }
    case 'unhealthy':
      return {
        passed: false,
        ...split(tests, (t) => t === 'healthy'),
        reason: 'the HEALTHCHECK reported unhealthy',
      };
    case 'running': {
      if (policy.expect.running === undefined) {
        // Cannot happen: the runner reports `running` only for running policies.
        return { passed: false, passedTests: [], failedTests: tests, reason: 'unexpected running state' };
      }
      return {
        passed: true,
        passedTests: tests,
        failedTests: [],
        reason: `running after ${policy.expect.running} ms${healthcheck ? ' and healthy' : ''}`,
      };
    }
    case 'exited': {
      const oom = outcome.oomKilled ? ' (killed: out of memory)' : '';
      if (policy.expect.running !== undefined) {
        return {
          passed: false,
          ...split(tests, all),
          reason: `exited with code ${outcome.exitCode} before ${policy.expect.running} ms${oom}`,
        };
      }
      const exitOk = outcome.exitCode === policy.expect.exitcode;
      const pattern = policy.expect.output;
      const outputOk = pattern === undefined || new RegExp(pattern, 'm').test(outcome.output);
      const result = split(tests, (t) => (t === 'exitcode' ? !exitOk : !outputOk));
      const reasons = [
        exitOk
          ? `exit code ${outcome.exitCode}`
          : `exit code ${outcome.exitCode}, expected ${policy.expect.exitcode}${oom}`,
        ...(pattern === undefined ? [] : [outputOk ? 'output matched' : `output did not match /${pattern}/`]),
      ];
      return { passed: exitOk && outputOk, ...result, reason: reasons.join('; ') };
    }
  }
}
