import type { StreamServerMessage } from '../../src/shared/api-types.js';
import { SandforgeError } from '../../src/shared/errors.js';
import { parseServerMessage } from './stream-messages.js';

/** Longest NDJSON line accepted, in bytes; guards memory against a runaway stream. */
export const MAX_LINE_BYTES = 64 << 20;

/**
 * Splits a byte stream into lines at `\n`. Splits on bytes, not text, so a UTF-8 character cut
 * across chunks is decoded whole. Blank lines are skipped; a trailing `\r` is dropped.
 */
export class NdjsonLineSplitter {
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  /** Feeds a chunk; returns the lines it completed. */
  push(chunk: Uint8Array): string[] {
    const lines: string[] = [];
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (let nl = buf.indexOf(0x0a); nl !== -1; nl = buf.indexOf(0x0a)) {
      this.#pending.push(buf.subarray(0, nl));
      this.#emit(lines);
      buf = buf.subarray(nl + 1);
    }
    if (buf.length > 0) {
      this.#pendingBytes += buf.length;
      if (this.#pendingBytes > MAX_LINE_BYTES) throw new SandforgeError('internal', `NDJSON line longer than ${MAX_LINE_BYTES} bytes`);
      this.#pending.push(Buffer.from(buf));
    }
    return lines;
  }

  /** Ends the stream; returns the last line if it had no newline. */
  flush(): string[] {
    const lines: string[] = [];
    if (this.#pending.length > 0) this.#emit(lines);
    return lines;
  }

  #emit(lines: string[]): void {
    let line = Buffer.concat(this.#pending).toString('utf8');
    this.#pending = [];
    this.#pendingBytes = 0;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.trim() !== '') lines.push(line);
  }
}

/** Validated stream messages from an NDJSON body. */
export async function* readNdjsonMessages(body: AsyncIterable<Uint8Array>): AsyncGenerator<StreamServerMessage> {
  const splitter = new NdjsonLineSplitter();
  for await (const chunk of body) {
    for (const line of splitter.push(chunk)) yield parseServerMessage(line);
  }
  for (const line of splitter.flush()) yield parseServerMessage(line);
}
