import type { FastifyInstance } from 'fastify';
import { listImages } from '../../image/store.js';
import { InfoResponse, type InfoResponse as Info } from '../../shared/api-types.js';
import { VERSION } from '../../shared/version.js';
import { hostCgroupStatus } from '../../vmm/host-cgroup.js';
import type { SandboxManager } from '../../sandbox/sandbox-manager.js';
import type { Runtime } from '../../sandbox/local-runtime.js';

export function infoRoutes(app: FastifyInstance, manager: SandboxManager, runtime: Runtime, openapi: () => unknown): void {
  app.get('/healthz', { schema: { summary: 'Liveness (no auth)' } }, async () => ({ ok: true }));
  app.get('/v1/openapi.json', { schema: { summary: 'This API as OpenAPI 3.1' } }, async () => openapi());
  app.get(
    '/v1/info',
    { schema: { summary: 'Version, acceleration, images, templates, capacity, counters', response: { 200: InfoResponse } } },
    async (): Promise<Info> => {
      const images = await listImages(runtime.dirs.imagesDir).catch(() => []);
      const l = manager.limits;
      return {
        version: VERSION,
        acceleration: { accel: runtime.accel.accel, kvm: runtime.accel.kvm, reason: runtime.accel.reason },
        images: images.map((i) => ({ name: i.manifest.name, id: i.manifest.id, kernel_release: i.manifest.kernel_release })),
        templates: [...runtime.templates.builds.values()].map((b) => ({
          key: b.key,
          image: b.shape.image,
          cpu: b.shape.cpus,
          memory_mb: b.shape.memoryMb,
          state: b.state,
          ...(b.message ? { message: b.message } : {}),
        })),
        capacity: {
          sandboxes: manager.runningCount,
          max_sandboxes: l.maxSandboxes,
          max_cpu: l.maxCpu,
          max_memory_mb: l.maxMemoryMb,
          max_disk_mb: l.maxDiskMb,
          max_timeout_seconds: l.maxTimeoutSeconds,
        },
        policy: manager.policySummary(runtime),
        host_cgroup: hostCgroupStatus(),
        counters: { ...manager.counters },
      };
    },
  );
}
