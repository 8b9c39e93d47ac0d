import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CatalogSchema,
  bodyJson,
  expectOciError,
  expectStatus,
  newRegistry,
  nextLink,
  pushImage,
  type Client,
} from '../helpers/oci.js';

// Names chosen so that lexical order and Distribution's depth-first walk agree ('-' would sort before '/').
const names = ['charlie/delta', 'alpha', 'bravo', 'alpha/beta/gamma', 'echo/foxtrot/golf/hotel'];
const sorted = [...names].sort();

async function withRepos(): Promise<Client> {
  const r = await newRegistry();
  for (const name of names) await pushImage(r, name, 'latest');
  return r;
}

void describe('GET /v2/_catalog', () => {
  void test('an empty registry lists no repositories', async () => {
    const r = await newRegistry();
    const res = await r.get('/v2/_catalog');
    expectStatus(res, 200);
    assert.deepEqual(bodyJson(res, CatalogSchema).repositories, []);
  });

  void test('every repository, nested names included, in lexical order', async () => {
    const r = await withRepos();
    const res = await r.get('/v2/_catalog');
    expectStatus(res, 200);
    assert.deepEqual(bodyJson(res, CatalogSchema).repositories, sorted);
    assert.equal(nextLink(res), undefined);
  });

  void test('n=2 pages with Link: </v2/_catalog?n=2&last=…>; rel="next"', async () => {
    const r = await withRepos();
    const pages: string[][] = [];
    let path: string | undefined = '/v2/_catalog?n=2';
    while (path !== undefined) {
      const res = await r.get(path);
      expectStatus(res, 200);
      const page = bodyJson(res, CatalogSchema).repositories;
      pages.push(page);
      const next = nextLink(res);
      if (next !== undefined) {
        assert.match(next, /^\/v2\/_catalog\?/);
        const query = new URLSearchParams(next.split('?')[1]);
        assert.equal(query.get('n'), '2');
        assert.equal(query.get('last'), page.at(-1));
      }
      path = next;
      assert.ok(pages.length <= names.length, 'paging does not end');
    }
    assert.deepEqual(pages.flat(), sorted);
    assert.deepEqual(pages[0], sorted.slice(0, 2));
  });

  void test('last starts after the named repository', async () => {
    const r = await withRepos();
    const res = await r.get('/v2/_catalog?last=alpha/beta/gamma');
    expectStatus(res, 200);
    assert.deepEqual(bodyJson(res, CatalogSchema).repositories, [
      'bravo',
      'charlie/delta',
      'echo/foxtrot/golf/hotel',
    ]);
  });

  for (const n of ['abc', '-1']) {
    void test(`n=${n} → 400 PAGINATION_NUMBER_INVALID`, async () => {
      const r = await withRepos();
      expectOciError(await r.get(`/v2/_catalog?n=${n}`), 400, 'PAGINATION_NUMBER_INVALID');
    });
  }
});
