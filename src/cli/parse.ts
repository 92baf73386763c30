import { SandforgeError } from '../shared/errors.js';

/** Parses a whole number in [min, max] for a CLI option, with a message naming the option. */
/** Commander parser for a repeatable option: collects every value. */
export const collect = (v: string, prev: string[]): string[] => [...prev, v];

export function intOption(name: string, min: number, max: number) {
  return (raw: string): number => {
    if (!/^\d+$/.test(raw.trim())) throw new SandforgeError('invalid_argument', `${name} must be a whole number, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) throw new SandforgeError('invalid_argument', `${name} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

/** Collects repeated `-e KEY=VALUE` into a record. */
export function envOption(raw: string, prev: Record<string, string> = {}): Record<string, string> {
  const eq = raw.indexOf('=');
  if (eq <= 0) throw new SandforgeError('invalid_argument', `-e expects KEY=VALUE, got "${raw}"`);
  const key = raw.slice(0, eq);
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new SandforgeError('invalid_argument', `invalid environment variable name "${key}"`);
  return { ...prev, [key]: raw.slice(eq + 1) };
}

/** One argument with shell syntax runs under `sh -c`; several run as argv. */
export function commandSpec(rawWords: string[]): { argv: string[] } | { shell: string } {
  // With pass-through options commander keeps a `--` that follows a positional argument.
  const words = rawWords[0] === '--' ? rawWords.slice(1) : rawWords;
  if (words.length === 0) throw new SandforgeError('invalid_argument', 'missing command: sandforge run [options] -- <command...>');
  if (words.length === 1 && /[\s|&;<>()$`\\"'*?~]/.test(words[0]!)) return { shell: words[0]! };
  return { argv: words };
}
