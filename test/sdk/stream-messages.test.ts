import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { STDIN_CHUNK_BYTES, decodeData, encodeClientMessage, parseServerMessage, stdinMessages } from '../../sdk/src/stream-messages.js';

describe('parseServerMessage', () => {
  it('accepts each message type', () => {
    assert.deepEqual(parseServerMessage('{"type":"started","pid":42}'), { type: 'started', pid: 42 });
    assert.deepEqual(parseServerMessage('{"type":"stderr","data":"AAEC/w=="}'), { type: 'stderr', data: 'AAEC/w==' });
    assert.deepEqual(parseServerMessage('{"type":"exit","exit_code":null,"signal":"SIGKILL","timed_out":true,"duration_ms":5}'), {
      type: 'exit',
      exit_code: null,
      signal: 'SIGKILL',
      timed_out: true,
      duration_ms: 5,
    });
    assert.deepEqual(parseServerMessage('{"type":"error","code":"agent_error","message":"boom","extra":1}'), {
      type: 'error',
      code: 'agent_error',
      message: 'boom',
    });
  });

  it('rejects malformed messages, naming the field', () => {
    assert.throws(() => parseServerMessage('nope'), /not JSON/);
    assert.throws(() => parseServerMessage('[1]'), /not an object/);
    assert.throws(() => parseServerMessage('{"type":"bogus"}'), /unknown type "bogus"/);
    assert.throws(() => parseServerMessage('{"type":"stdout","data":"%%%%"}'), /not base64/);
    assert.throws(() => parseServerMessage('{"type":"stdout","data":"abc"}'), /not base64/);
    assert.throws(() => parseServerMessage('{"type":"started","pid":"1"}'), /started\.pid must be a number/);
    assert.throws(
      () => parseServerMessage('{"type":"exit","exit_code":1.5,"signal":null,"timed_out":false,"duration_ms":1}'),
      /exit_code must be an integer/,
    );
    assert.throws(() => parseServerMessage('{"type":"exit","exit_code":0,"signal":null,"duration_ms":1}'), /timed_out/);
  });
});

describe('base64 frames', () => {
  it('decodes output bytes exactly, including non-UTF-8', () => {
    const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x0a]);
    const msg = parseServerMessage(JSON.stringify({ type: 'stdout', data: bytes.toString('base64') }));
    assert.ok(msg.type === 'stdout');
    assert.deepEqual(decodeData(msg), bytes);
  });

  it('encodes stdin from strings and bytes, splitting large payloads', () => {
    assert.deepEqual(stdinMessages('hé'), [{ type: 'stdin', data: Buffer.from('hé').toString('base64') }]);
    const big = Buffer.alloc(STDIN_CHUNK_BYTES * 2 + 3, 7);
    const msgs = stdinMessages(big);
    assert.equal(msgs.length, 3);
    const joined = Buffer.concat(msgs.map((m) => (m.type === 'stdin' ? Buffer.from(m.data, 'base64') : Buffer.alloc(0))));
    assert.deepEqual(joined, big);
    assert.deepEqual(stdinMessages(new Uint8Array(0)), []);
  });

  it('serialises client messages as one JSON text frame', () => {
    assert.equal(encodeClientMessage({ type: 'resize', rows: 24, cols: 80 }), '{"type":"resize","rows":24,"cols":80}');
  });
});
