// Wharf's token server is a Docker token server: CNCF Distribution 2.8, given a certificate for the
// signing key as `rootcertbundle`, accepts the tokens it issues (the `kid` is libtrust's fingerprint),
// and Docker logs in, pushes and pulls through it. And Wharf, configured with Distribution's own
// `auth.token` keys, accepts the same tokens.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  fixtureDir,
  newES256,
  privatePem,
  randomPassword,
  requireOpenssl,
  writeHtpasswd,
} from '../helpers/auth.js';
import { buildImage, removeImages, requireTools, runImage, type BuiltImage } from '../helpers/images.js';
import {
  distributionBinary,
  freePort,
  startWharf,
  waitForHttp,
  type RunningServer,
} from '../helpers/processes.js';
import { docker } from '../helpers/tools.js';

const execFileAsync = promisify(execFile);
const skip = (await requireTools('docker', 'busybox', 'docker-registry')) ?? (await requireOpenssl());

void describe(
  'Distribution 2.8 accepts tokens from the Wharf token server',
  { skip, timeout: 180_000 },
  () => {
    const password = randomPassword();
    let files: Awaited<ReturnType<typeof fixtureDir>>;
    let tokenServer: RunningServer | undefined;
    let distribution: ChildProcess | undefined;
    let distributionOutput = '';
    let verifier: RunningServer | undefined;
    let host = '';
    let image: BuiltImage;
    const localRefs: string[] = [];

    before(async () => {
      files = await fixtureDir();
      await writeHtpasswd(files.path('htpasswd'), { alice: password });
      await writeFile(files.path('signing.pem'), privatePem(newES256()));
      // The operator's step: a self-signed certificate for the signing key, for Distribution's bundle.
      await execFileAsync('openssl', [
        ...['req', '-x509', '-key', files.path('signing.pem'), '-out', files.path('token.crt')],
        ...['-days', '2', '-subj', '/CN=wharf token server'],
      ]);
      const service = 'registry.e2e';
      await writeFile(
        files.path('wharf.yml'),
        JSON.stringify({
          auth: {
            tokenserver: {
              enabled: true,
              htpasswd: files.path('htpasswd'),
              signingkey: files.path('signing.pem'),
              issuer: 'wharf-e2e',
              service,
            },
          },
        }),
      );
      tokenServer = await startWharf({ config: files.path('wharf.yml'), readyStatus: 401 });

      const port = await freePort();
      host = `127.0.0.1:${port}`;
      await writeFile(
        files.path('distribution.yml'),
        [
          'version: 0.1',
          'log: { level: warn, accesslog: { disabled: true } }',
          `storage: { filesystem: { rootdirectory: ${JSON.stringify(files.path('dist-root'))} } }`,
          `http: { addr: ${host}, secret: e2e-not-secret }`,
          'auth:',
          '  token:',
          `    realm: ${tokenServer.url}/auth/token`,
          `    service: ${service}`,
          '    issuer: wharf-e2e',
          `    rootcertbundle: ${files.path('token.crt')}`,
          '',
        ].join('\n'),
      );
      const env = { ...process.env };
      delete env.AWS_CA_BUNDLE;
      distribution = spawn(distributionBinary, ['serve', files.path('distribution.yml')], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      process.once('exit', () => distribution?.kill('SIGKILL'));
      const collect = (chunk: Buffer) => {
        distributionOutput += chunk.toString();
      };
      distribution.stdout?.on('data', collect);
      distribution.stderr?.on('data', collect);
      await waitForHttp(`http://${host}/v2/`, { status: 401, timeoutMs: 20_000 });

      // A Wharf that verifies with Distribution's keys: auth.token with the same certificate bundle.
      await writeFile(
        files.path('verifier.yml'),
        JSON.stringify({
          auth: {
            token: {
              realm: `${tokenServer.url}/auth/token`,
              service,
              issuer: 'wharf-e2e',
              rootcertbundle: files.path('token.crt'),
            },
          },
        }),
      );
      verifier = await startWharf({ config: files.path('verifier.yml'), readyStatus: 401 });
      image = await buildImage('local/e2e-distribution-token:1');
      localRefs.push(image.id);
    });

    after(async () => {
      if (host !== '') await docker(['logout', host]).catch(() => undefined);
      if (verifier !== undefined) await docker(['logout', verifier.host]).catch(() => undefined);
      await removeImages(...localRefs);
      distribution?.kill('SIGKILL');
      await tokenServer?.stop();
      await verifier?.stop();
      await files.cleanup();
    });

    void test('docker logs in to Distribution through Wharf, pushes and pulls', async () => {
      const login = await docker(['login', '--username', 'alice', '--password', password, host]);
      assert.match(login.stdout, /Login Succeeded/, distributionOutput);
      const ref = `${host}/e2e/through-wharf:1`;
      await docker(['tag', image.id, ref]);
      localRefs.push(ref);
      await docker(['push', ref]);
      await removeImages(ref, image.id);
      await docker(['pull', ref]);
      assert.equal(await runImage(ref), image.marker);
    });

    void test('a Wharf with Distribution-style auth.token accepts the same tokens', async () => {
      assert.ok(verifier);
      await docker(['login', '--username', 'alice', '--password', password, verifier.host]);
      const ref = `${verifier.host}/e2e/verified:1`;
      await docker(['tag', image.id, ref]);
      localRefs.push(ref);
      await docker(['push', ref]);
      await removeImages(ref);
      await docker(['pull', ref]);
    });
  },
);
