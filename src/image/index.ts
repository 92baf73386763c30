/** Image builder and store: what the CLI, supervisor and VMM driver import. */
export { type ImageManifest, IMAGE_FILES, MANIFEST_SCHEMA } from './manifest.js';
export { loadImage, listImages, removeImage, assertImageName, DEFAULT_IMAGE, type ImageEntry } from './store.js';
export { buildImage, computeImageId, type BuildOptions, type BuildProgress, type BuildResult } from './builder.js';
export { ensureAgentDisk, agentsDir, type AgentDiskOptions } from './agent-disk.js';
export { defaultSpec, type ImageSpec } from './spec.js';
