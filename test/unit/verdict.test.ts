import assert from 'node:assert/strict';
import { createHash, createPublicKey, verify, type JsonWebKey } from 'node:crypto';
import { describe, test } from 'node:test';
import type { JWK } from 'jose';
import {
  ANNOTATION_CREATED,
  ANNOTATION_KEYID,
  ANNOTATION_PREDICATE,
  ANNOTATION_RESULT,
  buildStatement,
  DSSE_MEDIA_TYPE,
  DSSE_PAYLOAD_TYPE,
  EMPTY_DESCRIPTOR,
  generateSigningKey,
  loadSigningKey,
  pae,
  PREDICATE_TYPE,
  publicJwks,
  signStatement,
  sortNewestFirst,
  describeVerdict,
  STATEMENT_TYPE,
  VERDICT_ARTIFACT_TYPE,
  verdictManifest,
  VerdictError,
  verifyEnvelope,
  type DsseEnvelope,
  type InTotoStatement,
  type VerdictErrorReason,
} from '../../src/verify/verdict.js';

const digest = `sha256:${createHash('sha256').update('image').digest('hex')}`;
const statementFor = (result: 'PASSED' | 'FAILED' = 'PASSED'): InTotoStatement =>
  buildStatement({
    subjectName: '127.0.0.1:5000/team/app',
    digest,
    result,
    passedTests: result === 'PASSED' ? ['exit-code'] : [],
    failedTests: result === 'FAILED' ? ['exit-code'] : [],
    policy: 'default',
    details: { exitCode: result === 'PASSED' ? 0 : 1 },
  });

/** Decimal big integer → 32-byte base64url, for the DSSE spec's key. */
const coordinate = (decimal: string): string =>
  Buffer.from(BigInt(decimal).toString(16).padStart(64, '0'), 'hex').toString('base64url');

const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64');

void describe('statement', () => {
  void test('buildStatement: in-toto Statement v1 with the test-result predicate', () => {
    const s = statementFor('FAILED');
    assert.equal(s._type, STATEMENT_TYPE);
    assert.equal(s.predicateType, PREDICATE_TYPE);
    assert.deepEqual(s.subject, [{ name: '127.0.0.1:5000/team/app', digest: { sha256: digest.slice(7) } }]);
    assert.deepEqual(s.predicate, {
      result: 'FAILED',
      passedTests: [],
      failedTests: ['exit-code'],
      warnedTests: [],
      configuration: [{ name: 'default' }],
      wharf: { exitCode: 1 },
    });
    assert.throws(() => buildStatement({ ...statementInput(), digest: 'sha512:abc' }), /sha256/);
  });
});

function statementInput() {
  return {
    subjectName: 'x',
    digest,
    result: 'PASSED' as const,
    passedTests: [],
    failedTests: [],
    policy: 'p',
  };
}

void describe('DSSE', () => {
  void test('PAE: the spec vector', () => {
    assert.equal(
      pae('http://example.com/HelloWorld', Buffer.from('hello world')).toString('utf8'),
      'DSSEv1 29 http://example.com/HelloWorld 11 hello world',
    );
    // Lengths are byte lengths, not characters.
    assert.equal(pae('t', Buffer.from('é')).toString('utf8'), 'DSSEv1 1 t 2 é');
    assert.equal(pae('', Buffer.alloc(0)).toString('utf8'), 'DSSEv1 0  0 ');
  });

  void test('the spec vector signature verifies with the spec key (P1363 r||s over PAE)', async () => {
    const jwk: JWK = {
      kty: 'EC',
      crv: 'P-256',
      x: coordinate('46950820868899156662930047687818585632848591499744589407958293238635476079160'),
      y: coordinate('5640078356564379163099075877009565129882514886557779369047442380624545832820'),
      kid: 'spec',
    };
    const envelope = {
      payload: 'aGVsbG8gd29ybGQ=',
      payloadType: 'http://example.com/HelloWorld',
      signatures: [
        { sig: 'A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA==' },
      ],
    };
    // Our PAE and signature encoding reproduce the spec's: its signature verifies over pae().
    const sig = Buffer.from(envelope.signatures[0]!.sig, 'base64');
    const publicKey = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
    const body = Buffer.from(envelope.payload, 'base64');
    assert.ok(
      verify('sha256', pae(envelope.payloadType, body), { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig),
    );
    assert.ok(
      !verify(
        'sha256',
        pae(envelope.payloadType, Buffer.from('hello World')),
        { key: publicKey, dsaEncoding: 'ieee-p1363' },
        sig,
      ),
    );
    // verifyEnvelope refuses it anyway: the payload type is not ours.
    await assert.rejects(verifyEnvelope(envelope, { keys: [jwk] }), (err: unknown) => {
      assert.ok(err instanceof VerdictError);
      assert.equal(err.reason, 'payload-type');
      return true;
    });
  });

  void test('sign and verify round trip; the keyid is the RFC 7638 thumbprint', async () => {
    const { privateJwk, key } = await generateSigningKey();
    assert.equal(privateJwk.kid, key.kid);
    assert.match(key.kid, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(typeof privateJwk.d, 'string');
    assert.equal(key.publicJwk.d, undefined);
    const envelope = await signStatement(statementFor(), key);
    assert.equal(envelope.payloadType, DSSE_PAYLOAD_TYPE);
    assert.equal(envelope.signatures.length, 1);
    assert.equal(envelope.signatures[0]?.keyid, key.kid);
    assert.equal(Buffer.from(envelope.signatures.at(0)?.sig ?? '', 'base64').length, 64, 'IEEE-P1363 r||s');
    const jwks = publicJwks([key]);
    assert.deepEqual(jwks.keys[0], { ...key.publicJwk });
    assert.equal(jwks.keys.at(0)?.alg, 'ES256');

    const { statement, keyid } = await verifyEnvelope(envelope, jwks);
    assert.deepEqual(statement, statementFor());
    assert.equal(keyid, key.kid);
    // As JSON text and bytes too, and with URL-safe unpadded base64 (DSSE verifiers accept both).
    await verifyEnvelope(JSON.stringify(envelope), jwks);
    await verifyEnvelope(Buffer.from(JSON.stringify(envelope)), jwks);
    const urlSafe = {
      ...envelope,
      payload: Buffer.from(envelope.payload, 'base64').toString('base64url'),
      signatures: envelope.signatures.map((s) => ({
        ...s,
        sig: Buffer.from(s.sig, 'base64').toString('base64url'),
      })),
    };
    await verifyEnvelope(urlSafe, jwks);
  });

  void test('a loaded key keeps its own kid; the key must be a private P-256 JWK', async () => {
    const { privateJwk } = await generateSigningKey();
    const key = await loadSigningKey({ ...privateJwk, kid: 'agent-1' });
    assert.equal(key.kid, 'agent-1');
    const { keyid } = await verifyEnvelope(await signStatement(statementFor(), key), publicJwks([key]));
    assert.equal(keyid, 'agent-1');
    const { d: _d, ...publicOnly } = privateJwk;
    await assert.rejects(loadSigningKey(publicOnly), /private EC P-256/);
    await assert.rejects(loadSigningKey({ ...privateJwk, crv: 'P-384' }), /P-256/);
    await assert.rejects(loadSigningKey({ ...privateJwk, alg: 'ES384' }), /ES384/);
  });

  void test('a trusted key is found without a keyid, or under another kid', async () => {
    const { key } = await generateSigningKey();
    const envelope = await signStatement(statementFor(), key);
    const noKeyid = { ...envelope, signatures: [{ sig: envelope.signatures[0]?.sig ?? '' }] };
    await verifyEnvelope(noKeyid, publicJwks([key]));
    const renamed = { keys: [{ ...key.publicJwk, kid: 'renamed' }] };
    assert.equal((await verifyEnvelope(envelope, renamed)).keyid, 'renamed');
  });
});

void describe('rejections', () => {
  const setup = async () => {
    const { key } = await generateSigningKey();
    const { key: stranger } = await generateSigningKey();
    const envelope = await signStatement(statementFor(), key);
    return { key, stranger, envelope, trusted: publicJwks([key]) };
  };
  const rejects = async (
    envelope: unknown,
    trusted: Parameters<typeof verifyEnvelope>[1],
    reason: VerdictErrorReason,
    pattern: RegExp,
  ) => {
    await assert.rejects(verifyEnvelope(envelope, trusted), (err: unknown) => {
      assert.ok(err instanceof VerdictError, String(err));
      assert.equal(err.reason, reason, err.message);
      assert.match(err.message, pattern);
      return true;
    });
  };
  /** Signs arbitrary payload bytes and type with `key`, as an attacker holding a trusted key could. */
  const signRaw = async (
    key: Awaited<ReturnType<typeof setup>>['key'],
    payloadType: string,
    payload: Buffer,
  ): Promise<DsseEnvelope> => {
    const { sign } = await import('node:crypto');
    const sig = sign('sha256', pae(payloadType, payload), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
    return {
      payloadType,
      payload: payload.toString('base64'),
      signatures: [{ keyid: key.kid, sig: sig.toString('base64') }],
    };
  };

  void test('a tampered payload', async () => {
    const { envelope, trusted } = await setup();
    const statement = JSON.parse(Buffer.from(envelope.payload, 'base64').toString()) as InTotoStatement;
    statement.predicate.result = 'PASSED';
    statement.subject[0]!.digest.sha256 = 'f'.repeat(64);
    await rejects(
      { ...envelope, payload: b64(JSON.stringify(statement)) },
      trusted,
      'bad-signature',
      /does not verify/,
    );
  });

  void test('a tampered signature, or one of the wrong length', async () => {
    const { envelope, trusted } = await setup();
    const sig = Buffer.from(envelope.signatures[0]!.sig, 'base64');
    sig[10] = (sig[10] ?? 0) ^ 1;
    await rejects(
      { ...envelope, signatures: [{ ...envelope.signatures[0], sig: sig.toString('base64') }] },
      trusted,
      'bad-signature',
      /does not verify/,
    );
    await rejects(
      {
        ...envelope,
        signatures: [{ ...envelope.signatures[0], sig: sig.subarray(0, 40).toString('base64') }],
      },
      trusted,
      'bad-signature',
      /does not verify/,
    );
  });

  void test('a signature by an untrusted key', async () => {
    const { stranger, trusted } = await setup();
    const envelope = await signStatement(statementFor(), stranger);
    await rejects(envelope, trusted, 'untrusted-key', new RegExp(`not trusted \\(keyid ${stranger.kid}\\)`));
    await rejects(envelope, { keys: [] }, 'untrusted-key', /not trusted/);
    // A key under the right kid that is not the signer's: the signature does not verify.
    const impostor = { keys: [{ ...trusted.keys[0]!, kid: stranger.kid }] };
    await rejects(envelope, impostor, 'bad-signature', /does not verify/);
  });

  void test('a wrong payload type, even when properly signed', async () => {
    const { key, envelope, trusted } = await setup();
    await rejects(
      { ...envelope, payloadType: 'application/json' },
      trusted,
      'payload-type',
      /wrong payload type "application\/json"/,
    );
    const signed = await signRaw(key, 'application/json', Buffer.from(envelope.payload, 'base64'));
    await rejects(signed, trusted, 'payload-type', /payload type/);
  });

  void test('a statement whose predicate or statement type is not ours', async () => {
    const { key, trusted } = await setup();
    const other = { ...statementFor(), predicateType: 'https://slsa.dev/provenance/v1' };
    await rejects(
      await signRaw(key, DSSE_PAYLOAD_TYPE, Buffer.from(JSON.stringify(other))),
      trusted,
      'predicate-type',
      /slsa/,
    );
    const oldType = { ...statementFor(), _type: 'https://in-toto.io/Statement/v0.1' };
    await rejects(
      await signRaw(key, DSSE_PAYLOAD_TYPE, Buffer.from(JSON.stringify(oldType))),
      trusted,
      'statement-type',
      /v0\.1/,
    );
    const warned = statementFor();
    (warned.predicate as { result: string }).result = 'WARNED';
    await rejects(
      await signRaw(key, DSSE_PAYLOAD_TYPE, Buffer.from(JSON.stringify(warned))),
      trusted,
      'malformed',
      /WARNED/,
    );
    const noSubject = { ...statementFor(), subject: [] };
    await rejects(
      await signRaw(key, DSSE_PAYLOAD_TYPE, Buffer.from(JSON.stringify(noSubject))),
      trusted,
      'malformed',
      /subject/,
    );
  });

  void test('malformed base64 and JSON', async () => {
    const { key, envelope, trusted } = await setup();
    const cases: [unknown, RegExp][] = [
      ['{not json', /not JSON/],
      [Buffer.from('[]'), /not a JSON object/],
      [null, /not a JSON object/],
      [{ ...envelope, payload: 'a!b$' }, /payload is not base64/],
      [{ ...envelope, payload: 'abcde' }, /payload is not base64/],
      [{ ...envelope, payload: 42 }, /payload is not base64/],
      [{ ...envelope, signatures: [{ sig: 'not base64!' }] }, /signature 0 is not base64/],
      [{ ...envelope, signatures: [] }, /no signatures/],
      [{ ...envelope, signatures: ['x'] }, /signature 0 is not an object/],
      [{ ...envelope, signatures: [{ keyid: 7, sig: envelope.signatures[0]!.sig }] }, /keyid/],
      [{ payload: envelope.payload, signatures: envelope.signatures }, /no payloadType/],
    ];
    for (const [input, pattern] of cases) await rejects(input, trusted, 'malformed', pattern);
    await rejects(
      await signRaw(key, DSSE_PAYLOAD_TYPE, Buffer.from('not json')),
      trusted,
      'malformed',
      /payload is not JSON/,
    );
  });
});

void describe('verdict manifest', () => {
  void test('an OCI artifact: empty config, the envelope layer, the subject and the annotations', () => {
    const bytes = verdictManifest({
      subject: {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest,
        size: 123,
        annotations: { a: 'b' },
      },
      envelopeDescriptor: { mediaType: DSSE_MEDIA_TYPE, digest: `sha256:${'e'.repeat(64)}`, size: 456 },
      result: 'PASSED',
      keyid: 'k1',
      created: new Date('2025-01-02T03:04:05.000Z'),
    });
    assert.deepEqual(JSON.parse(bytes.toString()), {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: VERDICT_ARTIFACT_TYPE,
      config: EMPTY_DESCRIPTOR,
      layers: [{ mediaType: DSSE_MEDIA_TYPE, digest: `sha256:${'e'.repeat(64)}`, size: 456 }],
      subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: 123 },
      annotations: {
        [ANNOTATION_PREDICATE]: PREDICATE_TYPE,
        [ANNOTATION_RESULT]: 'PASSED',
        [ANNOTATION_KEYID]: 'k1',
        [ANNOTATION_CREATED]: '2025-01-02T03:04:05.000Z',
      },
    });
    assert.equal(EMPTY_DESCRIPTOR.digest, `sha256:${createHash('sha256').update('{}').digest('hex')}`);
  });

  void test('newest first; undated last; a tie puts FAILED first', () => {
    const v = (d: string, result: string, created?: string) =>
      describeVerdict({
        mediaType: 'm',
        digest: d,
        size: 1,
        annotations: {
          [ANNOTATION_RESULT]: result,
          ...(created !== undefined && { [ANNOTATION_CREATED]: created }),
        },
      });
    const sorted = sortNewestFirst([
      v('a', 'PASSED', '2025-01-01T00:00:00Z'),
      v('b', 'PASSED'),
      v('c', 'PASSED', '2025-01-02T00:00:00Z'),
      v('d', 'FAILED', '2025-01-02T00:00:00Z'),
      v('e', 'PASSED', 'not a date'),
    ]);
    assert.deepEqual(
      sorted.map((s) => s.digest),
      ['d', 'c', 'a', 'b', 'e'],
    );
  });
});
