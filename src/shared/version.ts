/** Sandforge version, reported by the CLI, `/v1/info` and the agent handshake. */
export const VERSION = '0.1.0';
