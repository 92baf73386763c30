export { AgentClient, type AgentConnectOptions, type RunOptions, type RunResult, type WriteFileOptions } from './agent-client.js';
export { ExecHandle, type ExecHandlers, type ExecResult } from './exec-handle.js';
