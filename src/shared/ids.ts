import { randomBytes } from 'node:crypto';

/** Sandbox ids: `sb_` + 20 lowercase hex chars; the form is checked wherever ids come in. */
export function newSandboxId(): string {
  return `sb_${randomBytes(10).toString('hex')}`;
}

export const SANDBOX_ID_RE = /^sb_[0-9a-f]{20}$/;

export function isSandboxId(x: string): boolean {
  return SANDBOX_ID_RE.test(x);
}
