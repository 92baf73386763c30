import Database from 'better-sqlite3';
import { chmodSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { NetworkMode, Sandbox, SandboxStatus } from '../shared/api-types.js';

/** A sandbox as stored: the public fields plus what the supervisor needs to find its VM again. */
export interface SandboxRow {
  id: string;
  status: SandboxStatus;
  image: string;
  cpu: number;
  memory_mb: number;
  disk_mb: number;
  network: NetworkMode;
  created_at: string;
  expires_at: string | null;
  metadata: Record<string, string>;
  env: Record<string, string>;
  template_key: string | null;
  vm_dir: string | null;
  qemu_pid: number | null;
  start: Sandbox['start'] | null;
  message: string | null;
  ended_at: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS sandboxes (
  id TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  image TEXT NOT NULL,
  cpu INTEGER NOT NULL,
  memory_mb INTEGER NOT NULL,
  disk_mb INTEGER NOT NULL,
  network TEXT NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT,
  metadata TEXT NOT NULL,
  env TEXT NOT NULL,
  template_key TEXT,
  vm_dir TEXT,
  qemu_pid INTEGER,
  start TEXT,
  message TEXT,
  ended_at TEXT
);
CREATE INDEX IF NOT EXISTS sandboxes_status ON sandboxes(status);
`;

type Raw = Omit<SandboxRow, 'metadata' | 'env' | 'start'> & { metadata: string; env: string; start: string | null };

function decode(r: Raw): SandboxRow {
  return {
    ...r,
    metadata: JSON.parse(r.metadata) as Record<string, string>,
    env: JSON.parse(r.env) as Record<string, string>,
    start: r.start ? (JSON.parse(r.start) as Sandbox['start']) : null,
  };
}

/** SQLite (WAL) state of sandboxes; synchronous calls, one writer: the supervisor. */
export class SandboxStore {
  readonly db: Database.Database;

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.db = new Database(path);
    // Sandbox env may hold credentials: the database is for the supervisor's user only.
    if (path !== ':memory:') chmodSync(path, 0o600);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
  }

  insert(row: SandboxRow): void {
    this.db
      .prepare(
        `INSERT INTO sandboxes (id, status, image, cpu, memory_mb, disk_mb, network, created_at, expires_at, metadata, env,
          template_key, vm_dir, qemu_pid, start, message, ended_at)
         VALUES (@id, @status, @image, @cpu, @memory_mb, @disk_mb, @network, @created_at, @expires_at, @metadata, @env,
          @template_key, @vm_dir, @qemu_pid, @start, @message, @ended_at)`,
      )
      .run({
        ...row,
        metadata: JSON.stringify(row.metadata),
        env: JSON.stringify(row.env),
        start: row.start ? JSON.stringify(row.start) : null,
      });
  }

  update(
    id: string,
    patch: Partial<Pick<SandboxRow, 'status' | 'template_key' | 'vm_dir' | 'qemu_pid' | 'start' | 'message' | 'ended_at'>>,
  ): void {
    const keys = Object.keys(patch) as (keyof typeof patch)[];
    if (keys.length === 0) return;
    const values: Record<string, unknown> = { id };
    for (const k of keys) values[k] = k === 'start' ? (patch.start ? JSON.stringify(patch.start) : null) : patch[k];
    this.db.prepare(`UPDATE sandboxes SET ${keys.map((k) => `${k} = @${k}`).join(', ')} WHERE id = @id`).run(values);
  }

  get(id: string): SandboxRow | undefined {
    const r = this.db.prepare('SELECT * FROM sandboxes WHERE id = ?').get(id) as Raw | undefined;
    return r ? decode(r) : undefined;
  }

  /** Sandboxes that are not over, oldest first. */
  active(): SandboxRow[] {
    return (this.db.prepare("SELECT * FROM sandboxes WHERE status IN ('creating','running') ORDER BY created_at").all() as Raw[]).map(
      decode,
    );
  }

  /** Active sandboxes plus those ended in the last `recentMs`, newest first. */
  list(recentMs = 3600_000): SandboxRow[] {
    const since = new Date(Date.now() - recentMs).toISOString();
    return (
      this.db
        .prepare("SELECT * FROM sandboxes WHERE status IN ('creating','running') OR ended_at >= ? ORDER BY created_at DESC")
        .all(since) as Raw[]
    ).map(decode);
  }

  close(): void {
    this.db.close();
  }
}
