import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { SandforgeError, type ErrorCode } from '../shared/errors.js';

/** Maps Fastify's own error codes onto ours, so every failure has the one envelope. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'bad_request',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'bad_request',
  FST_ERR_CTP_INVALID_JSON_BODY: 'bad_request',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad_request',
  FST_ERR_VALIDATION: 'invalid_argument',
};

export function toApiError(err: unknown): SandforgeError {
  if (err instanceof SandforgeError) return err;
  const fe = err as FastifyError;
  if (fe && typeof fe === 'object') {
    if (fe.validation) {
      const v = fe.validation[0];
      const where = v ? `${fe.validationContext ?? 'body'}${v.instancePath || ''}` : (fe.validationContext ?? 'request');
      let msg = v?.message ?? fe.message;
      if (v?.keyword === 'additionalProperties')
        msg = `unknown field "${String((v.params as { additionalProperty?: string }).additionalProperty)}"`;
      return new SandforgeError('invalid_argument', `${where}: ${msg}`);
    }
    if (fe.code && FASTIFY_CODES[fe.code]) {
      const code = FASTIFY_CODES[fe.code]!;
      const message = code === 'bad_request' && /JSON/i.test(fe.message) ? `malformed JSON body: ${fe.message}` : fe.message;
      return new SandforgeError(code, message);
    }
    if (fe.statusCode === 413) return new SandforgeError('payload_too_large', fe.message);
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) return new SandforgeError('bad_request', fe.message);
  }
  return new SandforgeError('internal', 'internal error', undefined, { cause: err });
}

export function errorHandler(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const e = toApiError(err);
  if (e.code === 'internal') req.log.error({ err }, 'unhandled error');
  else req.log.info({ code: e.code, msg: e.message }, 'request failed');
  void reply.status(e.status).send(e.toBody(req.id));
}
