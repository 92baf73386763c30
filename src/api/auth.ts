import { createHash, timingSafeEqual } from 'node:crypto';
import { SandforgeError } from '../shared/errors.js';

/** Format of generated tokens; any non-empty token is accepted, but this is what `sandforge token` makes. */
export const TOKEN_PREFIX = 'sf_live_';

/**
 * Compares a bearer token in constant time: both sides are hashed first so
 * neither the length nor a common prefix leaks through timing.
 */
export function tokenMatches(expected: string, presented: string): boolean {
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(presented).digest();
  return timingSafeEqual(a, b);
}

/** Checks an `Authorization` header value; throws 401 with a reason otherwise. */
export function checkAuthorization(expected: string | null, header: string | undefined): void {
  if (expected === null) return; // --insecure-no-auth, loopback only
  if (!header) throw new SandforgeError('unauthorized', 'missing Authorization header: send "Authorization: Bearer <token>"');
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) throw new SandforgeError('unauthorized', 'Authorization header must be "Bearer <token>"');
  if (!tokenMatches(expected, m[1]!)) throw new SandforgeError('unauthorized', 'invalid token');
}

/** Short, non-reversible id of a token for logs and audit (never the token itself). */
export function tokenId(token: string): string {
  return `tok_${createHash('sha256').update(token).digest('hex').slice(0, 12)}`;
}
