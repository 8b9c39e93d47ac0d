import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  AgentConfigError,
  DEFAULT_POLICY,
  loadAgentConfig,
  parseAgentConfig,
  parseSize,
} from '../../config/agent-schema.js';

const examplesDir = new URL('../../config/examples/agent/', import.meta.url).pathname;
const minimal = { agent: { registry: { url: 'http://127.0.0.1:5000' }, token: 't' } };

describe('agent config', () => {
  test('defaults', () => {
    const { agent, log } = parseAgentConfig(minimal);
    assert.equal(agent.listen, ':5002');
    assert.equal(agent.docker.socket, '/var/run/docker.sock');
    assert.equal(agent.concurrency, 2);
    assert.equal(agent.statedir, './agent-data');
    assert.equal(agent.insecure, false);
    assert.deepEqual(agent.policies, []);
    assert.equal(log.level, 'info');
  });

  test('the default policy: exit code 0 within 30 s and the default limits', () => {
    assert.equal(DEFAULT_POLICY.name, 'default');
    assert.deepEqual(DEFAULT_POLICY.expect, { exitcode: 0 });
    assert.deepEqual(DEFAULT_POLICY.limits, {
      memory: '64m',
      cpus: 0.5,
      pids: 64,
      timeout: 30_000,
      tmpfs: '16m',
    });
  });

  test('a policy: durations in ms, env as NAME=value, user as text', () => {
    const { agent } = parseAgentConfig({
      agent: {
        ...minimal.agent,
        policies: [
          {
            name: 'svc',
            repositories: ['team/**'],
            run: { command: ['serve'], env: { A: 1, B: 'x' }, user: 1000 },
            expect: { running: '5s' },
            limits: { timeout: '1m', memory: '1g' },
          },
        ],
      },
    });
    const [p] = agent.policies;
    assert.ok(p);
    assert.deepEqual(p.run, { command: ['serve'], env: ['A=1', 'B=x'], user: '1000' });
    assert.equal(p.expect.running, 5000);
    assert.equal(p.limits.timeout, 60_000);
    assert.equal(p.limits.memory, '1g');
  });

  const bad: [string, unknown, RegExp][] = [
    ['no token, no secret, not insecure', { agent: { registry: { url: 'http://r' } } }, /agent\.token/],
    ['no registry', { agent: { token: 't' } }, /agent\.registry/],
    ['a registry URL that is not http', { agent: { ...minimal.agent, registry: { url: 'ftp://r' } } }, /url/],
    [
      'a password without a username',
      { agent: { ...minimal.agent, registry: { url: 'http://r', password: 'p' } } },
      /username/,
    ],
    ['an unknown key', { agent: { ...minimal.agent, colour: 'blue' } }, /colour/],
    ['a bad listen address', { agent: { ...minimal.agent, listen: 'nowhere' } }, /listen/],
    ['concurrency 0', { agent: { ...minimal.agent, concurrency: 0 } }, /concurrency/],
    [
      'running not shorter than the timeout',
      {
        agent: {
          ...minimal.agent,
          policies: [{ name: 'p', repositories: ['**'], expect: { running: '30s' } }],
        },
      },
      /expect\.running: must be shorter than limits\.timeout/,
    ],
    [
      'a bad memory size',
      {
        agent: {
          ...minimal.agent,
          policies: [{ name: 'p', repositories: ['**'], limits: { memory: 'lots' } }],
        },
      },
      /invalid size "lots"/,
    ],
    [
      'a memory limit Docker refuses',
      {
        agent: {
          ...minimal.agent,
          policies: [{ name: 'p', repositories: ['**'], limits: { memory: '1m' } }],
        },
      },
      /memory: must be at least/,
    ],
    [
      'a bad output pattern',
      {
        agent: { ...minimal.agent, policies: [{ name: 'p', repositories: ['**'], expect: { output: '(' } }] },
      },
      /not a valid regular expression/,
    ],
    [
      'a bad timeout',
      {
        agent: {
          ...minimal.agent,
          policies: [{ name: 'p', repositories: ['**'], limits: { timeout: 'soon' } }],
        },
      },
      /timeout/,
    ],
    [
      'two policies with one name',
      {
        agent: {
          ...minimal.agent,
          policies: [
            { name: 'p', repositories: ['a'] },
            { name: 'p', repositories: ['b'] },
          ],
        },
      },
      /duplicate policy "p"/,
    ],
    [
      'a policy without repositories',
      { agent: { ...minimal.agent, policies: [{ name: 'p', repositories: [] }] } },
      /repositories/,
    ],
  ];
  for (const [name, raw, why] of bad) {
    test(`refused: ${name}`, () => {
      assert.throws(
        () => parseAgentConfig(raw),
        (err: unknown) => {
          assert.ok(err instanceof AgentConfigError);
          assert.match(err.message, why);
          return true;
        },
      );
    });
  }

  test('insecure lets an agent run without a token', () => {
    assert.equal(
      parseAgentConfig({ agent: { registry: { url: 'http://r' }, insecure: true } }).agent.insecure,
      true,
    );
  });

  test('parseSize reads docker sizes', () => {
    assert.equal(parseSize('64m'), 64 * 1024 * 1024);
    assert.equal(parseSize('1G'), 1024 ** 3);
    assert.equal(parseSize('512k'), 512 * 1024);
    assert.equal(parseSize('100'), 100);
    assert.throws(() => parseSize('1.5m'), /invalid size/);
  });

  test('a missing file and bad YAML are named', () => {
    assert.throws(() => loadAgentConfig('/nonexistent/agent.yaml'), /cannot read/);
  });
});

describe('config/examples/agent', () => {
  const files = readdirSync(examplesDir).filter((f) => /\.ya?ml$/.test(f));
  test('the folder has an example', () => {
    assert.ok(files.length >= 1);
  });
  for (const file of files) {
    test(`${file} validates against the agent schema`, () => {
      const config = loadAgentConfig(join(examplesDir, file));
      assert.ok(config.agent.policies.length > 0);
    });
  }
});
