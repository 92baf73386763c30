/** The names a program goes by once PATH and symlinks are followed, for the command policy. */
import { accessSync, constants, lstatSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, resolve } from 'node:path';

const MAX_HOPS = 40;

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** `file` as sent, each symlink hop, and the final file's name. */
export function programNames(file: string, pathVar: string, cwd: string): string[] {
  const names = [basename(file)];
  let abs: string | null = null;
  if (file.includes('/')) abs = isAbsolute(file) ? file : resolve(cwd, file);
  else {
    for (const dir of pathVar.split(':')) {
      if (!dir) continue;
      const cand = resolve(isAbsolute(dir) ? dir : resolve(cwd, dir), file);
      if (executable(cand)) {
        abs = cand;
        break;
      }
    }
  }
  if (!abs) return names;
  for (let i = 0; i < MAX_HOPS; i++) {
    let st;
    try {
      st = lstatSync(abs);
    } catch {
      break;
    }
    if (!st.isSymbolicLink()) break;
    abs = resolve(dirname(abs), readlinkSync(abs));
    names.push(basename(abs));
  }
  try {
    names.push(basename(realpathSync(abs)));
  } catch {
    // missing: spawn reports it
  }
  return [...new Set(names)];
}
