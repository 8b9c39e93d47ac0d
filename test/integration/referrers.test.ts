import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import supertest from 'supertest';
import { createTestApp } from '../helpers/app.js';
import {
  EMPTY_JSON,
  IndexSchema,
  MT,
  artifactManifest,
  bodyJson,
  expectOciError,
  expectStatus,
  header,
  hexOf,
  newRegistry,
  nextLink,
  ociIndex,
  ociManifest,
  pushArtifact,
  pushBlob,
  pushImage,
  pushManifest,
  sha256,
  type Client,
  type Descriptor,
  type Manifest,
} from '../helpers/oci.js';

const SBOM = 'application/vnd.example.sbom.v1';
const SIG = 'application/vnd.example.signature.v1';

type Index = ReturnType<typeof IndexSchema.parse>;

async function referrers(
  r: Client,
  name: string,
  subject: string,
  query = '',
): Promise<{ index: Index; filters?: string; next?: string }> {
  const res = await r.get(`/v2/${name}/referrers/${subject}${query}`);
  expectStatus(res, 200);
  // Spec: Content-Type MUST be the index media type.
  assert.equal(header(res, 'content-type'), MT.ociIndex);
  return {
    index: bodyJson(res, IndexSchema),
    filters: header(res, 'oci-filters-applied'),
    next: nextLink(res),
  };
}

/** Follows Link until the end; returns every descriptor and the size of each page. */
async function allReferrers(
  r: Client,
  name: string,
  subject: string,
  query = '',
): Promise<{ digests: string[]; pages: number[] }> {
  const digests: string[] = [];
  const pages: number[] = [];
  let path: string | undefined = `/v2/${name}/referrers/${subject}${query}`;
  while (path !== undefined) {
    const res = await r.get(path);
    expectStatus(res, 200);
    const page = bodyJson(res, IndexSchema).manifests;
    pages.push(page.length);
    digests.push(...page.map((d) => d.digest));
    path = nextLink(res);
    assert.ok(pages.length < 100, 'paging does not end');
  }
  return { digests, pages };
}

function descriptorIn(index: Index, digest: string): Index['manifests'][number] {
  const d = index.manifests.find((m) => m.digest === digest);
  assert.ok(d, `${digest} not among referrers: ${JSON.stringify(index.manifests.map((m) => m.digest))}`);
  return d;
}

void describe('GET /v2/<name>/referrers/<digest>', () => {
  void test('no referrers → 200 and an empty image index', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const res = await r.get(`/v2/repo/referrers/${image.digest}`);
    expectStatus(res, 200);
    assert.equal(header(res, 'content-type'), MT.ociIndex);
    assert.deepEqual(JSON.parse(res.text), { schemaVersion: 2, mediaType: MT.ociIndex, manifests: [] });
  });

  void test('never 404: an unknown subject or repository gives the empty index', async () => {
    const r = await newRegistry();
    await pushImage(r, 'repo', 'v1');
    assert.deepEqual((await referrers(r, 'repo', sha256('unknown'))).index.manifests, []);
    assert.deepEqual((await referrers(r, 'nowhere', sha256('unknown'))).index.manifests, []);
  });

  for (const digest of ['sha256:xyz', `md5:${'a'.repeat(32)}`, `sha256:${'a'.repeat(63)}`, 'latest']) {
    void test(`a malformed digest (${digest.slice(0, 12)}…) → 400 DIGEST_INVALID`, async () => {
      const r = await newRegistry();
      expectOciError(await r.get(`/v2/repo/referrers/${digest}`), 400, 'DIGEST_INVALID');
    });
  }

  void test('descriptors: mediaType, digest, size, artifactType (or config.mediaType fallback), annotations', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const unrelated = await pushImage(r, 'repo', 'v2');

    const sbom = await pushArtifact(r, 'repo', {
      subject: image.descriptor,
      artifactType: SBOM,
      annotations: { 'org.example.format': 'json' },
    });
    // No artifactType: the registry MUST use config.mediaType.
    const config = await pushBlob(
      r,
      'repo',
      Buffer.from('{"signed":true}'),
      'application/vnd.example.config.v1+json',
    );
    const plain = ociManifest({
      config,
      layers: [],
      subject: image.descriptor,
      annotations: { a: '1', b: '2' },
    });
    await pushManifest(r, 'repo', plain.digest, plain);
    // An index with artifactType keeps it; one without has none (spec MUST omit).
    const typedIndex = ociIndex({
      manifests: [unrelated.descriptor],
      subject: image.descriptor,
      artifactType: 'application/vnd.example.bundle',
    });
    await pushManifest(r, 'repo', typedIndex.digest, typedIndex);
    const bareIndex = ociIndex({
      manifests: [unrelated.descriptor],
      subject: image.descriptor,
      annotations: { k: 'v' },
    });
    await pushManifest(r, 'repo', bareIndex.digest, bareIndex);

    const { index } = await referrers(r, 'repo', image.digest);
    assert.equal(index.manifests.length, 4);
    const expect = (
      m: Manifest,
      artifactType: string | undefined,
      annotations: Record<string, string> | undefined,
    ): void => {
      const d = descriptorIn(index, m.digest);
      assert.equal(d.mediaType, m.mediaType);
      assert.equal(d.size, m.bytes.length);
      assert.equal(d.artifactType, artifactType);
      assert.deepEqual(d.annotations, annotations);
    };
    expect(sbom, SBOM, { 'org.example.format': 'json' });
    expect(plain, 'application/vnd.example.config.v1+json', { a: '1', b: '2' });
    expect(typedIndex, 'application/vnd.example.bundle', undefined);
    expect(bareIndex, undefined, { k: 'v' });
    const raw = (await r.get(`/v2/repo/referrers/${image.digest}`)).text;
    const bare = (JSON.parse(raw) as { manifests: Record<string, unknown>[] }).manifests.find(
      (m) => m.digest === bareIndex.digest,
    );
    assert.ok(bare && !('artifactType' in bare), 'artifactType omitted for an index without one');
  });

  void test('a referrer pushed before its subject is listed (spec: the subject need not exist)', async () => {
    const r = await newRegistry();
    const subject: Descriptor = { mediaType: MT.ociManifest, digest: sha256('later'), size: 5 };
    const art = await pushArtifact(r, 'repo', { subject });
    assert.deepEqual(
      (await referrers(r, 'repo', subject.digest)).index.manifests.map((d) => d.digest),
      [art.digest],
    );
  });

  void test('only referrers in the same repository are listed', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    await pushArtifact(r, 'other', { subject: image.descriptor });
    assert.deepEqual((await referrers(r, 'repo', image.digest)).index.manifests, []);
    assert.equal((await referrers(r, 'other', image.digest)).index.manifests.length, 1);
  });

  void test('a referrer pushed by tag stays listed when the tag is deleted (the manifest still exists)', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const art = await pushArtifact(r, 'repo', { subject: image.descriptor, reference: 'sbom' });
    expectStatus(await r.delete('/v2/repo/manifests/sbom'), 202);
    assert.deepEqual(
      (await referrers(r, 'repo', image.digest)).index.manifests.map((d) => d.digest),
      [art.digest],
    );
  });

  void test('deleting a referrer manifest removes it from the list', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const keep = await pushArtifact(r, 'repo', { subject: image.descriptor, artifactType: SBOM });
    const gone = await pushArtifact(r, 'repo', { subject: image.descriptor, artifactType: SIG });
    expectStatus(await r.delete(`/v2/repo/manifests/${gone.digest}`), 202);
    assert.deepEqual(
      (await referrers(r, 'repo', image.digest)).index.manifests.map((d) => d.digest),
      [keep.digest],
    );
  });
});

void describe('referrers ?artifactType= filter', () => {
  void test('only matching descriptors, with OCI-Filters-Applied: artifactType', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const sboms = [
      await pushArtifact(r, 'repo', {
        subject: image.descriptor,
        artifactType: SBOM,
        annotations: { n: '1' },
      }),
      await pushArtifact(r, 'repo', {
        subject: image.descriptor,
        artifactType: SBOM,
        annotations: { n: '2' },
      }),
    ];
    await pushArtifact(r, 'repo', { subject: image.descriptor, artifactType: SIG });
    const { index, filters } = await referrers(
      r,
      'repo',
      image.digest,
      `?artifactType=${encodeURIComponent(SBOM)}`,
    );
    assert.equal(filters, 'artifactType');
    assert.deepEqual(index.manifests.map((d) => d.digest).sort(), sboms.map((m) => m.digest).sort());
    assert.ok(index.manifests.every((d) => d.artifactType === SBOM));
  });

  void test('the filter also matches the config.mediaType fallback', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const config = await pushBlob(r, 'repo', Buffer.from('{}x'), 'application/vnd.example.config.v1+json');
    const m = ociManifest({ config, layers: [], subject: image.descriptor });
    await pushManifest(r, 'repo', m.digest, m);
    const { index } = await referrers(
      r,
      'repo',
      image.digest,
      '?artifactType=application/vnd.example.config.v1%2Bjson',
    );
    assert.deepEqual(
      index.manifests.map((d) => d.digest),
      [m.digest],
    );
  });

  void test('no match → empty index, still with OCI-Filters-Applied', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    await pushArtifact(r, 'repo', { subject: image.descriptor, artifactType: SBOM });
    const { index, filters } = await referrers(
      r,
      'repo',
      image.digest,
      '?artifactType=application/vnd.example.none',
    );
    assert.equal(filters, 'artifactType');
    assert.deepEqual(index.manifests, []);
  });

  void test('no filter requested → no OCI-Filters-Applied header', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    await pushArtifact(r, 'repo', { subject: image.descriptor });
    assert.equal((await referrers(r, 'repo', image.digest)).filters, undefined);
  });
});

void describe('referrers paging', () => {
  /** Pushes `count` distinct artifacts referring to one image, alternating SBOM and SIG types. */
  async function manyReferrers(count: number): Promise<{ r: Client; subject: string; digests: string[] }> {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    await pushBlob(r, 'repo', EMPTY_JSON, MT.ociEmpty);
    const digests: string[] = [];
    for (let i = 0; i < count; i++) {
      const m = artifactManifest({
        subject: image.descriptor,
        artifactType: i % 2 ? SIG : SBOM,
        annotations: { i: String(i) },
      });
      await pushManifest(r, 'repo', m.digest, m);
      digests.push(m.digest);
    }
    return { r, subject: image.digest, digests };
  }

  void test('more referrers than fit a page (Wharf: 100) → Link pages; together they list each exactly once', async () => {
    const { r, subject, digests } = await manyReferrers(130);
    const first = await referrers(r, 'repo', subject);
    assert.ok(first.next, 'a Link header on the first page (spec MUST when the list does not fit)');
    assert.ok(first.index.manifests.length <= 100);
    const all = await allReferrers(r, 'repo', subject);
    assert.deepEqual([...all.digests].sort(), [...digests].sort());
    assert.ok(all.pages.length >= 2);
  });

  void test('?n= sets the page size and Link keeps it', async () => {
    const { r, subject, digests } = await manyReferrers(25);
    const all = await allReferrers(r, 'repo', subject, '?n=10');
    assert.deepEqual(all.pages, [10, 10, 5]);
    assert.deepEqual([...all.digests].sort(), [...digests].sort());
  });

  void test('Link keeps the artifactType filter', async () => {
    const { r, subject } = await manyReferrers(30);
    const all = await allReferrers(r, 'repo', subject, `?artifactType=${encodeURIComponent(SBOM)}&n=4`);
    assert.equal(all.digests.length, 15);
    assert.ok(all.pages.every((n) => n <= 4));
    assert.equal(new Set(all.digests).size, 15);
  });
});

void describe('referrers tag schema fallback (sha256-<hex> index tags)', () => {
  void test('an index tagged sha256-<subject hex> is merged without duplicates; the index itself is not a referrer', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const art = await pushArtifact(r, 'repo', {
      subject: image.descriptor,
      artifactType: SBOM,
      annotations: { x: 'y' },
    });
    const fallback = ociIndex({
      manifests: [{ ...art.descriptor, artifactType: SBOM, annotations: { x: 'y' } }],
    });
    await pushManifest(r, 'repo', `sha256-${hexOf(image.digest)}`, fallback);
    const { index } = await referrers(r, 'repo', image.digest);
    assert.deepEqual(
      index.manifests.map((d) => d.digest),
      [art.digest],
    );
    const d = descriptorIn(index, art.digest);
    assert.equal(d.artifactType, SBOM);
    assert.deepEqual(d.annotations, { x: 'y' });
  });

  void test('referrers written by a registry without the API (a Distribution tree) are listed', async () => {
    // A client pushed R (subject A) and the sha256-<A> index to Distribution 2.8, which records no
    // referrers; Wharf then serves that tree. Written here straight into storage in Distribution's layout.
    const t = await createTestApp({ deleteEnabled: true });
    const r = supertest(t.app.callback());
    const image = await pushImage(r, 'repo', 'v1');
    await pushBlob(r, 'repo', EMPTY_JSON, MT.ociEmpty);
    const art = artifactManifest({
      subject: image.descriptor,
      artifactType: SIG,
      annotations: { signed: 'yes' },
    });
    const fallback = ociIndex({
      manifests: [{ ...art.descriptor, artifactType: SIG, annotations: { signed: 'yes' } }],
    });
    const root = '/docker/registry/v2';
    for (const m of [art, fallback]) {
      const hex = hexOf(m.digest);
      await t.driver.putContent(`${root}/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`, m.bytes);
      await t.driver.putContent(
        `${root}/repositories/repo/_manifests/revisions/sha256/${hex}/link`,
        m.digest,
      );
    }
    const tag = `sha256-${hexOf(image.digest)}`;
    await t.driver.putContent(
      `${root}/repositories/repo/_manifests/tags/${tag}/current/link`,
      fallback.digest,
    );
    await t.driver.putContent(
      `${root}/repositories/repo/_manifests/tags/${tag}/index/sha256/${hexOf(fallback.digest)}/link`,
      fallback.digest,
    );

    const { index } = await referrers(r, 'repo', image.digest);
    assert.deepEqual(
      index.manifests.map((d) => d.digest),
      [art.digest],
    );
    const d = descriptorIn(index, art.digest);
    assert.equal(d.artifactType, SIG);
    assert.deepEqual(d.annotations, { signed: 'yes' });
  });

  void test('a manifest listed in the fallback index is dropped once it is deleted', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const art = await pushArtifact(r, 'repo', { subject: image.descriptor, artifactType: SBOM });
    await pushManifest(
      r,
      'repo',
      `sha256-${hexOf(image.digest)}`,
      ociIndex({ manifests: [{ ...art.descriptor, artifactType: SBOM }] }),
    );
    expectStatus(await r.delete(`/v2/repo/manifests/${art.digest}`), 202);
    // Spec: each descriptor is of a manifest in this repository whose subject is <digest>.
    assert.deepEqual((await referrers(r, 'repo', image.digest)).index.manifests, []);
  });

  void test('a fallback entry whose manifest has no subject (or another subject) is not a referrer', async () => {
    const r = await newRegistry();
    const image = await pushImage(r, 'repo', 'v1');
    const plain = await pushImage(r, 'repo');
    const other = await pushImage(r, 'repo', 'v2');
    const elsewhere = await pushArtifact(r, 'repo', { subject: other.descriptor });
    await pushManifest(
      r,
      'repo',
      `sha256-${hexOf(image.digest)}`,
      ociIndex({ manifests: [plain.descriptor, elsewhere.descriptor] }),
    );
    assert.deepEqual((await referrers(r, 'repo', image.digest)).index.manifests, []);
  });
});
