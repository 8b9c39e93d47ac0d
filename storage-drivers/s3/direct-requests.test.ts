import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { S3Client } from '@aws-sdk/client-s3';
import { DirectRequests, errorOf } from './direct-requests.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

void describe('DirectRequests (against a local stand-in for S3)', () => {
  const seen: IncomingMessage[] = [];
  let handle: Handler = (_req, res) => res.end();
  const server = createServer((req, res) => {
    seen.push(req);
    handle(req, res);
  });
  let endpoint = '';
  const timeouts = { connectMs: 1000, requestMs: 300, idleMs: 300 };
  const clientFor = (): S3Client =>
    new S3Client({
      region: 'eu-west-1',
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
    });

  before(async () => {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  void test('GETs and HEADs the object at the URL the SDK would use, signed', async () => {
    handle = (req, res) => res.end(req.method === 'HEAD' ? undefined : 'sha256:abc');
    seen.length = 0;
    const direct = new DirectRequests(clientFor(), 'bucket', timeouts);
    try {
      const got = await direct.send('GET', 'root/a:b/link');
      assert.equal(got.status, 200);
      assert.equal(got.body.toString(), 'sha256:abc');
      const head = await direct.send('HEAD', 'root/a:b/link');
      assert.equal(head.status, 200);
      assert.equal(head.body.length, 0);
      assert.deepEqual(
        seen.map((r) => `${r.method ?? ''} ${r.url ?? ''}`),
        ['GET /bucket/root/a%3Ab/link', 'HEAD /bucket/root/a%3Ab/link'],
      );
      assert.match(
        seen[0]?.headers.authorization ?? '',
        /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-west-1\/s3\/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=[0-9a-f]{64}$/,
      );
    } finally {
      direct.close();
    }
  });

  void test('an error answer keeps its S3 code for the driver to classify', async () => {
    handle = (_req, res) => {
      res.writeHead(404, { 'content-type': 'application/xml' });
      res.end('<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>');
    };
    const direct = new DirectRequests(clientFor(), 'bucket', timeouts);
    try {
      const answer = await direct.send('GET', 'k');
      assert.equal(answer.status, 404);
      const err = errorOf(answer);
      assert.equal(err.code, 'NoSuchKey');
      assert.equal(err.message, 'gone');
    } finally {
      direct.close();
    }
  });

  void test('a refusal from a server whose clock is an hour ahead is signed again at its time', async () => {
    const ahead = Date.now() + 3600_000;
    let n = 0;
    handle = (_req, res) => {
      if (++n === 1) {
        res.writeHead(403, { date: new Date(ahead).toUTCString(), 'content-type': 'application/xml' });
        res.end('<Error><Code>RequestTimeTooSkewed</Code></Error>');
      } else {
        res.end('ok');
      }
    };
    seen.length = 0;
    const client = clientFor();
    const direct = new DirectRequests(client, 'bucket', timeouts);
    try {
      assert.equal((await direct.send('GET', 'k')).status, 200);
      const dates = seen.map((r) => String(r.headers['x-amz-date']));
      assert.equal(dates.length, 2);
      const parse = (d: string): number =>
        Date.parse(
          `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}T${d.slice(9, 11)}:${d.slice(11, 13)}:${d.slice(13, 15)}Z`,
        );
      assert.ok(Math.abs(parse(dates[1]!) - ahead) < 5000, `resigned at ${dates[1]}`);
      assert.ok(Math.abs(client.config.systemClockOffset - 3600_000) < 5000, 'the SDK shares the correction');
    } finally {
      direct.close();
    }
  });

  void test('a server that never answers times out with the SDK-style message', async () => {
    handle = () => undefined;
    const direct = new DirectRequests(clientFor(), 'bucket', timeouts);
    try {
      await assert.rejects(direct.send('GET', 'k'), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ETIMEDOUT');
        assert.match(err.message, /exceeded the configured 300 ms requestTimeout/);
        return true;
      });
    } finally {
      direct.close();
    }
  });

  void test('an answer cut short fails instead of resolving with part of the body', async () => {
    handle = (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('x'.repeat(10));
      setTimeout(() => res.socket?.destroy(), 20);
    };
    const direct = new DirectRequests(clientFor(), 'bucket', timeouts);
    try {
      await assert.rejects(direct.send('GET', 'k'), (err: Error & { code?: string }) => {
        assert.notEqual(err.code, 'ETIMEDOUT', err.message);
        return true;
      });
    } finally {
      direct.close();
    }
  });
});
