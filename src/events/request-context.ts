import { AsyncLocalStorage } from 'node:async_hooks';

/** Who is acting and in which request; set by the API layer, read where audit rows are written. */
export interface RequestContext {
  /** `tok_…` id of the bearer token (never the token), `anonymous` without auth. */
  actor: string;
  request_id: string | null;
}

export const requestContext = new AsyncLocalStorage<RequestContext>();
