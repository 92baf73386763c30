/**
 * Host mount policy: decides, before anything boots, whether the host folders
 * a create request names may be exported into a sandbox.
 *
 * Rules, in order (the first that fails refuses the request with
 * `policy_denied`, naming the rule):
 * - at most {@link SHARE_SLOTS} mounts (one 9p slot of the template each);
 * - host_path is absolute, has no `..` segment and no NUL;
 * - host_path is resolved through symlinks (fs.realpath); a missing leaf
 *   resolves through its nearest existing ancestor, the rest appended;
 * - the resolved path sits under an allowed prefix (`--allow-mount`,
 *   themselves realpath'd); none configured refuses every mount;
 * - no segment of the given or the resolved path is a blocked name
 *   (`--block-mount-name`, case-insensitive);
 * - guest_path is absolute, without `..`, not a system path
 *   ({@link guestMountPathProblem}, shared with the agent), and unique.
 */
import { realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, sep } from 'node:path';
import { SandforgeError } from '../shared/errors.js';
import { guestMountPathProblem, normalizeGuestPath } from '../shared/protocol.js';

/** The template's 9p slots (sf0..sf3); keep in step with SHARE_SLOTS in vmm/microvm.ts. */
export const MAX_MOUNTS = 4;

export const DEFAULT_BLOCKED_MOUNT_NAMES = [
  '.ssh',
  '.aws',
  '.gnupg',
  '.kube',
  '.docker',
  'secrets',
  'credentials',
  '.git-credentials',
  '.netrc',
] as const;

export interface MountPolicyConfig {
  /** Host folders under which mounts are allowed. Empty: every mount is refused. */
  allowPrefixes: readonly string[];
  /** Path segments that refuse a mount wherever they appear (case-insensitive). */
  blockedNames: readonly string[];
  /** How the allow rule is configured, for messages (e.g. "--allow-mount"). */
  allowFlag?: string;
  /** How the blocked names are configured, for messages. */
  blockFlag?: string;
}

export interface MountInput {
  host_path: string;
  guest_path: string;
  read_only?: boolean;
}

export interface AcceptedMount {
  /** 9p slot tag, sf<i> for the i-th mount. */
  tag: string;
  /** The host path as given. */
  requested: string;
  /** The host path after symlink resolution: what QEMU exports. */
  hostPath: string;
  guestPath: string;
  readOnly: boolean;
}

function deny(message: string, rule: string, details: Record<string, unknown> = {}): SandforgeError {
  return new SandforgeError('policy_denied', `mount refused: ${message}`, { rule, ...details });
}

/**
 * realpath(p), or for a missing leaf: realpath of the nearest existing
 * ancestor with the missing rest appended. The rest never holds `..`.
 */
export async function resolveHostPath(p: string): Promise<string> {
  const rest: string[] = [];
  let cur = p;
  for (;;) {
    try {
      const real = await realpath(cur);
      if (rest.some((s) => s === '..')) throw deny(`${p} has '..' in its missing part`, 'dotdot');
      return rest.length ? join(real, ...rest) : real;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
      const parent = dirname(cur);
      if (parent === cur) throw err;
      rest.unshift(basename(cur));
      cur = parent;
    }
  }
}

function segments(p: string): string[] {
  return p.split(sep).filter((s) => s !== '');
}

function under(path: string, prefix: string): boolean {
  if (prefix === '/') return true;
  return path === prefix || path.startsWith(`${prefix}/`);
}

/** Decides a request's mounts: the accepted mounts in slot order, or a `policy_denied` error. */
export async function decideMounts(mounts: readonly MountInput[], cfg: MountPolicyConfig): Promise<AcceptedMount[]> {
  if (mounts.length === 0) return [];
  const allowFlag = cfg.allowFlag ?? '--allow-mount';
  const blockFlag = cfg.blockFlag ?? '--block-mount-name';
  if (mounts.length > MAX_MOUNTS) throw deny(`${mounts.length} mounts requested; at most ${MAX_MOUNTS} are allowed`, 'max_mounts');
  if (cfg.allowPrefixes.length === 0) {
    throw deny(
      `host mounts are disabled on this server: no allowed prefix is configured (start the supervisor with ${allowFlag} PREFIX)`,
      'allow_prefix',
    );
  }
  const prefixes = await Promise.all(cfg.allowPrefixes.map((p) => resolveHostPath(p)));
  const blocked = new Set(cfg.blockedNames.map((n) => n.toLowerCase()));
  const seenGuest: string[] = [];
  const out: AcceptedMount[] = [];
  for (const [i, m] of mounts.entries()) {
    const given = m.host_path;
    if (typeof given !== 'string' || given.includes('\0')) throw deny('host_path must be a string without NUL', 'host_path');
    if (!isAbsolute(given)) throw deny(`host_path ${JSON.stringify(given)} is not absolute`, 'absolute');
    if (segments(given).includes('..')) throw deny(`host_path ${given} has a '..' segment`, 'dotdot');
    const blockedIn = (p: string) => segments(p).find((s) => blocked.has(s.toLowerCase()));
    const hitGiven = blockedIn(given);
    if (hitGiven)
      throw deny(`${given} is under a blocked name ${JSON.stringify(hitGiven)} (${blockFlag})`, 'blocked_name', { name: hitGiven });
    const resolved = await resolveHostPath(given);
    const hitResolved = blockedIn(resolved);
    if (hitResolved) {
      throw deny(`${given} resolves to ${resolved}, under a blocked name ${JSON.stringify(hitResolved)} (${blockFlag})`, 'blocked_name', {
        name: hitResolved,
      });
    }
    if (!prefixes.some((p) => under(resolved, p))) {
      const shown = resolved === given ? given : `${given} (resolves to ${resolved})`;
      throw deny(`${shown} is outside every allowed prefix (${allowFlag}: ${prefixes.join(', ')})`, 'allow_prefix');
    }
    const problem = guestMountPathProblem(m.guest_path);
    if (problem) throw deny(`guest_path ${JSON.stringify(m.guest_path)}: ${problem}`, 'guest_path');
    const guest = normalizeGuestPath(m.guest_path);
    for (const g of seenGuest) {
      if (g === guest) throw deny(`guest_path ${guest} is used by two mounts`, 'duplicate_guest_path');
      if (under(guest, g) || under(g, guest)) throw deny(`guest paths ${g} and ${guest} overlap`, 'overlapping_guest_path');
    }
    seenGuest.push(guest);
    out.push({ tag: `sf${i}`, requested: given, hostPath: resolved, guestPath: guest, readOnly: m.read_only ?? false });
  }
  return out;
}
