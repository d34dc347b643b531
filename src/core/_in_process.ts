// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A request's in-process chain, beside the one a backend takes: what
// `tasks.inProcess` is in a handler with a backend. It is made only when a
// handler asks for it, so that a request that never does allocates nothing
// for it, and it is an ordinary chain of the same runner (its limits, hooks,
// timeouts, retries, drains and shutdown), marked to run here: the runner
// never hands it to the backend. The request scope schedules it with its
// request's other chain (_scope.ts), or discards it with it.

import { Chain, type ChainOwner, internals } from "./_chain.ts";
// What makes a chain a BackgroundTasks, for the handler it is given to.
import "./background_tasks.ts";

/**
 * Makes the in-process chain of `durable`'s request, owned by `owner`. If
 * the handler has answered already, the chain's first task schedules it, as
 * a task added late to an ended chain does.
 */
export function openInProcess(durable: Chain, owner: ChainOwner): Chain {
  const chain = new Chain();
  chain.owner = owner;
  chain.runsHere = true;
  // Read when the request was opened: a backend weighs its URL.
  chain.method = durable.method;
  chain.url = durable.url;
  chain.delivered = durable.delivered;
  // callHandler() asked for the request's results.
  if (durable.results !== undefined) chain.results = [];
  if (durable.state !== "open") chain.moveTo("returned");
  internals.created?.(chain);
  return chain;
}
