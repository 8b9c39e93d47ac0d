import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { manifestReferences, UnreadableManifestError } from '../../src/gc/references.js';

const h = (c: string) => `sha256:${c.repeat(64)}`;
const desc = (c: string, mediaType = 'application/octet-stream', size = 10) => ({
  mediaType,
  digest: h(c),
  size,
});

describe('manifestReferences', () => {
  const cases: {
    name: string;
    doc: object;
    blobs: string[];
    children?: string[];
    subject?: string;
    foreign?: string[];
  }[] = [
    {
      name: 'OCI image: config and layers',
      doc: { schemaVersion: 2, config: desc('a'), layers: [desc('b'), desc('c')] },
      blobs: [h('a'), h('b'), h('c')],
    },
    {
      name: 'index: children',
      doc: { schemaVersion: 2, manifests: [desc('d'), desc('e')] },
      blobs: [],
      children: [h('d'), h('e')],
    },
    {
      name: 'artifact with subject',
      doc: { schemaVersion: 2, config: desc('a'), layers: [], subject: desc('f') },
      blobs: [h('a')],
      subject: h('f'),
    },
    {
      name: 'OCI artifact manifest (blobs)',
      doc: {
        mediaType: 'application/vnd.oci.artifact.manifest.v1+json',
        blobs: [desc('1')],
        subject: desc('2'),
      },
      blobs: [h('1')],
      subject: h('2'),
    },
    {
      name: 'Docker schema1 (fsLayers)',
      doc: { schemaVersion: 1, fsLayers: [{ blobSum: h('3') }, { blobSum: 'garbage' }] },
      blobs: [h('3')],
    },
    {
      name: 'foreign layers are kept but flagged',
      doc: {
        schemaVersion: 2,
        config: desc('a'),
        layers: [desc('4', 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip')],
      },
      blobs: [h('a'), h('4')],
      foreign: [h('4')],
    },
    {
      name: 'invalid descriptors are ignored',
      doc: { config: { digest: 'nope' }, layers: [7, null] },
      blobs: [],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const refs = manifestReferences('sha256:x', Buffer.from(JSON.stringify(c.doc)));
      assert.deepEqual(
        refs.blobs.map((b) => b.digest.toString()),
        c.blobs,
      );
      assert.deepEqual(refs.children.map(String), c.children ?? []);
      assert.equal(refs.subject?.toString(), c.subject);
      assert.deepEqual(
        refs.blobs.filter((b) => !b.distributable).map((b) => b.digest.toString()),
        c.foreign ?? [],
      );
    });
  }

  for (const bytes of ['not json', '[1,2]', '"string"']) {
    test(`${bytes} cannot be read`, () => {
      assert.throws(() => manifestReferences('sha256:x', Buffer.from(bytes)), UnreadableManifestError);
    });
  }
});
