import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ACCEPT_ALL,
  EMPTY_JSON,
  MT,
  TagListSchema,
  artifactManifest,
  bodyBytes,
  bodyJson,
  configBlob,
  dockerManifestList,
  expectOciError,
  expectStatus,
  getManifest,
  header,
  locationOf,
  manifestFromBytes,
  manifestFromJson,
  newRegistry,
  ociIndex,
  ociManifest,
  prepareImage,
  pushBlob,
  pushImage,
  pushManifest,
  putManifest,
  randomBlob,
  raw,
  sendBytes,
  sha256,
  withPlatform,
  type Client,
  type Descriptor,
  type Manifest,
} from '../helpers/oci.js';

/** GET and HEAD by `reference` return exactly `m`: bytes, Content-Type, digest and length. */
async function expectManifest(r: Client, name: string, reference: string, m: Manifest): Promise<void> {
  const get = await getManifest(r, name, reference);
  expectStatus(get, 200);
  assert.ok(bodyBytes(get).equals(m.bytes), `GET ${reference}: bytes differ`);
  // The spec says the registry SHOULD NOT add parameters, so the exact stored type is expected.
  assert.equal(header(get, 'content-type'), m.mediaType);
  assert.equal(header(get, 'docker-content-digest'), m.digest);
  assert.equal(header(get, 'content-length'), String(m.bytes.length));

  const head = await raw(r.head(`/v2/${name}/manifests/${reference}`).set('Accept', ACCEPT_ALL));
  expectStatus(head, 200);
  assert.equal(bodyBytes(head).length, 0);
  assert.equal(header(head, 'content-type'), m.mediaType);
  assert.equal(header(head, 'docker-content-digest'), m.digest);
  assert.equal(header(head, 'content-length'), String(m.bytes.length));
}

async function tagsOf(r: Client, name: string): Promise<string[]> {
  const res = await r.get(`/v2/${name}/tags/list`);
  expectStatus(res, 200);
  return bodyJson(res, TagListSchema).tags;
}

async function pushArtifactParts(r: Client, name: string, subject?: Descriptor): Promise<Manifest> {
  await pushBlob(r, name, EMPTY_JSON, MT.ociEmpty);
  const sbom = await pushBlob(r, name, Buffer.from('{"sbom":true}'), 'application/vnd.example.sbom.v1+json');
  return artifactManifest({ artifactType: 'application/vnd.example.sbom.v1', layers: [sbom], subject });
}

/** Each kind of manifest, with its blobs and children already pushed to `repo`. */
const kinds: { kind: string; build: (r: Client) => Promise<Manifest> }[] = [
  { kind: 'OCI image manifest', build: (r) => prepareImage(r, 'repo') },
  {
    kind: 'OCI image index',
    build: async (r) => {
      const amd = await pushImage(r, 'repo');
      const arm = await pushImage(r, 'repo');
      return ociIndex({
        manifests: [withPlatform(amd.descriptor, 'amd64'), withPlatform(arm.descriptor, 'arm64')],
      });
    },
  },
  { kind: 'Docker schema2 manifest', build: (r) => prepareImage(r, 'repo', { docker: true }) },
  {
    kind: 'Docker manifest list',
    build: async (r) => {
      const amd = await pushImage(r, 'repo', undefined, { docker: true });
      const arm = await pushImage(r, 'repo', undefined, { docker: true });
      return dockerManifestList([
        withPlatform(amd.descriptor, 'amd64'),
        withPlatform(arm.descriptor, 'arm64'),
      ]);
    },
  },
  { kind: 'artifact (artifactType, empty config)', build: (r) => pushArtifactParts(r, 'repo') },
  {
    kind: 'OCI image manifest with no layers',
    build: async (r) =>
      ociManifest({ config: await pushBlob(r, 'repo', configBlob(), MT.ociConfig), layers: [] }),
  },
  {
    kind: 'OCI image manifest without a mediaType field (optional in the image-spec)',
    build: async (r) => {
      const config = await pushBlob(r, 'repo', configBlob(), MT.ociConfig);
      const layer = await pushBlob(r, 'repo', randomBlob(), MT.ociLayer);
      return manifestFromJson(MT.ociManifest, { schemaVersion: 2, config, layers: [layer] });
    },
  },
  {
    kind: 'OCI index of an image and an artifact index (nested)',
    build: async (r) => {
      const img = await pushImage(r, 'repo');
      const inner = ociIndex({ manifests: [img.descriptor] });
      await pushManifest(r, 'repo', inner.digest, inner);
      return ociIndex({ manifests: [inner.descriptor] });
    },
  },
];

void describe('manifest PUT then GET/HEAD, by tag and by digest', () => {
  for (const { kind, build } of kinds) {
    void test(kind, async () => {
      const r = await newRegistry();
      const m = await build(r);
      const put = await pushManifest(r, 'repo', 'v1', m);
      assert.equal(header(put, 'docker-content-digest'), m.digest);
      const located = await raw(r.get(locationOf(put)).set('Accept', ACCEPT_ALL));
      expectStatus(located, 200);
      assert.ok(bodyBytes(located).equals(m.bytes), 'Location serves the pushed manifest');
      await expectManifest(r, 'repo', 'v1', m);
      await expectManifest(r, 'repo', m.digest, m);
    });
  }

  void test('PUT by digest → 201 with Location of the digest; no tag is created', async () => {
    const r = await newRegistry();
    const m = await prepareImage(r, 'repo');
    const put = await pushManifest(r, 'repo', m.digest, m);
    assert.equal(locationOf(put), `/v2/repo/manifests/${m.digest}`);
    assert.equal(header(put, 'docker-content-digest'), m.digest);
    await expectManifest(r, 'repo', m.digest, m);
    await pushImage(r, 'repo', 'other');
    assert.deepEqual(await tagsOf(r, 'repo'), ['other']);
  });

  void test('PUT by tag answers Location of the pushed manifest (Distribution: by digest)', async () => {
    const r = await newRegistry();
    const m = await prepareImage(r, 'repo');
    const put = await pushManifest(r, 'repo', 'latest', m);
    assert.match(locationOf(put), new RegExp(`^/v2/repo/manifests/(latest|${m.digest})$`));
  });

  void test('a tag may be moved to another manifest; the old one stays reachable by digest', async () => {
    const r = await newRegistry();
    const first = await pushImage(r, 'repo', 'latest');
    const second = await pushImage(r, 'repo', 'latest');
    await expectManifest(r, 'repo', 'latest', second);
    await expectManifest(r, 'repo', first.digest, first);
  });

  void test('one manifest under several tags', async () => {
    const r = await newRegistry();
    const m = await pushImage(r, 'repo', 'a');
    await pushManifest(r, 'repo', 'b', m);
    await pushManifest(r, 'repo', 'B_2.x-y', m);
    await expectManifest(r, 'repo', 'B_2.x-y', m);
    assert.deepEqual((await tagsOf(r, 'repo')).sort(), ['B_2.x-y', 'a', 'b'].sort());
  });

  void test('a 128-character tag is valid', async () => {
    const r = await newRegistry();
    const tag = `t${'x'.repeat(127)}`;
    const m = await pushImage(r, 'repo', tag);
    await expectManifest(r, 'repo', tag, m);
  });
});

void describe('manifest bytes are stored exactly', () => {
  void test('odd whitespace, key order, escapes and a trailing newline survive; the digest is of those bytes', async () => {
    const r = await newRegistry();
    const config = await pushBlob(r, 'repo', configBlob(), MT.ociConfig);
    const layer = await pushBlob(r, 'repo', randomBlob(), MT.ociLayer);
    const text =
      `{\n\t"layers" :[ ${JSON.stringify(layer)} ],\r\n  "config":${JSON.stringify(config, null, 7)},` +
      `"annotations":{"z":"\\u00e9t\\u00e9","a":"é"},   "mediaType":"${MT.ociManifest}","schemaVersion":2}\n\n`;
    const m = manifestFromBytes(MT.ociManifest, text);
    assert.notEqual(m.digest, sha256(JSON.stringify(JSON.parse(text))));
    const put = await pushManifest(r, 'repo', 'odd', m);
    assert.equal(header(put, 'docker-content-digest'), m.digest);
    await expectManifest(r, 'repo', 'odd', m);
    await expectManifest(r, 'repo', m.digest, m);
  });
});

void describe('manifest Content-Type handling', () => {
  void test('parameters on the PUT Content-Type are ignored, and GET answers the bare type', async () => {
    const r = await newRegistry();
    const m = await prepareImage(r, 'repo');
    expectStatus(await putManifest(r, 'repo', 'v1', m, `${MT.ociManifest}; charset=utf-8`), 201);
    await expectManifest(r, 'repo', 'v1', m);
  });

  void test('without a Content-Type the mediaType field decides (Distribution)', async () => {
    const r = await newRegistry();
    const m = await prepareImage(r, 'repo');
    const res = await sendBytes(r.put('/v2/repo/manifests/v1').unset('Content-Type'), m.bytes);
    expectStatus(res, 201);
    await expectManifest(r, 'repo', 'v1', m);
  });
});

void describe('OCI-Subject', () => {
  void test('a manifest with subject answers OCI-Subject: <subject digest>', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const art = await pushArtifactParts(r, 'repo', image.descriptor);
    const put = await pushManifest(r, 'repo', art.digest, art);
    assert.equal(header(put, 'oci-subject'), image.digest);
  });

  void test('an index with subject answers OCI-Subject too', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const child = await pushImage(r, 'repo');
    const idx = ociIndex({
      manifests: [child.descriptor],
      subject: image.descriptor,
      artifactType: 'application/vnd.example.bundle',
    });
    const put = await pushManifest(r, 'repo', idx.digest, idx);
    assert.equal(header(put, 'oci-subject'), image.digest);
  });

  void test('a subject that does not exist (yet) is accepted (spec MUST)', async () => {
    const r = await newRegistry();
    const missing: Descriptor = { mediaType: MT.ociManifest, digest: sha256('not pushed yet'), size: 14 };
    const art = await pushArtifactParts(r, 'repo', missing);
    const put = await pushManifest(r, 'repo', art.digest, art);
    assert.equal(header(put, 'oci-subject'), missing.digest);
    await expectManifest(r, 'repo', art.digest, art);
  });

  void test('a manifest without subject has no OCI-Subject header', async () => {
    const r = await newRegistry();
    const m = await prepareImage(r, 'repo');
    assert.equal(header(await pushManifest(r, 'repo', 'v1', m), 'oci-subject'), undefined);
  });
});

void describe('manifest PUT rejections (nothing is stored)', () => {
  const absent = (content: string, mediaType: string): Descriptor => ({
    mediaType,
    digest: sha256(content),
    size: content.length,
  });
  const cases: {
    name: string;
    build: (r: Client) => Promise<{ body: Buffer | string; contentType: string }>;
    status: number;
    code: string | string[];
  }[] = [
    {
      name: 'malformed JSON',
      build: () =>
        Promise.resolve({
          body: `{"schemaVersion": 2, "mediaType": "${MT.ociManifest}",`,
          contentType: MT.ociManifest,
        }),
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'JSON that is not an object',
      build: () => Promise.resolve({ body: '[]', contentType: MT.ociManifest }),
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'empty body',
      build: () => Promise.resolve({ body: '', contentType: MT.ociManifest }),
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'Content-Type (index) that disagrees with the mediaType field (manifest)',
      build: async (r) => ({ body: (await prepareImage(r, 'repo')).bytes, contentType: MT.ociIndex }),
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'Content-Type (Docker) that disagrees with the mediaType field (OCI)',
      build: async (r) => ({ body: (await prepareImage(r, 'repo')).bytes, contentType: MT.dockerManifest }),
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'unknown media type',
      build: () =>
        Promise.resolve({
          body: JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.example.thing+json' }),
          contentType: 'application/vnd.example.thing+json',
        }),
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'schemaVersion 1 in an OCI manifest',
      build: async (r) => {
        const config = await pushBlob(r, 'repo', configBlob(), MT.ociConfig);
        return {
          body: JSON.stringify({ schemaVersion: 1, mediaType: MT.ociManifest, config, layers: [] }),
          contentType: MT.ociManifest,
        };
      },
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'OCI manifest without config',
      build: async (r) => {
        const layer = await pushBlob(r, 'repo', randomBlob(), MT.ociLayer);
        return {
          body: JSON.stringify({ schemaVersion: 2, mediaType: MT.ociManifest, layers: [layer] }),
          contentType: MT.ociManifest,
        };
      },
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'layers that are not an array',
      build: async (r) => {
        const config = await pushBlob(r, 'repo', configBlob(), MT.ociConfig);
        return {
          body: JSON.stringify({ schemaVersion: 2, mediaType: MT.ociManifest, config, layers: {} }),
          contentType: MT.ociManifest,
        };
      },
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'index without manifests',
      build: () =>
        Promise.resolve({
          body: JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex }),
          contentType: MT.ociIndex,
        }),
      status: 400,
      code: 'MANIFEST_INVALID',
    },
    {
      name: 'a descriptor with a malformed digest',
      build: async (r) => {
        const config = await pushBlob(r, 'repo', configBlob(), MT.ociConfig);
        const layer = { mediaType: MT.ociLayer, digest: 'sha256:nothex', size: 3 };
        return { body: ociManifest({ config, layers: [layer] }).bytes, contentType: MT.ociManifest };
      },
      status: 400,
      code: ['MANIFEST_INVALID', 'DIGEST_INVALID'],
    },
    {
      name: 'a layer that was never pushed',
      build: async (r) => {
        const config = await pushBlob(r, 'repo', configBlob(), MT.ociConfig);
        return {
          body: ociManifest({ config, layers: [absent('layer', MT.ociLayer)] }).bytes,
          contentType: MT.ociManifest,
        };
      },
      status: 400,
      code: 'MANIFEST_BLOB_UNKNOWN',
    },
    {
      name: 'a config that was never pushed',
      build: async (r) => {
        const layer = await pushBlob(r, 'repo', randomBlob(), MT.ociLayer);
        return {
          body: ociManifest({ config: absent('config', MT.ociConfig), layers: [layer] }).bytes,
          contentType: MT.ociManifest,
        };
      },
      status: 400,
      code: 'MANIFEST_BLOB_UNKNOWN',
    },
    {
      name: 'a Docker manifest whose layer was never pushed',
      build: async (r) => {
        const config = await pushBlob(r, 'repo', configBlob(), MT.dockerConfig);
        return {
          body: JSON.stringify({
            schemaVersion: 2,
            mediaType: MT.dockerManifest,
            config,
            layers: [absent('l', MT.dockerLayer)],
          }),
          contentType: MT.dockerManifest,
        };
      },
      status: 400,
      code: 'MANIFEST_BLOB_UNKNOWN',
    },
    {
      name: 'a layer that exists only in another repository',
      build: async (r) => {
        const config = await pushBlob(r, 'repo', configBlob(), MT.ociConfig);
        const layer = await pushBlob(r, 'elsewhere', randomBlob(), MT.ociLayer);
        return { body: ociManifest({ config, layers: [layer] }).bytes, contentType: MT.ociManifest };
      },
      status: 400,
      code: 'MANIFEST_BLOB_UNKNOWN',
    },
    {
      name: 'an index naming a child manifest that was never pushed',
      build: async (r) => {
        const child = await prepareImage(r, 'repo'); // blobs pushed, manifest not
        return { body: ociIndex({ manifests: [child.descriptor] }).bytes, contentType: MT.ociIndex };
      },
      status: 400,
      code: 'MANIFEST_BLOB_UNKNOWN',
    },
    {
      name: 'a Docker manifest list naming a child that was never pushed',
      build: async (r) => {
        const child = await prepareImage(r, 'repo', { docker: true });
        return {
          body: dockerManifestList([withPlatform(child.descriptor, 'amd64')]).bytes,
          contentType: MT.dockerList,
        };
      },
      status: 400,
      code: 'MANIFEST_BLOB_UNKNOWN',
    },
    {
      name: 'an index naming a child that exists only in another repository',
      build: async (r) => {
        const child = await pushImage(r, 'elsewhere');
        return { body: ociIndex({ manifests: [child.descriptor] }).bytes, contentType: MT.ociIndex };
      },
      status: 400,
      code: 'MANIFEST_BLOB_UNKNOWN',
    },
  ];
  for (const c of cases) {
    void test(`${c.name} → ${c.status} ${String(c.code)}`, async () => {
      const r = await newRegistry();
      const { body, contentType } = await c.build(r);
      const buf = Buffer.from(body);
      const res = await sendBytes(r.put('/v2/repo/manifests/bad').set('Content-Type', contentType), buf);
      expectOciError(res, c.status, c.code);
      expectOciError(await getManifest(r, 'repo', 'bad'), 404, 'MANIFEST_UNKNOWN');
      expectStatus(await r.head(`/v2/repo/manifests/${sha256(buf)}`), 404);
    });
  }

  void test('PUT by a digest that does not match the body → 400 DIGEST_INVALID', async () => {
    const r = await newRegistry();
    const m = await prepareImage(r, 'repo');
    const other = sha256('another manifest');
    expectOciError(await putManifest(r, 'repo', other, m), 400, 'DIGEST_INVALID');
    expectStatus(await r.head(`/v2/repo/manifests/${other}`), 404);
    expectStatus(await r.head(`/v2/repo/manifests/${m.digest}`), 404);
  });
});

void describe('manifest size limit (spec: SHOULD accept at least 4 MiB, 413 above the limit)', () => {
  /** An OCI manifest padded with an annotation to exactly `size` bytes. */
  async function manifestOfSize(r: Client, size: number): Promise<Manifest> {
    const config = await pushBlob(r, 'repo', configBlob(), MT.ociConfig);
    const layer = await pushBlob(r, 'repo', randomBlob(), MT.ociLayer);
    const base = ociManifest({ config, layers: [layer], annotations: { pad: '' } }).bytes.length;
    const m = ociManifest({ config, layers: [layer], annotations: { pad: 'x'.repeat(size - base) } });
    assert.equal(m.bytes.length, size);
    return m;
  }
  const MiB = 1024 * 1024;

  void test('with manifestMaxSize 1 MiB: exactly 1 MiB is accepted, 1 MiB + 1 byte → 413', async () => {
    const r = await newRegistry({ manifestMaxSize: MiB });
    const ok = await manifestOfSize(r, MiB);
    await pushManifest(r, 'repo', 'ok', ok);
    await expectManifest(r, 'repo', 'ok', ok);
    const big = await manifestOfSize(r, MiB + 1);
    // The spec names the status only; SIZE_INVALID (Wharf) or MANIFEST_INVALID (Distribution's code) both fit.
    expectOciError(await putManifest(r, 'repo', 'big', big), 413, ['SIZE_INVALID', 'MANIFEST_INVALID']);
    expectStatus(await r.head(`/v2/repo/manifests/${big.digest}`), 404);
  });

  void test('default limit: a 4 MiB manifest is accepted, 4 MiB + 1 byte → 413', async () => {
    const r = await newRegistry();
    const ok = await manifestOfSize(r, 4 * MiB);
    await pushManifest(r, 'repo', 'ok', ok);
    await expectManifest(r, 'repo', ok.digest, ok);
    const big = await manifestOfSize(r, 4 * MiB + 1);
    expectOciError(await putManifest(r, 'repo', 'big', big), 413, ['SIZE_INVALID', 'MANIFEST_INVALID']);
  });
});

void describe('manifest DELETE', () => {
  void test('by tag → 202; only the tag goes, the manifest and other tags stay', async () => {
    const r = await newRegistry();
    const m = await pushImage(r, 'repo', 'a');
    await pushManifest(r, 'repo', 'b', m);
    expectStatus(await r.delete('/v2/repo/manifests/a'), 202);
    expectOciError(await getManifest(r, 'repo', 'a'), 404, 'MANIFEST_UNKNOWN');
    await expectManifest(r, 'repo', m.digest, m);
    await expectManifest(r, 'repo', 'b', m);
    assert.deepEqual(await tagsOf(r, 'repo'), ['b']);
  });

  void test('by digest → 202; the manifest and every tag pointing at it are gone', async () => {
    const r = await newRegistry();
    const m = await pushImage(r, 'repo', 'a');
    await pushManifest(r, 'repo', 'b', m);
    const keep = await pushImage(r, 'repo', 'keep');
    expectStatus(await r.delete(`/v2/repo/manifests/${m.digest}`), 202);
    expectOciError(await getManifest(r, 'repo', m.digest), 404, 'MANIFEST_UNKNOWN');
    expectStatus(await r.head(`/v2/repo/manifests/${m.digest}`), 404);
    expectOciError(await getManifest(r, 'repo', 'a'), 404, 'MANIFEST_UNKNOWN');
    expectOciError(await getManifest(r, 'repo', 'b'), 404, 'MANIFEST_UNKNOWN');
    assert.deepEqual(await tagsOf(r, 'repo'), ['keep']);
    await expectManifest(r, 'repo', 'keep', keep);
  });

  void test('a deleted manifest can be pushed again', async () => {
    const r = await newRegistry();
    const m = await pushImage(r, 'repo', 'a');
    expectStatus(await r.delete(`/v2/repo/manifests/${m.digest}`), 202);
    await pushManifest(r, 'repo', 'a', m);
    await expectManifest(r, 'repo', 'a', m);
  });

  void test('unknown digest or tag → 404 MANIFEST_UNKNOWN', async () => {
    const r = await newRegistry();
    await pushImage(r, 'repo', 'v1');
    expectOciError(await r.delete(`/v2/repo/manifests/${sha256('nope')}`), 404, 'MANIFEST_UNKNOWN');
    expectOciError(await r.delete('/v2/repo/manifests/nope'), 404, 'MANIFEST_UNKNOWN');
  });

  void test('unknown repository → 404', async () => {
    const r = await newRegistry();
    expectOciError(await r.delete(`/v2/nowhere/manifests/${sha256('nope')}`), 404, [
      'NAME_UNKNOWN',
      'MANIFEST_UNKNOWN',
    ]);
  });

  void test('delete disabled → 405 UNSUPPORTED for tag and digest (spec: 400 or 405; Distribution: 405); nothing changes', async () => {
    const r = await newRegistry({ deleteEnabled: false });
    const m = await pushImage(r, 'repo', 'v1');
    expectOciError(await r.delete('/v2/repo/manifests/v1'), 405, 'UNSUPPORTED');
    expectOciError(await r.delete(`/v2/repo/manifests/${m.digest}`), 405, 'UNSUPPORTED');
    await expectManifest(r, 'repo', 'v1', m);
  });
});

void describe('manifest GET errors', () => {
  void test('unknown tag → 404 MANIFEST_UNKNOWN (HEAD: 404)', async () => {
    const r = await newRegistry();
    await pushImage(r, 'repo', 'v1');
    expectOciError(await getManifest(r, 'repo', 'v2'), 404, 'MANIFEST_UNKNOWN');
    expectStatus(await r.head('/v2/repo/manifests/v2'), 404);
  });

  void test('unknown digest → 404 MANIFEST_UNKNOWN', async () => {
    const r = await newRegistry();
    await pushImage(r, 'repo', 'v1');
    expectOciError(await getManifest(r, 'repo', sha256('nope')), 404, 'MANIFEST_UNKNOWN');
  });

  void test('a blob digest is not a manifest', async () => {
    const r = await newRegistry();
    const { digest } = await pushBlob(r, 'repo', randomBlob());
    expectOciError(await getManifest(r, 'repo', digest), 404, 'MANIFEST_UNKNOWN');
  });

  void test('a manifest of another repository is not visible here', async () => {
    const r = await newRegistry();
    const m = await pushImage(r, 'owner', 'v1');
    await pushImage(r, 'other', 'v1');
    expectOciError(await getManifest(r, 'other', m.digest), 404, 'MANIFEST_UNKNOWN');
  });

  void test('unknown repository → 404 NAME_UNKNOWN or MANIFEST_UNKNOWN', async () => {
    const r = await newRegistry();
    expectOciError(await getManifest(r, 'nowhere', 'latest'), 404, ['NAME_UNKNOWN', 'MANIFEST_UNKNOWN']);
  });
});

void describe('invalid references → 400', () => {
  // A tag is [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}. TAG_INVALID is Distribution's legacy code; the spec
  // lists no code for a bad reference, so MANIFEST_INVALID is accepted too.
  const badTags = ['-lead', '.lead', `t${'x'.repeat(128)}`, 'a%21b', 'a+b'];
  for (const tag of badTags) {
    void test(`tag "${tag.length > 20 ? `${tag.slice(0, 8)}…(${tag.length})` : tag}" on GET, PUT, DELETE, HEAD`, async () => {
      const r = await newRegistry();
      const m = await prepareImage(r, 'repo');
      await pushManifest(r, 'repo', 'v1', m);
      const codes = ['TAG_INVALID', 'MANIFEST_INVALID'];
      expectOciError(await getManifest(r, 'repo', tag), 400, codes);
      expectOciError(await putManifest(r, 'repo', tag, m), 400, codes);
      expectOciError(await r.delete(`/v2/repo/manifests/${tag}`), 400, codes);
      expectStatus(await r.head(`/v2/repo/manifests/${tag}`), 400);
    });
  }

  // A reference with ':' can only be a digest; a malformed one is DIGEST_INVALID.
  const badDigests = [
    'sha256:xyz',
    `sha256:${'A'.repeat(64)}`,
    `sha256:${'a'.repeat(63)}`,
    `md5:${'a'.repeat(32)}`,
  ];
  for (const digest of badDigests) {
    void test(`digest "${digest.slice(0, 16)}…" on GET, PUT, DELETE → DIGEST_INVALID`, async () => {
      const r = await newRegistry();
      const m = await pushImage(r, 'repo', 'v1');
      expectOciError(await getManifest(r, 'repo', digest), 400, 'DIGEST_INVALID');
      expectOciError(await putManifest(r, 'repo', digest, m), 400, 'DIGEST_INVALID');
      expectOciError(await r.delete(`/v2/repo/manifests/${digest}`), 400, 'DIGEST_INVALID');
    });
  }
});

void describe('repository names that contain API words route correctly', () => {
  for (const name of [
    'x/manifests',
    'x/blobs',
    'x/blobs/uploads',
    'x/tags',
    'x/tags/list',
    'x/referrers',
    'v2',
    'manifests/latest',
  ]) {
    void test(name, async () => {
      const r = await newRegistry();
      const m = await pushImage(r, name, 'latest');
      await expectManifest(r, name, 'latest', m);
      assert.deepEqual(await tagsOf(r, name), ['latest']);
      expectOciError(await getManifest(r, 'x', 'latest'), 404, ['NAME_UNKNOWN', 'MANIFEST_UNKNOWN']);
    });
  }
});
