// The real Docker engine and skopeo against a Wharf that requires credentials: once with htpasswd
// (Basic), once with the built-in token server (Bearer). Each run logs in, pushes, pulls, is refused a
// push it has no right to, logs in with a robot token minted by `wharf token create`, and ends with a
// scan of everything the server logged for passwords and tokens.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import {
  basicAuth,
  fixtureDir,
  newES256,
  privatePem,
  randomPassword,
  secretForms,
  writeHtpasswd,
} from '../helpers/auth.js';
import {
  buildImage,
  imageExists,
  removeImages,
  requireTools,
  runImage,
  verifyImageContent,
  type BuiltImage,
} from '../helpers/images.js';
import { repoRoot, startWharf, type RunningServer } from '../helpers/processes.js';
import { docker, run, skopeo } from '../helpers/tools.js';

const skip = await requireTools('docker', 'busybox', 'skopeo');

const JWT = /eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}/;

/** The server logs at debug level here (for the scan); show only its warnings and errors. */
function printWarnings(server: RunningServer | undefined): void {
  const lines = (server?.output() ?? '').split('\n').filter((line) => /"level":(4|5|6)0/.test(line));
  if (lines.length > 0) console.error(`--- registry warnings ---\n${lines.join('\n')}\n---`);
}

interface Mode {
  name: string;
  auth: (files: { htpasswd: string; signingKey: string }) => object;
}

const rules = {
  rules: [
    { repositories: ['e2e/**'], users: ['alice'], actions: ['pull', 'push', 'delete'] },
    { repositories: ['e2e/**'], users: ['bob'], actions: ['pull'] },
    { repositories: ['pub/*'], users: ['alice'], actions: ['pull', 'push'], anonymous: true },
  ],
};

const modes: Mode[] = [
  {
    name: 'htpasswd (Basic)',
    auth: ({ htpasswd }) => ({ htpasswd: { realm: 'wharf-e2e', path: htpasswd }, access: rules }),
  },
  {
    name: 'the built-in token server (Bearer)',
    auth: ({ htpasswd, signingKey }) => ({
      tokenserver: { enabled: true, htpasswd, signingkey: signingKey, expiration: '10m' },
      access: rules,
    }),
  },
];

for (const mode of modes) {
  void describe(`docker and skopeo against wharf with ${mode.name}`, { skip, timeout: 240_000 }, () => {
    const users = { alice: randomPassword(), bob: randomPassword() };
    const secrets: string[] = [users.alice, users.bob];
    let files: Awaited<ReturnType<typeof fixtureDir>>;
    let configPath = '';
    let server: RunningServer | undefined;
    let host = '';
    let image: BuiltImage;
    const localRefs: string[] = [];

    const login = (user: string, password: string) =>
      docker(['login', '--username', user, '--password', password, host]);

    before(async () => {
      files = await fixtureDir();
      await writeHtpasswd(files.path('htpasswd'), users);
      await writeFile(files.path('signing.pem'), privatePem(newES256()));
      configPath = files.path('config.yml');
      const auth = mode.auth({ htpasswd: files.path('htpasswd'), signingKey: files.path('signing.pem') });
      // JSON is YAML.
      await writeFile(configPath, JSON.stringify({ auth }));
      server = await startWharf({ config: configPath, readyStatus: 401, env: { WHARF_LOG_LEVEL: 'debug' } });
      host = server.host;
      image = await buildImage(`local/e2e-auth:${mode.name.length}`, { layers: 1, layerBytes: 128 * 1024 });
      localRefs.push(image.id);
    });

    after(async () => {
      if (host !== '') await docker(['logout', host]).catch(() => undefined);
      await removeImages(...localRefs);
      await server?.stop();
      printWarnings(server);
      await files.cleanup();
    });

    void test('docker login, push, pull and run', async () => {
      const { stdout } = await login('alice', users.alice);
      assert.match(stdout, /Login Succeeded/);
      const ref = `${host}/e2e/app:1`;
      await docker(['tag', image.id, ref]);
      localRefs.push(ref);
      await docker(['push', ref]);
      await removeImages(ref, image.id);
      assert.equal(await imageExists(ref), false);
      await docker(['pull', ref]);
      assert.equal(await verifyImageContent(ref, image), undefined);
      assert.equal(await runImage(ref), image.marker);
    });

    void test("a push without the right is refused with Docker's denied message; pull still works", async () => {
      await login('bob', users.bob);
      const ref = `${host}/e2e/app:bob`;
      await docker(['tag', `${host}/e2e/app:1`, ref]);
      localRefs.push(ref);
      await assert.rejects(docker(['push', ref]), /denied/);
      await removeImages(`${host}/e2e/app:1`);
      await docker(['pull', `${host}/e2e/app:1`]);
      // Nothing outside the rules, not even a pull.
      await assert.rejects(docker(['pull', `${host}/other/app:1`]), /denied|unauthorized|not found/i);
    });

    void test('a wrong password fails docker login', async () => {
      await assert.rejects(login('alice', 'not-the-password'), /unauthorized/i);
    });

    void test('skopeo --creds copies with the right, and is refused without it', async () => {
      const dest = `docker://${host}/e2e/skopeo:1`;
      await skopeo([
        'copy',
        '--dest-tls-verify=false',
        '--dest-creds',
        `alice:${users.alice}`,
        `docker-daemon:${image.id}`,
        dest,
      ]);
      const { stdout } = await skopeo(['inspect', '--tls-verify=false', '--creds', `bob:${users.bob}`, dest]);
      assert.match(stdout, /"Name": ".*\/e2e\/skopeo"/);
      await assert.rejects(
        skopeo([
          'copy',
          '--dest-tls-verify=false',
          '--dest-creds',
          `bob:${users.bob}`,
          `docker-daemon:${image.id}`,
          `docker://${host}/e2e/skopeo:2`,
        ]),
        /denied/,
      );
      await assert.rejects(
        skopeo(['inspect', '--tls-verify=false', '--creds', 'alice:wrong', dest]),
        /unauthorized|invalid username or password/i,
      );
    });

    void test('anonymous pull where a rule allows it; anonymous push refused', async () => {
      await login('alice', users.alice);
      const ref = `${host}/pub/tool:1`;
      await docker(['tag', image.id, ref]);
      localRefs.push(ref);
      await docker(['push', ref]);
      await docker(['logout', host]);
      // skopeo without credentials, in both modes.
      const { stdout } = await skopeo(['inspect', '--tls-verify=false', `docker://${ref}`]);
      assert.match(stdout, /"Name": ".*\/pub\/tool"/);
      await assert.rejects(
        skopeo(['inspect', '--tls-verify=false', `docker://${host}/e2e/app:1`]),
        /unauthorized|authentication required|denied/i,
      );
      await removeImages(ref);
      if (mode.name.includes('Basic')) {
        // Docker never sends a request unauthenticated once it has seen a Basic challenge: anonymous
        // docker pulls need the token server (as with Distribution, whose htpasswd has no anonymous access).
        await assert.rejects(docker(['pull', ref]), /no basic auth credentials/);
      } else {
        await docker(['pull', ref]);
      }
      await docker(['tag', image.id, `${host}/pub/tool:2`]);
      localRefs.push(`${host}/pub/tool:2`);
      await assert.rejects(
        docker(['push', `${host}/pub/tool:2`]),
        /denied|unauthorized|no basic auth credentials/,
      );
    });

    void test('a robot token from `wharf token create` logs docker in for CI, within its globs', async () => {
      const created = await run(
        process.execPath,
        [
          ...['--import', 'tsx', 'src/cli.ts', 'token', 'create', '--config', configPath],
          ...['--repo', 'ci/**', '--actions', 'pull,push', '--expires', '1d', '--name', 'ci-bot', '--json'],
        ],
        { cwd: repoRoot, env: { WHARF_STORAGE_FILESYSTEM_ROOTDIRECTORY: server?.root ?? '' } },
      );
      const robot = JSON.parse(created.stdout) as { username: string; password: string };
      secrets.push(robot.password);
      await login(robot.username, robot.password);
      const ref = `${host}/ci/built:1`;
      await docker(['tag', image.id, ref]);
      localRefs.push(ref);
      await docker(['push', ref]);
      const outside = `${host}/e2e/app:ci`;
      await docker(['tag', image.id, outside]);
      localRefs.push(outside);
      await assert.rejects(docker(['push', outside]), /denied/);
    });

    void test('the server logged no password, robot token or bearer token', async () => {
      // One token of our own, so the scan also knows an issued token's exact text.
      if (mode.name.includes('token server')) {
        const res = await fetch(
          `${server?.url ?? ''}/auth/token?service=wharf&scope=repository:e2e/app:pull`,
          {
            headers: { Authorization: basicAuth('alice', users.alice) },
          },
        );
        const token = ((await res.json()) as { token: string }).token;
        secrets.push(token);
        await fetch(`${server?.url ?? ''}/v2/e2e/app/tags/list`, {
          headers: { Authorization: `Bearer ${token}` },
        });
      }
      const output = server?.output() ?? '';
      assert.match(output, /"msg":"request"/, 'the server logged requests at debug level');
      assert.match(output, /"msg":"login failed"/);
      for (const secret of secrets) {
        for (const form of secretForms(secret)) assert.ok(!output.includes(form), 'a secret is in the log');
      }
      for (const [user, password] of Object.entries(users)) {
        assert.ok(!output.includes(basicAuth(user, password).slice('Basic '.length)));
      }
      assert.doesNotMatch(output, JWT, 'a JWT is in the log');
    });
  });
}
