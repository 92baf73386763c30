import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SandforgeError } from '../../src/shared/errors.js';
import {
  SandforgeApiError,
  SandforgeConnectionError,
  codeForStatus,
  describeNetworkError,
  errorFromResponse,
  errorFromStreamMessage,
} from '../../sdk/src/errors.js';

const ctx = { method: 'POST', url: 'http://127.0.0.1:8585/v1/sandboxes' };

describe('errorFromResponse', () => {
  it('maps the envelope to a typed error with status, code, details and request id', () => {
    const body = JSON.stringify({
      error: { code: 'policy_denied', message: 'mount /root/.ssh is blocked', details: { segment: '.ssh' }, request_id: 'req_1' },
    });
    const err = errorFromResponse(403, body, { ...ctx, requestId: 'req_header' });
    assert.ok(err instanceof SandforgeApiError);
    assert.ok(err instanceof SandforgeError);
    assert.equal(err.code, 'policy_denied');
    assert.equal(err.status, 403);
    assert.equal(err.message, 'mount /root/.ssh is blocked');
    assert.deepEqual(err.details, { segment: '.ssh' });
    assert.equal(err.requestId, 'req_1');
    assert.equal(err.name, 'SandforgeApiError');
  });

  it('keeps the HTTP status even when it differs from the registry', () => {
    const body = JSON.stringify({ error: { code: 'not_found', message: 'nope' } });
    assert.equal(errorFromResponse(410, body, ctx).status, 410);
  });

  it('falls back to the x-request-id header', () => {
    const body = JSON.stringify({ error: { code: 'sandbox_not_found', message: 'no sandbox sb_x' } });
    const err = errorFromResponse(404, body, { ...ctx, requestId: 'req_h' });
    assert.equal(err.code, 'sandbox_not_found');
    assert.equal(err.requestId, 'req_h');
  });

  it('maps an unknown code by status and keeps the server code in details', () => {
    const body = JSON.stringify({ error: { code: 'brand_new_code', message: 'newer server' } });
    const err = errorFromResponse(409, body, ctx);
    assert.equal(err.code, 'conflict');
    assert.equal(err.message, 'newer server');
    assert.deepEqual(err.details, { server_code: 'brand_new_code' });
  });

  it('describes a body without an envelope by method, URL, status and a snippet', () => {
    const err = errorFromResponse(502, '<html>\n  <h1>Bad Gateway</h1>\n</html>', ctx);
    assert.equal(err.code, 'internal');
    assert.equal(err.status, 502);
    assert.match(err.message, /^POST http:\/\/127\.0\.0\.1:8585\/v1\/sandboxes failed with HTTP 502: <html> <h1>Bad Gateway/);
  });

  it('points at the token for a bare 401', () => {
    const err = errorFromResponse(401, '', ctx);
    assert.equal(err.code, 'unauthorized');
    assert.match(err.message, /SANDFORGE_TOKEN/);
  });

  it('ignores JSON that is not an envelope', () => {
    assert.equal(errorFromResponse(400, '{"error":"text"}', ctx).code, 'bad_request');
    assert.equal(errorFromResponse(500, 'null', ctx).code, 'internal');
    assert.equal(errorFromResponse(400, '{"error":{"code":1,"message":"x"}}', ctx).code, 'bad_request');
  });
});

describe('codeForStatus', () => {
  it('covers common statuses and falls back by class', () => {
    assert.equal(codeForStatus(404), 'not_found');
    assert.equal(codeForStatus(429), 'rate_limited');
    assert.equal(codeForStatus(418), 'bad_request');
    assert.equal(codeForStatus(503), 'internal');
  });
});

describe('errorFromStreamMessage', () => {
  it('maps a known code with its registry status', () => {
    const err = errorFromStreamMessage({ code: 'agent_unavailable', message: 'guest agent went away' });
    assert.equal(err.code, 'agent_unavailable');
    assert.equal(err.status, 503);
  });
  it('maps an unknown code to internal', () => {
    const err = errorFromStreamMessage({ code: 'weird', message: 'x' });
    assert.equal(err.code, 'internal');
    assert.deepEqual(err.details, { server_code: 'weird' });
  });
});

describe('SandforgeConnectionError', () => {
  it('names the URL, the system error code and SANDFORGE_URL', () => {
    const cause = Object.assign(new TypeError('fetch failed'), {
      cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8585'), { code: 'ECONNREFUSED' }),
    });
    const err = new SandforgeConnectionError('http://127.0.0.1:8585', cause);
    assert.equal(err.code, 'agent_unavailable');
    assert.equal(err.cause, cause);
    assert.match(err.message, /http:\/\/127\.0\.0\.1:8585 \(ECONNREFUSED\)/);
    assert.match(err.message, /SANDFORGE_URL/);
  });
  it('falls back to the message without a code', () => {
    assert.equal(describeNetworkError(new Error('socket hang up')), 'socket hang up');
  });
});

describe('describeNetworkError', () => {
  it('prefers the innermost message over "fetch failed"', () => {
    const err = new TypeError('fetch failed', { cause: new Error('bad port') });
    assert.equal(describeNetworkError(err), 'bad port');
  });
});
