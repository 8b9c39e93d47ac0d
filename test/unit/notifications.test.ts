// Webhook pieces that need no network: the event envelope, signing, filtering, the retry schedule,
// endpoint defaults, the config section and where the queue lives in storage.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../../config/load.js';
import { retryDelay, signBody, redactURL } from '../../src/notifications/delivery.js';
import {
  encodeEnvelope,
  manifestReferences,
  newEvent,
  targetRecord,
  type Event,
} from '../../src/notifications/event.js';
import { endpointSettings, isIgnored, type EndpointConfig } from '../../src/notifications/notifications.js';
import { isValidPath } from '../../storage-drivers/index.js';
import { pathComponent, pathFor } from '../../src/registry/paths.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;
const context = {
  request: { id: 'req-1', addr: '127.0.0.1:5555', host: 'reg:5000', method: 'PUT', useragent: 'docker/27' },
  actor: { name: 'alice' },
  source: { addr: 'node1:5000', instanceID: 'inst-1' },
};

function endpointConfig(raw: Record<string, unknown> = {}): EndpointConfig {
  const { config } = parseConfig({
    notifications: { endpoints: [{ name: 'e', url: 'http://127.0.0.1:1/', ...raw }] },
  });
  const endpoint = config.notifications?.endpoints[0];
  assert.ok(endpoint);
  return endpoint;
}

describe('event envelope', () => {
  test('an event has Distribution fields, in its order, with empty optional fields left out', () => {
    const event = newEvent(
      'push',
      targetRecord({
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: DIGEST,
        size: 528,
        repository: 'team/app',
        url: `http://reg:5000/v2/team/app/manifests/${DIGEST}`,
        tag: 'latest',
      }),
      context,
      new Date('2024-05-06T07:08:09.010Z'),
    );
    assert.match(event.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual(Object.keys(event), [
      'id',
      'timestamp',
      'action',
      'target',
      'request',
      'actor',
      'source',
    ]);
    assert.equal(event.timestamp, '2024-05-06T07:08:09.010Z');
    assert.deepEqual(Object.keys(event.target), [
      'mediaType',
      'digest',
      'size',
      'length',
      'repository',
      'url',
      'tag',
    ]);
    assert.equal(event.target.length, 528);
    const body = JSON.parse(encodeEnvelope([event]).toString('utf8')) as { events: Event[] };
    assert.deepEqual(body, { events: [JSON.parse(JSON.stringify(event))] });
  });

  test('a delete by tag keeps the descriptor fields, empty, as Go marshals them', () => {
    const target = targetRecord({ repository: 'team/app', tag: 'old' });
    assert.deepEqual(target, { mediaType: '', digest: '', size: 0, repository: 'team/app', tag: 'old' });
  });

  test('a mount names the repository it came from', () => {
    const target = targetRecord({ digest: DIGEST, size: 3, repository: 'b', fromRepository: 'a' });
    assert.equal(target.fromRepository, 'a');
  });

  test('two events never share an id', () => {
    const target = targetRecord({ digest: DIGEST });
    assert.notEqual(newEvent('pull', target, context).id, newEvent('pull', target, context).id);
  });
});

describe('manifestReferences', () => {
  const config = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: DIGEST, size: 10 };
  const layer = {
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    digest: `sha256:${'b'.repeat(64)}`,
    size: 20,
    annotations: { a: 'b' },
    unknownField: 1,
  };
  const cases: { name: string; doc: unknown; want: unknown[] }[] = [
    {
      name: 'image: config then layers',
      doc: { schemaVersion: 2, config, layers: [layer] },
      want: [config, { ...layer, unknownField: undefined }].map(
        (d) => JSON.parse(JSON.stringify(d)) as unknown,
      ),
    },
    {
      name: 'index: its children, with platforms',
      doc: {
        schemaVersion: 2,
        manifests: [{ ...config, platform: { architecture: 'amd64', os: 'linux' } }],
      },
      want: [{ ...config, platform: { architecture: 'amd64', os: 'linux' } }],
    },
    { name: 'not a manifest', doc: 'nope', want: [] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(manifestReferences(Buffer.from(JSON.stringify(c.doc))), c.want);
    });
  }
  test('bytes that are not JSON', () => {
    assert.deepEqual(manifestReferences(Buffer.from('{')), []);
  });
});

describe('signBody', () => {
  test('is HMAC-SHA256 of the exact bytes, as sha256=<hex>', () => {
    // RFC 4231-style known answer (the classic "quick brown fox" vector).
    const body = Buffer.from('The quick brown fox jumps over the lazy dog');
    assert.equal(
      signBody('key', body),
      'sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8',
    );
  });

  test('any change to the body changes the signature', () => {
    const body = encodeEnvelope([newEvent('push', targetRecord({ digest: DIGEST }), context)]);
    const changed = Buffer.from(body.toString('utf8').replace('push', 'pull'));
    assert.notEqual(signBody('s', body), signBody('s', changed));
    const expected = createHmac('sha256', 's').update(body).digest('hex');
    assert.equal(signBody('s', body), `sha256=${expected}`);
  });
});

describe('isIgnored', () => {
  const blobPush = {
    action: 'push' as const,
    target: targetRecord({ mediaType: 'application/octet-stream' }),
  };
  const manifestPull = {
    action: 'pull' as const,
    target: targetRecord({ mediaType: 'application/vnd.oci.image.manifest.v1+json' }),
  };
  const deletion = { action: 'delete' as const, target: targetRecord({ digest: DIGEST }) };
  const cases: {
    name: string;
    raw: Record<string, unknown>;
    event: Pick<Event, 'action' | 'target'>;
    want: boolean;
  }[] = [
    { name: 'nothing ignored', raw: {}, event: blobPush, want: false },
    {
      name: 'ignoredmediatypes',
      raw: { ignoredmediatypes: ['application/octet-stream'] },
      event: blobPush,
      want: true,
    },
    {
      name: 'ignore.mediatypes',
      raw: { ignore: { mediatypes: ['application/octet-stream'] } },
      event: blobPush,
      want: true,
    },
    { name: 'ignore.actions', raw: { ignore: { actions: ['pull'] } }, event: manifestPull, want: true },
    { name: 'another action', raw: { ignore: { actions: ['pull'] } }, event: blobPush, want: false },
    {
      name: 'a delete has no media type to match',
      raw: { ignoredmediatypes: ['application/octet-stream'] },
      event: deletion,
      want: false,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.equal(isIgnored(endpointConfig(c.raw), c.event), c.want);
    });
  }
});

describe('retryDelay', () => {
  const schedule = { threshold: 3, backoffMs: 1000, maxBackoffMs: 10_000 };
  test('waits backoff below the threshold, then doubles up to maxbackoff', () => {
    const waits = [1, 2, 3, 4, 5, 6, 7, 100].map((n) => retryDelay(n, schedule));
    assert.deepEqual(waits, [1000, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
  });
  test('threshold 1 doubles from the first failure', () => {
    assert.deepEqual(
      [1, 2, 3].map((n) => retryDelay(n, { ...schedule, threshold: 1 })),
      [2000, 4000, 8000],
    );
  });
  test('no failure, no wait; a huge count stays finite', () => {
    assert.equal(retryDelay(0, schedule), 0);
    assert.equal(retryDelay(1e6, { ...schedule, maxBackoffMs: 300_000 }), 300_000);
  });
  test('maxbackoff below backoff does not shorten backoff', () => {
    assert.equal(retryDelay(1, { threshold: 10, backoffMs: 5000, maxBackoffMs: 1000 }), 5000);
  });
});

describe('config', () => {
  test('defaults are Distribution’s, plus maxbackoff 5m', () => {
    const s = endpointSettings(endpointConfig());
    assert.deepEqual(s, {
      name: 'e',
      url: 'http://127.0.0.1:1/',
      headers: {},
      timeoutMs: 1000,
      threshold: 10,
      backoffMs: 1000,
      maxBackoffMs: 300_000,
    });
  });

  test('zero timeout, threshold and backoff mean the defaults, as in Distribution', () => {
    const s = endpointSettings(endpointConfig({ timeout: '0s', threshold: 0, backoff: '0' }));
    assert.equal(s.timeoutMs, 1000);
    assert.equal(s.threshold, 10);
    assert.equal(s.backoffMs, 1000);
  });

  test('a Distribution section loads, durations parsed', () => {
    const { config, warnings } = parseConfig({
      notifications: {
        events: { includereferences: true },
        endpoints: [
          {
            name: 'alistener',
            disabled: false,
            url: 'https://my.listener.example.com/event',
            headers: { Authorization: ['Bearer <your token>'] },
            timeout: '500ms',
            threshold: 5,
            backoff: '2s',
            ignoredmediatypes: ['application/octet-stream'],
            ignore: { mediatypes: ['x/y'], actions: ['pull'] },
          },
        ],
      },
    });
    assert.deepEqual(warnings, []);
    const e = config.notifications?.endpoints[0];
    assert.ok(e);
    assert.equal(config.notifications?.events.includereferences, true);
    assert.equal(e.timeout, 500);
    assert.equal(e.backoff, 2000);
    assert.deepEqual(e.ignore.actions, ['pull']);
  });

  const bad: { name: string; endpoints: unknown[]; problem: RegExp }[] = [
    { name: 'url not http', endpoints: [{ name: 'a', url: 'ftp://x/' }], problem: /endpoints\.0\.url/ },
    { name: 'no url', endpoints: [{ name: 'a' }], problem: /endpoints\.0\.url: required/ },
    {
      name: 'duplicate names',
      endpoints: [
        { name: 'a', url: 'http://x/' },
        { name: 'a', url: 'http://y/' },
      ],
      problem: /names must be unique/,
    },
    {
      name: 'unknown action',
      endpoints: [{ name: 'a', url: 'http://x/', ignore: { actions: ['tag'] } }],
      problem: /ignore\.actions/,
    },
    {
      name: 'unknown key',
      endpoints: [{ name: 'a', url: 'http://x/', retries: 3 }],
      problem: /retries: unknown key/,
    },
  ];
  for (const c of bad) {
    test(`refused: ${c.name}`, () => {
      assert.throws(
        () => parseConfig({ notifications: { endpoints: c.endpoints } }),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.match(err.message, c.problem);
          return true;
        },
      );
    });
  }

  test('the secret and header values are masked when the config is printed', async () => {
    const { renderConfig } = await import('../../config/load.js');
    const { config } = parseConfig({
      notifications: {
        endpoints: [
          { name: 'a', url: 'http://x/', secret: 'hunter2', headers: { Authorization: ['Bearer tok'] } },
        ],
      },
    });
    const text = renderConfig(config);
    assert.ok(!text.includes('hunter2') && !text.includes('Bearer tok'), text);
  });

  test('endpoints can come from the environment', () => {
    const { config } = parseConfig(
      {},
      {
        env: {
          WHARF_NOTIFICATIONS_ENDPOINTS: '[{name: agent, url: "http://127.0.0.1:9/events", secret: s}]',
        },
      },
    );
    assert.equal(config.notifications?.endpoints[0]?.secret, 's');
  });
});

describe('storage layout', () => {
  test('queue and lease live under /wharf/notifications/<endpoint>', () => {
    assert.equal(
      pathFor({ kind: 'notificationQueueDir', endpoint: 'agent' }),
      '/wharf/notifications/agent/queue',
    );
    assert.equal(
      pathFor({ kind: 'notificationQueueEntry', endpoint: 'agent', entry: 'x.1.json' }),
      '/wharf/notifications/agent/queue/x.1.json',
    );
    assert.equal(
      pathFor({ kind: 'notificationLease', endpoint: 'agent' }),
      '/wharf/notifications/agent/lease',
    );
  });

  const names: { name: string; want: string }[] = [
    { name: 'agent-1.prod', want: 'agent-1.prod' },
    { name: 'my listener', want: 'my_20listener' },
    { name: 'a_b', want: 'a_5fb' },
    { name: '..', want: '_2e.' },
    { name: 'é/x', want: '_c3_a9_2fx' },
  ];
  for (const c of names) {
    test(`endpoint name ${JSON.stringify(c.name)} is one valid path component`, () => {
      assert.equal(pathComponent(c.name), c.want);
      assert.ok(isValidPath(pathFor({ kind: 'notificationLease', endpoint: c.name })));
    });
  }
});

describe('redactURL', () => {
  test('leaves out credentials and the query', () => {
    assert.equal(redactURL('https://u:p@h.example:8443/hook?token=t'), 'https://h.example:8443/hook');
  });
});
