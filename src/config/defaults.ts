import { cpus } from 'node:os';

/** Defaults for a sandbox's shape, shared by the CLI, API and supervisor. */
export const DEFAULT_IMAGE = 'default';
export const DEFAULT_CPUS = 2;
export const DEFAULT_MEMORY_MB = 1024;
export const DEFAULT_DISK_MB = 4096;
/** Host-derived ceilings used when the operator sets none. */
export const HOST_CPUS = Math.max(1, cpus().length);
export const MAX_MEMORY_MB_DEFAULT = 16384;
export const MAX_DISK_MB_DEFAULT = 65536;
