import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { digestOf } from '../../src/registry/digest.js';
import { parsePath, pathFor, type ParsedPath } from '../../src/registry/paths.js';

const a = digestOf('a');
const b = digestOf('b');

describe('parsePath is the inverse of pathFor for the files GC reads', () => {
  const specs: ParsedPath[] = [
    { kind: 'blobData', digest: a },
    { kind: 'layerLink', name: 'library/busy_box', digest: a },
    { kind: 'manifestRevisionLink', name: 'x', digest: a },
    { kind: 'tagCurrentLink', name: 'a/b/c', tag: '_v1.0-rc' },
    { kind: 'tagIndexEntryLink', name: 'a/b', tag: 'latest', digest: a },
    { kind: 'referrerEntry', name: 'r', subject: a, digest: b },
    { kind: 'gcTouch', digest: a },
    { kind: 'gcTombstone', digest: b },
  ];
  for (const spec of specs) {
    test(spec.kind, () => {
      const parsed = parsePath(pathFor(spec));
      assert.ok(parsed, pathFor(spec));
      assert.deepEqual(JSON.parse(JSON.stringify(parsed)), JSON.parse(JSON.stringify(spec)));
      assert.equal(pathFor(parsed), pathFor(spec));
    });
  }

  test('paths GC does not read are not classified', () => {
    for (const path of [
      pathFor({ kind: 'uploadData', name: 'x', id: 'abc' }),
      pathFor({ kind: 'gcLease' }),
      '/docker/registry/v2/blobs/sha256/ab/nothex/data',
      '/elsewhere/file',
    ]) {
      assert.equal(parsePath(path), undefined, path);
    }
  });
});
