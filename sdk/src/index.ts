/** @sandforge/sdk — TypeScript client of the Sandforge supervisor's HTTP API. */
export { Client } from './client.js';
export {
  DEFAULT_BASE_URL,
  DEFAULT_CREATE_TIMEOUT_MS,
  DEFAULT_TIMEOUT_MS,
  resolveClientConfig,
  type ClientOptions,
  type ResolvedClientConfig,
  type SdkLogger,
} from './config.js';
export {
  SandforgeApiError,
  SandforgeConnectionError,
  SandforgeError,
  SandforgeTimeoutError,
  errorFromResponse,
  isErrorCode,
  type ErrorCode,
} from './errors.js';
export type { BodyData, CallOptions } from './http.js';
export type { CommandExit } from './stream-messages.js';
export type { SignalName } from '../../src/shared/protocol.js';
export { SandboxHandle } from './sandbox/handle.js';
export { Commands, DEFAULT_COMMAND_TIMEOUT_SECONDS, type CommandOptions, type RunOptions, type StreamOptions } from './sandbox/commands.js';
export { CommandStream, type CommandStreamCallbacks } from './sandbox/command-stream.js';
export { Filesystem, type WriteResult } from './sandbox/filesystem.js';
export type {
  CreateSandboxRequest,
  DeleteResult,
  ExecuteRequest,
  ExecuteResult,
  FileEntry,
  InfoResponse,
  MountSpec,
  NetworkMode,
  Sandbox,
  SandboxStatus,
} from '../../src/shared/api-types.js';
