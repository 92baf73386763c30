/** Turns what comes back from the guest into SandforgeErrors. */
import { SandforgeError } from '../shared/errors.js';
import { ProtocolViolation, isAgentErrorCode, type AgentError } from '../shared/protocol.js';

/** Guest-supplied text goes into logs: no control characters, bounded. */
export function sanitize(text: string, max = 1000): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').slice(0, max);
}

/**
 * An error the agent reported. Its code is kept only if the agent may report
 * it; 'internal' and anything unknown become 'agent_error'.
 */
export function fromAgentError(e: AgentError, status?: number): SandforgeError {
  const code = isAgentErrorCode(e.code) && e.code !== 'internal' ? e.code : 'agent_error';
  const details: Record<string, unknown> = { agent_code: sanitize(e.code, 64) };
  if (status !== undefined) details.agent_status = status;
  return new SandforgeError(code, `agent: ${sanitize(e.message)}`, details);
}

/** The guest broke the protocol. */
export function violation(err: unknown, what: string): SandforgeError {
  const msg = err instanceof ProtocolViolation ? err.message : err instanceof Error ? err.message : String(err);
  return new SandforgeError('agent_error', `agent sent an invalid ${what}: ${sanitize(msg)}`, undefined, { cause: err });
}

/** The channel to the agent failed (socket gone, stream reset, session closed). */
export function unavailable(err: unknown, what: string): SandforgeError {
  if (err instanceof SandforgeError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new SandforgeError('agent_unavailable', `${what}: agent connection failed: ${msg}`, undefined, { cause: err });
}
