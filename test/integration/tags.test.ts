import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  TagListSchema,
  bodyJson,
  expectOciError,
  expectStatus,
  header,
  mediaTypeOf,
  newRegistry,
  nextLink,
  prepareImage,
  pushImage,
  pushManifest,
  type Client,
} from '../helpers/oci.js';

/** Pushes one image under every tag, in the order given. */
async function tagged(tags: string[], name = 'repo'): Promise<Client> {
  const r = await newRegistry();
  const m = await prepareImage(r, name);
  for (const tag of tags) await pushManifest(r, name, tag, m);
  return r;
}

async function list(r: Client, path: string): Promise<{ tags: string[]; next: string | undefined }> {
  const res = await r.get(path);
  expectStatus(res, 200);
  assert.equal(mediaTypeOf(header(res, 'content-type')), 'application/json');
  const body = bodyJson(res, TagListSchema);
  return { tags: body.tags, next: nextLink(res) };
}

const ascii = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

void describe('GET /v2/<name>/tags/list', () => {
  void test('every tag, in lexical order, with the repository name', async () => {
    const tags = ['v10', 'v2', 'latest', '1.0', 'alpha-1', 'a_b', '0', 'z.9'];
    const r = await tagged(tags, 'org/app');
    const res = await r.get('/v2/org/app/tags/list');
    expectStatus(res, 200);
    const body = bodyJson(res, TagListSchema);
    assert.equal(body.name, 'org/app');
    assert.deepEqual(body.tags, [...tags].sort(ascii));
  });

  void test('mixed case: lexical (case-insensitive) or ASCIIbetical order, as the spec allows', async () => {
    const tags = ['b', 'A', 'a', 'C', '10', '9', 'B'];
    const { tags: got } = await list(await tagged(tags), '/v2/repo/tags/list');
    assert.deepEqual([...got].sort(), [...tags].sort());
    const asciiOrder = got.every((t, i) => i === 0 || ascii(got[i - 1] ?? '', t) < 0);
    const caseless = got.every((t, i) => i === 0 || (got[i - 1] ?? '').toLowerCase() <= t.toLowerCase());
    assert.ok(asciiOrder || caseless, `not sorted: ${got.join(',')}`);
  });

  void test('a repository whose manifests have no tag lists no tags (200, spec: the list MAY be empty)', async () => {
    const r = await newRegistry();
    await pushImage(r, 'repo'); // by digest
    assert.deepEqual((await list(r, '/v2/repo/tags/list')).tags, []);
  });

  void test('after its only tag is deleted, the repository lists no tags', async () => {
    const r = await tagged(['only']);
    expectStatus(await r.delete('/v2/repo/manifests/only'), 202);
    assert.deepEqual((await list(r, '/v2/repo/tags/list')).tags, []);
  });

  void test('unknown repository → 404 NAME_UNKNOWN', async () => {
    const r = await newRegistry();
    expectOciError(await r.get('/v2/nowhere/tags/list'), 404, 'NAME_UNKNOWN');
  });
});

void describe('tags list paging (n, last, Link)', () => {
  const tags = ['a', 'b', 'c', 'd', 'e'];

  void test('n=2 pages through every tag, following Link: <…?n=2&last=…>; rel="next"', async () => {
    const r = await tagged([...tags].reverse());
    const pages: string[][] = [];
    let path: string | undefined = '/v2/repo/tags/list?n=2';
    while (path !== undefined) {
      const res = await r.get(path);
      expectStatus(res, 200);
      const page = bodyJson(res, TagListSchema).tags;
      pages.push(page);
      const next = nextLink(res);
      if (next !== undefined) {
        assert.match(next, /^\/v2\/repo\/tags\/list\?/);
        const query = new URLSearchParams(next.split('?')[1]);
        assert.equal(query.get('n'), '2');
        assert.equal(query.get('last'), page.at(-1));
      }
      path = next;
      assert.ok(pages.length <= tags.length, 'paging does not end');
    }
    assert.deepEqual(pages.flat(), tags);
    // Spec: fewer than n only at the end (or with a Link); Wharf fills every page but the last.
    assert.deepEqual(pages.slice(0, 3), [['a', 'b'], ['c', 'd'], ['e']]);
  });

  void test('the first page has a Link when more tags follow', async () => {
    const r = await tagged(tags);
    const res = await r.get('/v2/repo/tags/list?n=2');
    assert.ok(nextLink(res), `expected a Link header: ${String(header(res, 'link'))}`);
  });

  void test('n larger than the list → every tag and no Link', async () => {
    const r = await tagged(tags);
    assert.deepEqual(await list(r, '/v2/repo/tags/list?n=10'), { tags, next: undefined });
  });

  void test('n=0 → an empty list and no Link (spec MUST)', async () => {
    const r = await tagged(tags);
    assert.deepEqual(await list(r, '/v2/repo/tags/list?n=0'), { tags: [], next: undefined });
  });

  const lastCases: { query: string; expected: string[] }[] = [
    { query: 'last=b', expected: ['c', 'd', 'e'] },
    { query: 'n=2&last=b', expected: ['c', 'd'] },
    { query: 'last=bb', expected: ['c', 'd', 'e'] }, // not a tag: starts after where it would sort
    { query: 'last=e', expected: [] },
    { query: 'last=0', expected: tags },
  ];
  for (const { query, expected } of lastCases) {
    void test(`?${query} → ${JSON.stringify(expected)}`, async () => {
      const r = await tagged(tags);
      assert.deepEqual((await list(r, `/v2/repo/tags/list?${query}`)).tags, expected);
    });
  }

  for (const n of ['abc', '-1', '1.5', '']) {
    void test(`n=${JSON.stringify(n)} → 400 PAGINATION_NUMBER_INVALID (Distribution)`, async () => {
      const r = await tagged(tags);
      expectOciError(await r.get(`/v2/repo/tags/list?n=${n}`), 400, 'PAGINATION_NUMBER_INVALID');
    });
  }
});
