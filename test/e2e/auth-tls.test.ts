// Wharf over TLS under a non-loopback name, as Docker talks to a real private registry: a self-signed CA
// installed for dockerd under /etc/docker/certs.d/<host:port>/ca.crt, the name in /etc/hosts pointing at
// 127.0.0.1, the built-in token server behind an https realm. Both are removed afterwards.
//
// Note: dockerd resolves the name and finds 127.0.0.1, which is in its default insecure range
// (127.0.0.0/8), so dockerd itself speaks TLS here without verifying the chain. The strict clients below
// (node, and skopeo, which reads the same certs.d directory) show that the chain and the name verify.
import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { access, copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { get } from 'node:https';
import { after, before, describe, test } from 'node:test';
import {
  fixtureDir,
  makeCA,
  makeLeaf,
  newES256,
  privatePem,
  randomPassword,
  requireOpenssl,
  writeHtpasswd,
  type CertFiles,
} from '../helpers/auth.js';
import { buildImage, removeImages, requireTools, runImage, type BuiltImage } from '../helpers/images.js';
import { startWharf, type RunningServer } from '../helpers/processes.js';
import { docker, inCI, skopeo } from '../helpers/tools.js';

const NAME = 'registry.wharf-e2e.test';
const HOSTS = '/etc/hosts';
const HOSTS_MARK = '# wharf e2e tls test';
const CERTS_D = '/etc/docker/certs.d';

async function canConfigureHost(): Promise<string | undefined> {
  try {
    if (process.getuid?.() !== 0) throw new Error('not root');
    await access(HOSTS, constants.W_OK);
    await mkdir(CERTS_D, { recursive: true });
    return undefined;
  } catch (err) {
    const reason = `cannot edit ${HOSTS} and ${CERTS_D}: ${(err as Error).message}`;
    if (inCI) throw new Error(`required in CI: ${reason}`, { cause: err });
    return reason;
  }
}

const skip =
  (await requireTools('docker', 'busybox', 'skopeo')) ??
  (await requireOpenssl()) ??
  (await canConfigureHost());

/** Removes our /etc/hosts line, written in place: /etc/hosts is often a bind mount that cannot be replaced. */
async function removeHostsEntry(): Promise<void> {
  const text = await readFile(HOSTS, 'utf8');
  const kept = text.split('\n').filter((line) => !line.includes(HOSTS_MARK));
  if (kept.length !== text.split('\n').length) await writeFile(HOSTS, kept.join('\n'));
}

function httpsStatus(url: string, ca: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, { ca }, (res) => {
      res.resume();
      res.on('end', () => {
        resolve(res.statusCode ?? 0);
      });
    }).on('error', reject);
  });
}

void describe('wharf over TLS with a self-signed CA and a registry name', { skip, timeout: 240_000 }, () => {
  const password = randomPassword();
  let files: Awaited<ReturnType<typeof fixtureDir>>;
  let ca: CertFiles;
  let leaf: CertFiles;
  let server: RunningServer | undefined;
  let registry = '';
  let certsDir = '';
  let image: BuiltImage;
  const localRefs: string[] = [];

  before(async () => {
    files = await fixtureDir();
    ca = await makeCA(files.dir, 'ca');
    leaf = await makeLeaf(files.dir, 'registry', ca, { dns: [NAME] });
    await writeHtpasswd(files.path('htpasswd'), { alice: password });
    await writeFile(files.path('signing.pem'), privatePem(newES256()));
    const config = {
      http: { tls: { certificate: leaf.cert, key: leaf.key } },
      auth: {
        tokenserver: {
          enabled: true,
          htpasswd: files.path('htpasswd'),
          signingkey: files.path('signing.pem'),
        },
      },
    };
    await writeFile(files.path('config.yml'), JSON.stringify(config));
    server = await startWharf({ config: files.path('config.yml'), tls: true, readyStatus: 401 });
    const port = server.host.split(':')[1] ?? '';
    registry = `${NAME}:${port}`;

    await removeHostsEntry();
    const hosts = await readFile(HOSTS, 'utf8');
    await writeFile(HOSTS, `${hosts}${hosts.endsWith('\n') ? '' : '\n'}127.0.0.1 ${NAME} ${HOSTS_MARK}\n`);
    certsDir = `${CERTS_D}/${registry}`;
    await mkdir(certsDir, { recursive: true });
    await copyFile(ca.cert, `${certsDir}/ca.crt`);
    image = await buildImage(`local/e2e-tls:1`);
    localRefs.push(image.id);
  });

  after(async () => {
    if (registry !== '') await docker(['logout', registry]).catch(() => undefined);
    await removeImages(...localRefs);
    await removeHostsEntry();
    if (certsDir !== '') await rm(certsDir, { recursive: true, force: true });
    await server?.stop();
    await files.cleanup();
  });

  void test('the name resolves to the server and its certificate verifies against the CA', async () => {
    assert.equal(await httpsStatus(`https://${registry}/v2/`, await readFile(ca.cert)), 401);
    // Without the CA, a verifying client refuses the server.
    await assert.rejects(
      httpsStatus(`https://${registry}/v2/`, Buffer.from('')),
      /self[- ]signed|unable to (get|verify)/i,
    );
  });

  void test('docker login (token realm on https), push, pull and run over TLS', async () => {
    const { stdout } = await docker(['login', '--username', 'alice', '--password', password, registry]);
    assert.match(stdout, /Login Succeeded/);
    const ref = `${registry}/e2e/tls:1`;
    await docker(['tag', image.id, ref]);
    localRefs.push(ref);
    await docker(['push', ref]);
    await removeImages(ref, image.id);
    await docker(['pull', ref]);
    assert.equal(await runImage(ref), image.marker);
    // The realm Docker was sent to is the https one of this name.
    const res = await fetch(`${server?.url ?? ''}/v2/`).catch(() => undefined);
    assert.equal(res, undefined, 'the port speaks only TLS');
  });

  void test('skopeo verifies the chain with the installed certs.d CA, and fails without it', async () => {
    const ref = `docker://${registry}/e2e/tls:1`;
    // skopeo (containers/image) reads /etc/docker/certs.d/<host:port> as dockerd does, and verifies.
    const { stdout } = await skopeo(['inspect', '--creds', `alice:${password}`, ref]);
    assert.match(stdout, /"Name": "registry\.wharf-e2e\.test:\d+\/e2e\/tls"/);
    const empty = files.path('no-certs');
    await mkdir(empty);
    await assert.rejects(
      skopeo(['inspect', '--cert-dir', empty, '--creds', `alice:${password}`, ref]),
      /x509|certificate/i,
    );
  });

  void test('a key that does not match the certificate stops the start-up with a clear error', async () => {
    const other = await makeLeaf(files.dir, 'other', ca, { dns: ['other.test'] });
    await writeFile(
      files.path('bad.yml'),
      JSON.stringify({ http: { tls: { certificate: leaf.cert, key: other.key } } }),
    );
    await assert.rejects(
      startWharf({ config: files.path('bad.yml'), tls: true, timeoutMs: 15_000 }),
      /http\.tls\.key: .*other\.key does not belong to the certificate in .*registry\.crt/,
    );
  });
});
