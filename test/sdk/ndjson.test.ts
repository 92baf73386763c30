import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NdjsonLineSplitter, readNdjsonMessages } from '../../sdk/src/ndjson.js';

const b = (s: string) => Buffer.from(s, 'utf8');

describe('NdjsonLineSplitter', () => {
  it('joins a line split across chunks', () => {
    const s = new NdjsonLineSplitter();
    assert.deepEqual(s.push(b('{"a":')), []);
    assert.deepEqual(s.push(b('1}\n{"b"')), ['{"a":1}']);
    assert.deepEqual(s.push(b(':2}\n')), ['{"b":2}']);
    assert.deepEqual(s.flush(), []);
  });

  it('returns several lines from one chunk and skips blank lines', () => {
    const s = new NdjsonLineSplitter();
    assert.deepEqual(s.push(b('1\n\n2\r\n3\n')), ['1', '2', '3']);
  });

  it('decodes a UTF-8 character cut between chunks whole', () => {
    const bytes = b('"h\u00e9llo \u{1F600}"\n');
    const s = new NdjsonLineSplitter();
    const lines: string[] = [];
    for (let i = 0; i < bytes.length; i++) lines.push(...s.push(bytes.subarray(i, i + 1)));
    assert.deepEqual(lines, ['"h\u00e9llo \u{1F600}"']);
  });

  it('flushes a last line without a newline', () => {
    const s = new NdjsonLineSplitter();
    assert.deepEqual(s.push(b('x\ny')), ['x']);
    assert.deepEqual(s.flush(), ['y']);
    assert.deepEqual(s.flush(), []);
  });

  it('does not keep references to the caller’s chunk', () => {
    const s = new NdjsonLineSplitter();
    const chunk = b('abc');
    s.push(chunk);
    chunk.fill(0x7a);
    assert.deepEqual(s.push(b('\n')), ['abc']);
  });
});

describe('readNdjsonMessages', () => {
  it('yields validated messages from arbitrary chunking', async () => {
    const text =
      JSON.stringify({ type: 'stdout', data: Buffer.from('hi\n').toString('base64') }) +
      '\n' +
      JSON.stringify({ type: 'exit', exit_code: 0, signal: null, timed_out: false, duration_ms: 12 }) +
      '\n';
    async function* chunks() {
      for (let i = 0; i < text.length; i += 7) yield b(text.slice(i, i + 7));
    }
    const got = [];
    for await (const m of readNdjsonMessages(chunks())) got.push(m);
    assert.deepEqual(got, [
      { type: 'stdout', data: 'aGkK' },
      { type: 'exit', exit_code: 0, signal: null, timed_out: false, duration_ms: 12 },
    ]);
  });

  it('rejects a malformed line', async () => {
    async function* chunks() {
      yield b('{"type":"stdout"}\n');
    }
    await assert.rejects(async () => {
      for await (const _ of readNdjsonMessages(chunks())) void _;
    }, /stdout\.data must be a string/);
  });
});
