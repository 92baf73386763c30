import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SandforgeError } from '../../src/shared/errors.js';
import { DEFAULT_BASE_URL, DEFAULT_TIMEOUT_MS, endpointUrl, resolveClientConfig, sandboxPath, websocketUrl } from '../../sdk/src/config.js';

describe('resolveClientConfig', () => {
  it('uses defaults with an empty environment', () => {
    assert.deepEqual(resolveClientConfig({}, {}), { baseUrl: DEFAULT_BASE_URL, token: undefined, timeoutMs: DEFAULT_TIMEOUT_MS });
  });

  it('reads SANDFORGE_URL and SANDFORGE_TOKEN', () => {
    const c = resolveClientConfig({}, { SANDFORGE_URL: 'https://sf.example.com/', SANDFORGE_TOKEN: 'sf_live_env' });
    assert.equal(c.baseUrl, 'https://sf.example.com');
    assert.equal(c.token, 'sf_live_env');
  });

  it('prefers options over the environment, and treats empty strings as unset', () => {
    const env = { SANDFORGE_URL: 'http://env:1', SANDFORGE_TOKEN: 'sf_live_env' };
    assert.deepEqual(resolveClientConfig({ baseUrl: 'http://opt:2', token: 'sf_live_opt', timeoutMs: 5 }, env), {
      baseUrl: 'http://opt:2',
      token: 'sf_live_opt',
      timeoutMs: 5,
    });
    const c = resolveClientConfig({ baseUrl: '', token: ' ' }, env);
    assert.equal(c.baseUrl, 'http://env:1');
    assert.equal(c.token, 'sf_live_env');
    assert.equal(resolveClientConfig({}, { SANDFORGE_URL: '' }).baseUrl, DEFAULT_BASE_URL);
  });

  it('keeps a path prefix without trailing slashes', () => {
    assert.equal(resolveClientConfig({ baseUrl: 'http://proxy/sandforge//' }, {}).baseUrl, 'http://proxy/sandforge');
  });

  it('rejects bad URLs and timeouts with a message naming the setting', () => {
    for (const baseUrl of ['127.0.0.1:8585x', 'ftp://x', 'not a url', 'http://u:p@x', 'http://x/?a=1']) {
      assert.throws(
        () => resolveClientConfig({ baseUrl }, {}),
        (e: unknown) => e instanceof SandforgeError && e.code === 'invalid_argument' && /SANDFORGE_URL/.test(e.message),
        baseUrl,
      );
    }
    assert.throws(() => resolveClientConfig({ timeoutMs: 0 }, {}), /timeoutMs must be a positive number of milliseconds/);
    assert.throws(() => resolveClientConfig({ timeoutMs: Number.NaN }, {}), /timeoutMs/);
  });
});

describe('endpoint URLs', () => {
  it('appends the path and an encoded query, skipping undefined values', () => {
    assert.equal(
      endpointUrl('http://h:1/p', '/v1/sandboxes/sb_1/files', { path: '/a b/c&d', recursive: undefined }),
      'http://h:1/p/v1/sandboxes/sb_1/files?path=%2Fa+b%2Fc%26d',
    );
    assert.equal(endpointUrl('http://h:1', '/healthz'), 'http://h:1/healthz');
  });

  it('derives ws:// and wss:// URLs', () => {
    assert.equal(websocketUrl('http://h:1/v1/x'), 'ws://h:1/v1/x');
    assert.equal(websocketUrl('https://h/v1/x'), 'wss://h/v1/x');
  });

  it('encodes sandbox ids and refuses empty ones', () => {
    assert.equal(sandboxPath('sb_1', '/exec'), '/v1/sandboxes/sb_1/exec');
    assert.equal(sandboxPath('../x'), '/v1/sandboxes/..%2Fx');
    assert.throws(() => sandboxPath(''), /non-empty/);
  });
});
