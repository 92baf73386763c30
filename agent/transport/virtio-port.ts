/** Finds and opens the agent's virtio-serial port inside the guest. */
import { openSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_PORT_NAME } from '../../src/shared/protocol.js';

const PORTS_DIR = '/sys/class/virtio-ports';

/** Returns `/dev/vportNpM` for the named port, or null if it is not there (yet). */
export function findVirtioPort(name = AGENT_PORT_NAME, portsDir = PORTS_DIR): string | null {
  let dirs: string[];
  try {
    dirs = readdirSync(portsDir);
  } catch {
    return null;
  }
  for (const d of dirs.sort()) {
    try {
      if (readFileSync(join(portsDir, d, 'name'), 'utf8').trim() === name) return join('/dev', d);
    } catch {
      // a port without a name file: not ours
    }
  }
  return null;
}

/**
 * Waits up to `timeoutMs` for the port to appear (virtio_console may still be
 * probing) and opens it read-write, blocking mode.
 */
export async function openVirtioPort(timeoutMs: number, name = AGENT_PORT_NAME): Promise<{ path: string; fd: number }> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown = null;
  for (;;) {
    const path = findVirtioPort(name);
    if (path) {
      try {
        return { path, fd: openSync(path, 'r+') };
      } catch (err) {
        lastErr = err; // EBUSY while another opener holds it, ENOENT before udev/devtmpfs catches up
      }
    }
    if (Date.now() > deadline) {
      throw new Error(`virtio port ${name} not available after ${timeoutMs} ms${lastErr ? `: ${String(lastErr)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
