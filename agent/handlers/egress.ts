/** /v1/egress/listen and /v1/egress/accept: the guest end of the egress tunnel. */
import { constants, type ServerHttp2Stream } from 'node:http2';
import { checkEgressListenRequest, type EgressListenResponse } from '../../src/shared/protocol.js';
import type { AgentContext } from '../context.js';
import { AgentFailure, readJson, sendJson } from '../http.js';

/** After the guest socket closed, how long the stream may stay open for the host to finish, ms. */
const GONE_GRACE_MS = 2000;

export async function egressListenRoute(stream: ServerHttp2Stream, ctx: AgentContext): Promise<void> {
  const req = await readJson(stream, checkEgressListenRequest);
  let r: EgressListenResponse;
  try {
    r = await ctx.egress.listen(req.port);
  } catch (err) {
    throw new AgentFailure('conflict', `cannot listen on 127.0.0.1:${req.port}: ${(err as Error).message}`);
  }
  ctx.log(`egress proxy port listening on ${r.address}:${r.port}`);
  sendJson(stream, 200, r);
}

/**
 * Held open until a guest process connects; then the stream is the tunnel:
 * request body → guest socket, guest socket → response body.
 */
export async function egressAcceptRoute(stream: ServerHttp2Stream, ctx: AgentContext): Promise<void> {
  if (!ctx.egress.listening) throw new AgentFailure('conflict', 'egress is not enabled in this sandbox');
  const claim = ctx.egress.claim();
  const onGone = () => claim.cancel();
  stream.once('close', onGone);
  const sock = await claim.socket;
  stream.off('close', onGone);
  if (!sock) return; // the host gave up this accept
  if (stream.destroyed || stream.closed) {
    ctx.egress.giveBack(sock); // the host's session went away (e.g. a supervisor restart): the next accept takes it
    return;
  }
  stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
  sock.pipe(stream);
  stream.pipe(sock);
  sock.resume();
  // The guest socket is gone: end the stream after its data (END_STREAM), then reset it shortly after so the
  // host drops its side even if the upstream would keep a half-closed connection open. A reset socket resets at once.
  sock.once('close', (hadError) => {
    if (stream.destroyed) return;
    if (hadError) return void stream.close(constants.NGHTTP2_CANCEL);
    if (!stream.writableEnded) stream.end();
    setTimeout(() => {
      if (!stream.destroyed) stream.close();
    }, GONE_GRACE_MS).unref();
  });
  stream.once('close', () => sock.destroy());
}
