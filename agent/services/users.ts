/** Resolves exec users through /etc/passwd. */
import { readFileSync } from 'node:fs';
import { AgentFailure } from '../http.js';

export interface UserInfo {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

function parsePasswd(text: string): UserInfo[] {
  const out: UserInfo[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || line.startsWith('#')) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    out.push({ name: f[0]!, uid, gid, home: f[5] || '/', shell: f[6] || '/bin/sh' });
  }
  return out;
}

/**
 * `user` is a name, a numeric string or a uid; undefined means the agent's own
 * user. A uid without a passwd entry runs with gid = uid and HOME=/.
 */
export function resolveUser(user: string | number | undefined, passwdPath = '/etc/passwd'): UserInfo {
  let entries: UserInfo[] = [];
  try {
    entries = parsePasswd(readFileSync(passwdPath, 'utf8'));
  } catch {
    // no passwd file: only numeric users resolve
  }
  const self = process.getuid?.() ?? 0;
  const wanted = user === undefined ? self : typeof user === 'number' || /^[0-9]+$/.test(user) ? Number(user) : user;
  if (typeof wanted === 'number') {
    const e = entries.find((u) => u.uid === wanted);
    if (e) return e;
    return {
      name: String(wanted),
      uid: wanted,
      gid: wanted === self ? (process.getgid?.() ?? wanted) : wanted,
      home: '/',
      shell: '/bin/sh',
    };
  }
  const e = entries.find((u) => u.name === wanted);
  if (!e) throw new AgentFailure('not_found', `user ${wanted} not found in ${passwdPath}`);
  return e;
}
