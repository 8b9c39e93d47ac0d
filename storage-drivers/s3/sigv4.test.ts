import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodeKeyPath, SigV4Signer } from './sigv4.js';

// The "GET Object" example of AWS's S3 documentation (Authenticating Requests: Using the Authorization
// Header, Signature Version 4): its inputs and the signature it publishes.
const EXAMPLE = {
  credentials: {
    accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
    secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  },
  date: new Date('2013-05-24T00:00:00Z'),
  signature: 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
};

void describe('SigV4Signer', () => {
  void test("signs AWS's documented GET Object example to its published signature", () => {
    const signer = new SigV4Signer('us-east-1');
    const headers = signer.sign(
      {
        method: 'GET',
        host: 'examplebucket.s3.amazonaws.com',
        path: '/test.txt',
        headers: { range: 'bytes=0-9' },
      },
      EXAMPLE.credentials,
      EXAMPLE.date,
    );
    assert.equal(
      headers.authorization,
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, ' +
        `SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=${EXAMPLE.signature}`,
    );
    assert.equal(headers['x-amz-date'], '20130524T000000Z');
    assert.equal(headers.range, 'bytes=0-9');
  });

  void test('a cached signing key is not reused for another day or another secret', () => {
    const signer = new SigV4Signer('us-east-1');
    const request = { method: 'GET', host: 'examplebucket.s3.amazonaws.com', path: '/test.txt' } as const;
    const day1 = signer.sign(request, EXAMPLE.credentials, EXAMPLE.date).authorization;
    const day2 = signer.sign(request, EXAMPLE.credentials, new Date('2013-05-25T00:00:00Z')).authorization;
    const again = signer.sign(request, EXAMPLE.credentials, EXAMPLE.date).authorization;
    const rotated = signer.sign(
      request,
      { ...EXAMPLE.credentials, secretAccessKey: 'another' },
      EXAMPLE.date,
    ).authorization;
    assert.equal(again, day1);
    assert.notEqual(day2, day1);
    assert.notEqual(rotated, day1);
  });

  void test('a session token is sent and signed', () => {
    const signer = new SigV4Signer('eu-west-1');
    const headers = signer.sign(
      { method: 'HEAD', host: 'h', path: '/k' },
      { ...EXAMPLE.credentials, sessionToken: 'token' },
      EXAMPLE.date,
    );
    assert.equal(headers['x-amz-security-token'], 'token');
    assert.match(
      headers.authorization ?? '',
      /SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,/,
    );
  });
});

void describe('encodeKeyPath', () => {
  void test('encodes each segment as RFC 3986 requires, keeping the slashes', () => {
    assert.equal(encodeKeyPath('a/b c/d'), 'a/b%20c/d');
    assert.equal(encodeKeyPath("x!y'(z)*"), 'x%21y%27%28z%29%2A');
    assert.equal(encodeKeyPath('sha256:ab/data'), 'sha256%3Aab/data');
    assert.equal(encodeKeyPath('a-b_c.d~e'), 'a-b_c.d~e');
  });
});
