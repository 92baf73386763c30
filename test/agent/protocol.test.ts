import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FrameDecoder,
  FrameType,
  MAX_FRAME_PAYLOAD_BYTES,
  ProtocolViolation,
  checkExecExit,
  checkExecSpec,
  checkFileListResponse,
  checkHealthResponse,
  checkInitRequest,
  decodeAgentFrame,
  decodeClientFrame,
  encodeAgentFrame,
  encodeClientFrame,
  parseJson,
  type AgentFrame,
  type ClientFrame,
} from '../../src/shared/protocol.js';

const health = {
  version: '0.1.0',
  protocol: 1,
  kernel_release: '6.1.0-18-amd64',
  hostname: 'sb-1',
  uptime_ms: 1234,
  boot_id: 'fde519a8-d5a8-4824-b376-ce9c08d47338',
  sandbox_id: null,
};
const rejects = (f: () => unknown) => assert.throws(f, ProtocolViolation);

describe('frame codec', () => {
  test('round-trips every frame type, across arbitrary chunk splits', () => {
    const agentFrames: AgentFrame[] = [
      { type: 'started', pid: 42 },
      { type: 'stdout', data: Buffer.from('out') },
      { type: 'stderr', data: Buffer.alloc(0) },
      { type: 'exit', exit: { exit_code: null, signal: 'SIGKILL', timed_out: true, duration_ms: 10 } },
      { type: 'error', error: { code: 'not_found', message: 'nope' } },
    ];
    const bytes = Buffer.concat(agentFrames.map(encodeAgentFrame));
    for (const step of [1, 3, 7, bytes.length]) {
      const d = new FrameDecoder('to_client');
      const got: AgentFrame[] = [];
      for (let i = 0; i < bytes.length; i += step) got.push(...d.push(bytes.subarray(i, i + step)).map(decodeAgentFrame));
      assert.deepEqual(got, agentFrames);
      assert.equal(d.pending, 0);
    }
    const clientFrames: ClientFrame[] = [
      { type: 'spec', spec: { argv: ['ls', '-l'], env: { A: 'b' }, pty: { rows: 24, cols: 80 } } },
      { type: 'stdin', data: Buffer.from([0, 1, 2]) },
      { type: 'stdin_eof' },
      { type: 'signal', signal: 'SIGINT' },
      { type: 'resize', rows: 50, cols: 200 },
    ];
    const d = new FrameDecoder('to_agent');
    const decoded = d.push(Buffer.concat(clientFrames.map(encodeClientFrame))).map(decodeClientFrame);
    // env comes back as a null-prototype object (a "__proto__" key stays data); compare by value.
    assert.equal(JSON.stringify(decoded), JSON.stringify(clientFrames));
  });

  test('rejects unknown types, wrong direction and oversized lengths from the header alone', () => {
    rejects(() => new FrameDecoder('to_client').push(Buffer.from([0x99, 0, 0, 0, 0])));
    rejects(() => new FrameDecoder('to_client').push(encodeClientFrame({ type: 'stdin_eof' })));
    rejects(() => new FrameDecoder('to_agent').push(encodeAgentFrame({ type: 'started', pid: 1 })));
    const hdr = Buffer.alloc(5);
    hdr.writeUInt8(FrameType.stdout, 0);
    hdr.writeUInt32BE(MAX_FRAME_PAYLOAD_BYTES + 1, 1);
    rejects(() => new FrameDecoder('to_client').push(hdr));
    hdr.writeUInt32BE(0xffffffff, 1);
    rejects(() => new FrameDecoder('to_client').push(hdr));
    assert.throws(() => encodeAgentFrame({ type: 'stdout', data: Buffer.alloc(MAX_FRAME_PAYLOAD_BYTES + 1) }), RangeError);
  });

  test('rejects malformed payloads', () => {
    const raw = (type: number, payload: string | Buffer) => ({ type, payload: Buffer.from(payload) });
    rejects(() => decodeAgentFrame(raw(FrameType.started, '{"pid":0}')));
    rejects(() => decodeAgentFrame(raw(FrameType.started, '{"pid":1,"x":1}')));
    rejects(() => decodeAgentFrame(raw(FrameType.started, 'not json')));
    rejects(() => decodeAgentFrame(raw(FrameType.exit, '{"exit_code":300,"signal":null,"timed_out":false,"duration_ms":1}')));
    rejects(() => decodeAgentFrame(raw(FrameType.exit, '{"exit_code":0,"signal":"SIGTERM","timed_out":false,"duration_ms":1}')));
    rejects(() => decodeAgentFrame(raw(FrameType.exit, '{"exit_code":null,"signal":null,"timed_out":false,"duration_ms":1}')));
    rejects(() => decodeAgentFrame(raw(FrameType.exit, '{"exit_code":1,"signal":null,"timed_out":"no","duration_ms":1}')));
    rejects(() => decodeAgentFrame(raw(FrameType.exit, '{"exit_code":1,"signal":null,"timed_out":false,"duration_ms":-1}')));
    rejects(() => decodeAgentFrame(raw(FrameType.exit, '{"exit_code":null,"signal":"SIG; rm -rf","timed_out":false,"duration_ms":1}')));
    rejects(() => decodeAgentFrame(raw(FrameType.error, '{"code":"x","message":' + JSON.stringify('m'.repeat(5000)) + '}')));
    rejects(() => decodeAgentFrame(raw(FrameType.error, '["not","an","object"]')));
    rejects(() => decodeClientFrame(raw(FrameType.signal, 'SIGNOPE')));
    rejects(() => decodeClientFrame(raw(FrameType.resize, Buffer.from([0, 0, 0, 80]))));
    rejects(() => decodeClientFrame(raw(FrameType.resize, Buffer.from([0, 1, 0]))));
    rejects(() => decodeClientFrame(raw(FrameType.stdinEof, 'x')));
  });
});

describe('validators', () => {
  test('health: accepts the real shape, rejects wrong types, extra keys, bad sizes', () => {
    assert.deepEqual(checkHealthResponse(health, 'h'), health);
    rejects(() => checkHealthResponse({ ...health, protocol: '1' }, 'h'));
    rejects(() => checkHealthResponse({ ...health, extra: true }, 'h'));
    rejects(() => checkHealthResponse({ ...health, hostname: 'h'.repeat(65) }, 'h'));
    rejects(() => checkHealthResponse({ ...health, boot_id: 'not-a-uuid' }, 'h'));
    rejects(() => checkHealthResponse({ ...health, uptime_ms: 1.5 }, 'h'));
    rejects(() => checkHealthResponse({ ...health, kernel_release: 'with space' }, 'h'));
    const { boot_id: _drop, ...missing } = health;
    rejects(() => checkHealthResponse(missing, 'h'));
    rejects(() => checkHealthResponse(Object.assign(Object.create({ inherited: 1 }), health), 'h'));
    rejects(() => checkHealthResponse([health], 'h'));
  });

  test('json parsing bounds the body and rejects prototype tricks', () => {
    rejects(() => parseJson('{"__proto__":{"x":1},' + JSON.stringify(health).slice(1), checkHealthResponse, 'h'));
    rejects(() => parseJson('{', checkHealthResponse, 'h'));
  });

  test('exec spec', () => {
    assert.ok(checkExecSpec({ shell: 'echo hi', timeout_ms: 5, user: 'nobody' }, 's'));
    rejects(() => checkExecSpec({}, 's'));
    rejects(() => checkExecSpec({ argv: [] }, 's'));
    rejects(() => checkExecSpec({ argv: ['a'], shell: 'b' }, 's'));
    rejects(() => checkExecSpec({ argv: ['a\0b'] }, 's'));
    rejects(() => checkExecSpec({ argv: ['a'], cwd: 'rel' }, 's'));
    rejects(() => checkExecSpec({ argv: ['a'], env: { 'A=B': 'x' } }, 's'));
    rejects(() => checkExecSpec({ argv: ['a'], pty: { rows: 0, cols: 80 } }, 's'));
    rejects(() => checkExecSpec({ argv: ['a'], user: 'bad user' }, 's'));
    rejects(() => checkExecSpec({ argv: ['a'], timeout_ms: 0 }, 's'));
    rejects(() => checkExecSpec({ argv: ['a'], bogus: 1 }, 's'));
  });

  test('init needs 32 bytes of entropy and a valid hostname', () => {
    const ok = { time_ms: Date.now(), entropy_b64: Buffer.alloc(32).toString('base64'), hostname: 'a-b.c', sandbox_id: 'sb_1' };
    assert.ok(checkInitRequest(ok, 'i'));
    rejects(() => checkInitRequest({ ...ok, entropy_b64: Buffer.alloc(31).toString('base64') }, 'i'));
    rejects(() => checkInitRequest({ ...ok, hostname: '-bad' }, 'i'));
    rejects(() => checkInitRequest({ ...ok, time_ms: 5 }, 'i'));
  });

  test('exit and list responses', () => {
    assert.ok(checkExecExit({ exit_code: 0, signal: null, timed_out: false, duration_ms: 0 }, 'e'));
    rejects(() =>
      checkFileListResponse({ entries: [{ name: 'a/b', type: 'file', size: 1, mode: 0o644, mtime_ms: 1 }], truncated: false }, 'l'),
    );
    rejects(() =>
      checkFileListResponse({ entries: [{ name: 'a', type: 'socket', size: 1, mode: 0o644, mtime_ms: 1 }], truncated: false }, 'l'),
    );
    rejects(() =>
      checkFileListResponse({ entries: [{ name: 'a', type: 'file', size: -1, mode: 0o644, mtime_ms: 1 }], truncated: false }, 'l'),
    );
    rejects(() =>
      checkFileListResponse({ entries: [{ name: 'a', type: 'file', size: 1, mode: 0o70000, mtime_ms: 1 }], truncated: false }, 'l'),
    );
  });
});
