import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LoginLimiter } from '../../src/auth/rate-limit.js';

test('failures per user and per address block until the window ends; success clears the user', () => {
  let now = 1_000_000;
  const limiter = new LoginLimiter({ perUser: 3, perAddress: 5, windowMs: 60_000 }, () => now);
  for (let i = 0; i < 2; i++) limiter.failure('alice', '10.0.0.1');
  assert.equal(limiter.retryAfter('alice', '10.0.0.1'), 0);
  limiter.failure('alice', '10.0.0.1');
  assert.equal(limiter.retryAfter('alice', '10.0.0.9'), 60_000, 'the user is blocked from any address');
  now += 59_000;
  assert.equal(limiter.retryAfter('alice', '10.0.0.9'), 1_000);
  now += 1_000;
  assert.equal(limiter.retryAfter('alice', '10.0.0.9'), 0, 'the window ended');

  // Two users from one address add up to the address limit.
  limiter.failure('bob', '10.0.0.2');
  limiter.failure('bob', '10.0.0.2');
  for (const user of ['c', 'd', 'e']) limiter.failure(user, '10.0.0.2');
  assert.ok(limiter.retryAfter('fresh-user', '10.0.0.2') > 0, 'the address is blocked for everyone');

  limiter.failure('carol', '10.0.0.3');
  limiter.failure('carol', '10.0.0.3');
  limiter.success('carol');
  limiter.failure('carol', '10.0.0.3');
  assert.equal(limiter.retryAfter('carol', '10.0.0.3'), 0, 'a success clears the user count');
});
