// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What every stored task carries of its request, whatever the backend: a
// Deno KV step and a BullMQ job hold the same three fields under the same
// names, each left out when the chain has none.

import type { RequestSummary } from "../api/task_info.ts";
import type { BackendChain } from "../api/task_backend.ts";

/** A stored task's request, as a step or job holds it. */
export interface Envelope {
  request?: RequestSummary;
  delivered?: boolean;
  /** The `traceparent` of the request's span, when telemetry was on. */
  trace?: string;
}

/** What a chain's stored tasks carry of its request, its fields left out when unset. */
export function envelope(
  chain: Pick<BackendChain, "request" | "delivered" | "traceparent">,
): Envelope {
  return {
    ...(chain.request === undefined ? {} : { request: chain.request }),
    ...(chain.delivered === undefined ? {} : { delivered: chain.delivered }),
    ...(chain.traceparent === undefined ? {} : { trace: chain.traceparent }),
  };
}
