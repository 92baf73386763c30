import { totalmem } from 'node:os';
import { HOST_CPUS, MAX_DISK_MB_DEFAULT } from '../config/defaults.js';
import type { CreateSandboxRequest } from '../shared/api-types.js';
import { SandforgeError } from '../shared/errors.js';

/** Server-wide maxima for one sandbox and for all of them; defaults derive from the host. */
export interface Limits {
  maxCpu: number;
  maxMemoryMb: number;
  maxDiskMb: number;
  maxSandboxes: number;
  maxTimeoutSeconds: number;
}

export function defaultLimits(): Limits {
  const hostMb = Math.floor(totalmem() / 2 ** 20);
  return {
    maxCpu: HOST_CPUS,
    maxMemoryMb: Math.max(256, Math.floor(hostMb / 2)),
    maxDiskMb: MAX_DISK_MB_DEFAULT,
    maxSandboxes: 64,
    maxTimeoutSeconds: 24 * 3600,
  };
}

/** Checks a create request against the maxima; the error names the limit and its value. */
export function checkCreateLimits(req: CreateSandboxRequest, limits: Limits): void {
  const over = (field: string, value: number, max: number, flag: string) =>
    new SandforgeError('limit_exceeded', `${field} ${value} exceeds the server limit of ${max} (${flag})`, {
      limit: field,
      max,
      requested: value,
    });
  if (req.cpu !== undefined && req.cpu > limits.maxCpu) throw over('cpu', req.cpu, limits.maxCpu, '--max-cpu');
  if (req.memory_mb !== undefined && req.memory_mb > limits.maxMemoryMb)
    throw over('memory_mb', req.memory_mb, limits.maxMemoryMb, '--max-memory-mb');
  if (req.disk_mb !== undefined && req.disk_mb > limits.maxDiskMb) throw over('disk_mb', req.disk_mb, limits.maxDiskMb, '--max-disk-mb');
  if (req.timeout_seconds !== undefined && req.timeout_seconds > limits.maxTimeoutSeconds)
    throw over('timeout_seconds', req.timeout_seconds, limits.maxTimeoutSeconds, '--max-timeout-seconds');
}
