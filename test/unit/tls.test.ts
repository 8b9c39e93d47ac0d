import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { connect } from 'node:tls';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createHttpServer, loadTlsFiles, type TlsReload } from '../../src/http/tls.js';
import { fixtureDir, makeCA, makeLeaf, requireOpenssl, type CertFiles } from '../helpers/auth.js';

const skip = await requireOpenssl();
let dir: Awaited<ReturnType<typeof fixtureDir>>;
let ca: CertFiles;
let leaf: CertFiles;
let other: CertFiles;

before(async () => {
  dir = await fixtureDir();
  if (skip !== undefined) return;
  ca = await makeCA(dir.dir, 'ca');
  leaf = await makeLeaf(dir.dir, 'server', ca, { dns: ['registry.test'] });
  other = await makeLeaf(dir.dir, 'other', ca, { dns: ['other.test'], keyType: 'rsa' });
});
after(async () => {
  await dir.cleanup();
});

void describe('http.tls', { skip }, () => {
  void test('clear start-up errors: unreadable, not PEM, encrypted, mismatched', async () => {
    await assert.rejects(
      loadTlsFiles({ certificate: dir.path('nope.crt'), key: leaf.key }),
      /^TlsConfigError: http\.tls\.certificate: cannot read .*nope\.crt: ENOENT/,
    );
    await assert.rejects(
      loadTlsFiles({ certificate: leaf.cert, key: dir.path('nope.key') }),
      /http\.tls\.key: cannot read .*nope\.key/,
    );
    await writeFile(dir.path('garbage.crt'), 'not a certificate');
    await assert.rejects(
      loadTlsFiles({ certificate: dir.path('garbage.crt'), key: leaf.key }),
      /is not a PEM certificate/,
    );
    await assert.rejects(
      loadTlsFiles({ certificate: leaf.cert, key: leaf.cert }),
      /http\.tls\.key: .* is not a PEM private key/,
    );
    await assert.rejects(
      loadTlsFiles({ certificate: leaf.cert, key: other.key }),
      /http\.tls\.key: .*other\.key does not belong to the certificate in .*server\.crt/,
    );
  });

  void test('serves HTTPS that verifies against the CA, with keep-alive', async () => {
    const { server, certificate } = await createHttpServer(
      { certificate: leaf.cert, key: leaf.key },
      (_req, res) => {
        res.end('ok');
      },
    );
    assert.ok(certificate?.subject.includes('registry.test'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const caPem = await readFile(ca.cert);
    try {
      const sockets = new Set<unknown>();
      for (let i = 0; i < 2; i++) {
        const body = await new Promise<string>((resolve, reject) => {
          const req = request(
            {
              host: '127.0.0.1',
              port,
              servername: 'registry.test',
              ca: caPem,
              path: '/',
              agent: undefined,
              headers: { connection: 'keep-alive' },
            },
            (res) => {
              sockets.add(res.socket);
              let text = '';
              res.on('data', (c: Buffer) => {
                text += c.toString();
              });
              res.on('end', () => {
                resolve(text);
              });
            },
          );
          req.on('error', reject);
          req.end();
        });
        assert.equal(body, 'ok');
      }
      // A name the certificate does not carry is refused by a verifying client.
      await assert.rejects(
        new Promise((resolve, reject) => {
          const req = request(
            { host: '127.0.0.1', port, servername: 'wrong.test', ca: caPem, path: '/' },
            resolve,
          );
          req.on('error', reject);
          req.end();
        }),
        /does not match|altnames/i,
      );
      assert.equal(server.keepAliveTimeout, 65_000);
      assert.equal(server.requestTimeout, 0);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  void test('serves a renewed certificate without a restart, and keeps the old one for a bad pair', async () => {
    // The server's files, which a renewal overwrites in place.
    const served = { certificate: dir.path('served.crt'), key: dir.path('served.key') };
    await copyFile(leaf.cert, served.certificate);
    await copyFile(leaf.key, served.key);
    const reloads: TlsReload[] = [];
    const { server } = await createHttpServer(served, (_req, res) => res.end('ok'), {
      onTlsReload: (r) => reloads.push(r),
      tlsCheckMs: 50,
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const fingerprintServed = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
          resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? '');
          socket.end();
        });
        socket.on('error', reject);
      });
    const fingerprintOf = async (path: string): Promise<string> =>
      new X509Certificate(await readFile(path)).fingerprint256;
    const waitFor = async (want: string): Promise<void> => {
      const deadline = Date.now() + 10_000;
      while ((await fingerprintServed()) !== want) {
        if (Date.now() > deadline) throw new Error(`still not serving ${want}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      assert.equal(await fingerprintServed(), await fingerprintOf(leaf.cert));
      // Renewal: the key first, then the certificate (the pair does not match in between).
      await copyFile(other.key, served.key);
      await new Promise((r) => setTimeout(r, 200));
      await copyFile(other.cert, served.certificate);
      await waitFor(await fingerprintOf(other.cert));
      assert.ok(reloads.some((r) => 'certificate' in r && r.certificate.subject.includes('other.test')));

      // A pair that does not belong together is refused; the renewed certificate stays.
      reloads.length = 0;
      await copyFile(leaf.cert, served.certificate);
      const deadline = Date.now() + 10_000;
      while (reloads.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.ok(reloads.length > 0 && 'error' in reloads[0]!, 'the mismatched pair was tried');
      assert.match(String((reloads[0] as { error: Error }).error), /does not belong to the certificate/);
      assert.equal(await fingerprintServed(), await fingerprintOf(other.cert));
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
