/**
 * Command policy: optional allow and deny lists of program names. A guard
 * rail against mistakes, not a boundary: a permitted interpreter can run
 * anything, and a guest that owns its root can rename programs. Shared by
 * the host (which judges the name as sent) and the agent (which judges the
 * name after PATH lookup and every symlink hop).
 */

export interface CommandPolicy {
  /** When non-empty, a program must match one of these. */
  allow: string[];
  /** A program matching one of these is refused. */
  deny: string[];
}

export const PROGRAM_NAME_RE = /^[A-Za-z0-9._+-]{1,128}$/;

/** `python3` matches `python3` and versioned names such as `python3.11` or `node-20`. */
export function programMatches(name: string, entry: string): boolean {
  if (name === entry) return true;
  if (!name.startsWith(entry)) return false;
  return /^[.-]?[0-9][0-9.]*$/.test(name.slice(entry.length));
}

/**
 * Judges the names a command goes by (as sent, each symlink hop, the final
 * file). Refused if any name is denied, or if an allow list exists and no
 * name is on it. Returns the refusal message, or null.
 */
export function judgeProgram(names: readonly string[], p: CommandPolicy): string | null {
  const uniq = [...new Set(names.filter(Boolean))];
  for (const n of uniq) {
    const hit = p.deny.find((d) => programMatches(n, d));
    if (hit) return `command policy: program "${n}" is denied (--deny-command ${hit})`;
  }
  if (p.allow.length && !uniq.some((n) => p.allow.some((a) => programMatches(n, a)))) {
    return `command policy: program "${uniq.join('" → "')}" is not on the allow list (--allow-command)`;
  }
  return null;
}

/** The basename of a path-ish program. */
export function baseName(p: string): string {
  const i = p.replace(/\/+$/, '').lastIndexOf('/');
  return i >= 0 ? p.slice(i + 1) : p;
}

/**
 * The first program of a shell script, when it can be read without a shell
 * (leading `VAR=value` assignments skipped); null if quoting or expansion
 * hides it. Best effort: the policy also always judges `sh` itself.
 */
export function firstShellWord(script: string): string | null {
  const words = script.trimStart().split(/[\s;&|()<>]+/);
  for (const w of words) {
    if (!w) return null;
    if (/^[A-Za-z_][A-Za-z0-9_]*=/.test(w) && !/['"`$\\]/.test(w)) continue;
    if (/['"`$\\*?[\]{}~]/.test(w)) return null;
    return w;
  }
  return null;
}

/** Names the host can judge from a request alone. */
export function requestedProgramNames(spec: { argv?: string[]; shell?: string }): string[] {
  if (spec.argv) return [baseName(spec.argv[0]!)];
  const first = spec.shell !== undefined ? firstShellWord(spec.shell) : null;
  return ['sh', ...(first ? [baseName(first)] : [])];
}
