import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** Length of the short ids Sandforge shows and stores (image ids, agent disk names). */
export const SHORT_ID_LEN = 16;

/** sha256 of a file's content, hex. Streams so large binaries (node) stay cheap on memory. */
export async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Short content address of a JSON-serialisable description of inputs.
 * Keys are sorted so the id does not depend on object construction order.
 */
export function hashInputs(inputs: unknown): string {
  return createHash('sha256').update(stableJson(inputs)).digest('hex').slice(0, SHORT_ID_LEN);
}

/** JSON with object keys sorted recursively: a canonical form for hashing. */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(v as Record<string, unknown>).sort()) sorted[k] = (v as Record<string, unknown>)[k];
      return sorted;
    }
    return v;
  });
}
