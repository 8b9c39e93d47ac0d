// `wharf passwd` and `wharf token`, run as a user runs them.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createFilesystemDriver } from '../../storage-drivers/filesystem/driver.js';
import { Htpasswd } from '../../src/auth/htpasswd.js';
import { RobotStore } from '../../src/auth/robots.js';
import { fixtureDir } from '../helpers/auth.js';
import { repoRoot } from '../helpers/processes.js';

let dir: Awaited<ReturnType<typeof fixtureDir>>;
let config = '';

function wharf(args: string[], input = ''): { status: number | null; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('WHARF_') && !k.startsWith('REGISTRY_')) env[k] = v;
  const res = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
    cwd: repoRoot,
    input,
    encoding: 'utf8',
    env,
    timeout: 60_000,
  });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

before(async () => {
  dir = await fixtureDir();
  config = dir.path('config.yml');
  await writeFile(
    config,
    JSON.stringify({
      storage: { filesystem: { rootdirectory: dir.path('root') } },
      auth: { htpasswd: { realm: 'r', path: dir.path('htpasswd') } },
    }),
  );
});
after(async () => {
  await dir.cleanup();
});

void describe('wharf passwd', () => {
  void test('writes a bcrypt entry to the configured file, reading the password from stdin', async () => {
    const added = wharf(['passwd', 'alice', '--config', config, '--cost', '4'], 'first secret\nignored\n');
    assert.equal(added.status, 0, added.stderr);
    assert.equal(added.stdout, `added alice in ${dir.path('htpasswd')}\n`);
    const changed = wharf(['passwd', 'alice', '--file', dir.path('htpasswd'), '--cost', '4'], 'second');
    assert.equal(changed.stdout, `updated alice in ${dir.path('htpasswd')}\n`);
    const file = await Htpasswd.open(dir.path('htpasswd'), pino({ level: 'silent' }));
    assert.equal(await file.verify('alice', 'second'), true);
    assert.equal(await file.verify('alice', 'first secret'), false);
  });

  void test('refuses an empty password and a missing file setting', () => {
    const empty = wharf(['passwd', 'bob', '--config', config], '\n');
    assert.equal(empty.status, 1);
    assert.match(empty.stderr, /wharf: passwd: the password is empty/);
    const nofile = wharf(['passwd', 'bob'], 'pw');
    assert.match(nofile.stderr, /give --file, or a config with auth\.htpasswd\.path/);
  });
});

void describe('wharf token', () => {
  void test('create prints the password once; list shows no secret; revoke deletes', async () => {
    const created = wharf([
      ...['token', 'create', '--config', config, '--repo', 'ci/**', '--repo', 'tools/*'],
      ...['--actions', 'pull,push', '--expires', '30d', '--name', 'ci', '--json'],
    ]);
    assert.equal(created.status, 0, created.stderr);
    const robot = JSON.parse(created.stdout) as {
      id: string;
      username: string;
      password: string;
      expiresAt: string;
    };
    assert.equal(robot.username, 'ci');
    assert.match(robot.password, /^wrt_[0-9a-f]{16}_[\w-]{43}$/);
    const days = (Date.parse(robot.expiresAt) - Date.now()) / 86_400_000;
    assert.ok(days > 29.9 && days <= 30, String(days));

    const store = new RobotStore(createFilesystemDriver({ rootdirectory: dir.path('root') }));
    const subject = await store.authenticate('ci', robot.password);
    assert.deepEqual(subject && subject.kind === 'robot' && [subject.repositories, subject.actions], [
      ['ci/**', 'tools/*'],
      ['pull', 'push'],
    ]);

    const listed = wharf(['token', 'list', '--config', config]);
    assert.match(listed.stdout, new RegExp(`${robot.id}\\s+ci\\s+ci/\\*\\* tools/\\*\\s+pull,push`));
    assert.ok(!listed.stdout.includes(robot.password.slice(-20)));

    assert.equal(wharf(['token', 'revoke', robot.id, '--config', config]).stdout, `revoked ${robot.id}\n`);
    assert.match(wharf(['token', 'revoke', robot.id, '--config', config]).stderr, /no robot token with id/);
    assert.equal(wharf(['token', 'list', '--config', config]).stdout, 'no robot tokens\n');
  });

  void test('bad globs, actions and expiries are refused', () => {
    for (const [args, error] of [
      [['--repo', 'Team/*'], /not a repository glob/],
      [['--repo', 'a', '--actions', 'pull,admin'], /--actions takes pull, push, delete/],
      [['--repo', 'a', '--expires', 'soon'], /invalid duration|--expires/],
    ] as const) {
      const res = wharf(['token', 'create', '--config', config, ...args]);
      assert.equal(res.status, 1);
      assert.match(res.stderr, error);
    }
  });
});
