import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { after, before, describe, mock, test } from 'node:test';
import { SignJWT } from 'jose';
import { libtrustKeyId, loadJwks, loadPemBundle, loadSigningKey, trustedKey } from '../../src/auth/keys.js';
import { TokenRejectedError, TokenVerifier } from '../../src/auth/token-verify.js';
import {
  fixtureDir,
  makeCA,
  makeLeaf,
  newES256,
  newRS256,
  privatePem,
  requireOpenssl,
  signToken,
  type CertFiles,
} from '../helpers/auth.js';

let dir: Awaited<ReturnType<typeof fixtureDir>>;
before(async () => {
  dir = await fixtureDir();
});
after(async () => {
  await dir.cleanup();
});

const base = { issuer: 'test-issuer', service: 'test-service', algorithms: ['ES256', 'RS256', 'EdDSA'] };

void describe('keys', () => {
  void test('libtrust key ids: twelve groups of four base32 characters', () => {
    const id = libtrustKeyId(newES256().publicKey);
    assert.match(id, /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
  });

  void test('signing keys: PEM (PKCS#8, SEC1, PKCS#1) and JWK; errors name the key and the file', async () => {
    const ec = newES256();
    const rsa = newRS256();
    const forms = [
      { file: 'pkcs8.pem', text: privatePem(ec), pair: ec },
      { file: 'sec1.pem', text: ec.privateKey.export({ type: 'sec1', format: 'pem' }).toString(), pair: ec },
      {
        file: 'pkcs1.pem',
        text: rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
        pair: rsa,
      },
      { file: 'key.jwk', text: JSON.stringify(ec.privateKey.export({ format: 'jwk' })), pair: ec },
    ];
    for (const f of forms) {
      await writeFile(dir.path(f.file), f.text);
      const key = await loadSigningKey(dir.path(f.file));
      assert.equal(key.alg, f.pair.alg, f.file);
      assert.equal(key.kid, f.pair.kid, f.file);
    }
    await assert.rejects(
      loadSigningKey(dir.path('none.pem')),
      /auth\.tokenserver\.signingkey: cannot read .*none\.pem/,
    );
    await writeFile(dir.path('public.pem'), ec.publicKey.export({ type: 'spki', format: 'pem' }));
    await assert.rejects(loadSigningKey(dir.path('public.pem')), /no PEM private key or JWK/);
    await writeFile(
      dir.path('enc.pem'),
      ec.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }),
    );
    await assert.rejects(loadSigningKey(dir.path('enc.pem')), /encrypted/);
  });

  void test('trust bundles: PEM with no key, JWKS without keys, private JWKs reduced to public', async () => {
    await writeFile(dir.path('empty.pem'), 'nothing here');
    await assert.rejects(
      loadPemBundle(dir.path('empty.pem')),
      /rootcertbundle: .* holds no PEM certificate or public key/,
    );
    await writeFile(dir.path('empty.jwks'), '{"keys":[]}');
    await assert.rejects(loadJwks(dir.path('empty.jwks')), /jwks: .* has no "keys"/);
    const ec = newES256();
    await writeFile(
      dir.path('private.jwks'),
      JSON.stringify({ keys: [{ ...ec.privateKey.export({ format: 'jwk' }), kid: 'k1' }] }),
    );
    const [key] = await loadJwks(dir.path('private.jwks'));
    assert.ok(key);
    assert.equal(key.key.type, 'public');
    assert.ok(key.ids.includes('k1'));
  });
});

void describe('token verifier', () => {
  void test('a verified token is cached until it expires, and not a moment longer', async (t) => {
    const key = newES256();
    const verifier = new TokenVerifier({ ...base, keys: [await trustedKey(key.publicKey)] });
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const token = await signToken({
      key,
      expiresIn: 10,
      access: [{ type: 'repository', name: 'a', actions: ['pull'] }],
    });
    const first = await verifier.verify(token);
    assert.equal(await verifier.verify(token), first, 'the second check is a cache hit');
    assert.deepEqual([...(first.access.get('repository:a') ?? [])], ['pull']);
    // exp + 60 s skew allowance: accepted at 69 s, refused at 71 s.
    t.mock.timers.tick(69_000);
    assert.equal(await verifier.verify(token), first);
    t.mock.timers.tick(2_000);
    await assert.rejects(
      verifier.verify(token),
      (err: unknown) => err instanceof TokenRejectedError && err.reason === 'expired',
    );
    mock.timers.reset();
  });

  void test('a token with several audiences is accepted when one is the service', async () => {
    const key = newES256();
    const verifier = new TokenVerifier({ ...base, keys: [await trustedKey(key.publicKey)] });
    await verifier.verify(await signToken({ key, audience: ['other', 'test-service'] }));
  });

  void test('signingalgorithms limits what is accepted', async () => {
    const key = newRS256();
    const verifier = new TokenVerifier({
      ...base,
      algorithms: ['ES256'],
      keys: [await trustedKey(key.publicKey)],
    });
    await assert.rejects(verifier.verify(await signToken({ key })), /algorithm not allowed/);
  });

  void test('an embedded jwk header is accepted only when it is a trusted key', async () => {
    const key = newES256();
    const stranger = newES256();
    const verifier = new TokenVerifier({ ...base, keys: [await trustedKey(key.publicKey)] });
    const withJwk = (k: typeof key) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', jwk: k.publicKey.export({ format: 'jwk' }) })
        .setIssuer('test-issuer')
        .setAudience('test-service')
        .setExpirationTime('1m')
        .sign(k.privateKey);
    await verifier.verify(await withJwk(key));
    await assert.rejects(verifier.verify(await withJwk(stranger)), /embedded jwk is not a trusted key/);
  });
});

void describe('token verifier: certificates (Distribution rootcertbundle)', async () => {
  const skip = await requireOpenssl();
  let ca: CertFiles;
  let signer: CertFiles;
  let otherCa: CertFiles;
  let rogue: CertFiles;
  before(async () => {
    if (skip !== undefined) return;
    ca = await makeCA(dir.dir, 'ca');
    signer = await makeLeaf(dir.dir, 'signer', ca);
    otherCa = await makeCA(dir.dir, 'other-ca', 'Other CA');
    rogue = await makeLeaf(dir.dir, 'rogue', otherCa);
  });

  const sign = async (leaf: CertFiles, header: Record<string, unknown>) =>
    new SignJWT({ access: [] })
      .setProtectedHeader({ alg: 'ES256', ...header })
      .setIssuer('test-issuer')
      .setAudience('test-service')
      .setExpirationTime('1m')
      .sign(createPrivateKey(await readFile(leaf.key)));
  const x5c = async (...certs: CertFiles[]) =>
    Promise.all(certs.map(async (c) => new X509Certificate(await readFile(c.cert)).raw.toString('base64')));

  void test('x5c chains to a root in the bundle are accepted; others are not', { skip }, async () => {
    const bundle = await loadPemBundle(ca.cert);
    const verifier = new TokenVerifier({ ...base, keys: bundle.keys, roots: bundle.roots });
    await verifier.verify(await sign(signer, { x5c: await x5c(signer) }));
    await verifier.verify(await sign(signer, { x5c: await x5c(signer, ca) }));
    await assert.rejects(
      verifier.verify(await sign(rogue, { x5c: await x5c(rogue) })),
      /x5c chain has no trusted root/,
    );
    await assert.rejects(
      verifier.verify(await sign(rogue, { x5c: await x5c(rogue, ca) })),
      /x5c chain is broken/,
    );
    // The chain names the signer's key: a signature by another key fails.
    await assert.rejects(verifier.verify(await sign(rogue, { x5c: await x5c(signer) })), /bad signature/);
  });

  void test(
    'a certificate in the bundle is trusted by its libtrust kid, as Distribution does',
    { skip },
    async () => {
      const bundle = await loadPemBundle(signer.cert);
      const verifier = new TokenVerifier({ ...base, keys: bundle.keys, roots: bundle.roots });
      const kid = libtrustKeyId(new X509Certificate(await readFile(signer.cert)).publicKey);
      await verifier.verify(await sign(signer, { kid }));
    },
  );
});
