import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkAuthorization, tokenId, tokenMatches } from '../../src/api/auth.js';

const T = 'sf_live_0123456789abcdef0123';

test('token comparison accepts only the exact token', () => {
  assert.equal(tokenMatches(T, T), true);
  assert.equal(tokenMatches(T, T + 'x'), false);
  assert.equal(tokenMatches(T, T.slice(0, -1)), false);
  assert.equal(tokenMatches(T, ''), false);
});

test('Authorization header must be a bearer token', () => {
  assert.doesNotThrow(() => checkAuthorization(T, `Bearer ${T}`));
  assert.throws(() => checkAuthorization(T, undefined), /missing Authorization/);
  assert.throws(() => checkAuthorization(T, `Basic ${T}`), /Bearer/);
  assert.throws(() => checkAuthorization(T, 'Bearer nope'), /invalid token/);
  assert.doesNotThrow(() => checkAuthorization(null, undefined));
});

test('token ids do not reveal the token', () => {
  const id = tokenId(T);
  assert.match(id, /^tok_[0-9a-f]{12}$/);
  assert.ok(!id.includes(T.slice(8, 14)));
});
