import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createHttpServer, loadTlsFiles } from '../../src/http/tls.js';
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
});
