/** What replaces a secret value wherever it would otherwise be recorded. */
export const REDACTED = '[REDACTED]';

/**
 * Replaces every occurrence of any secret value in `text`. Longer values go
 * first so one secret that contains another is removed whole.
 */
export function redactText(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of [...secrets].filter((v) => v.length > 0).sort((a, b) => b.length - a.length)) out = out.split(s).join(REDACTED);
  return out;
}

/** The keys of a secret env map, values redacted (what audit rows keep). */
export function redactEnv(env: Record<string, string> | undefined): Record<string, string> | undefined {
  if (!env) return undefined;
  return Object.fromEntries(Object.keys(env).map((k) => [k, REDACTED]));
}
