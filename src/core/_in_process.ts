// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The chains a request's first chain makes, besides it. Its in-process
// chain, beside the one a backend takes: what `tasks.inProcess` is in a
// handler with a backend. It is made only when a handler asks for it, so
// that a request that never does allocates nothing for it, and it is an
// ordinary chain of the same runner (its limits, hooks, timeouts, retries,
// drains and shutdown), marked to run here: the runner never hands it to
// the backend. The request scope schedules it with its request's other
// chain (_scope.ts), or discards it with it. And the successor that a task
// added to an ended chain starts.

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

/**
 * Makes the chain that a task added to `ended` starts: a chain of its own
 * for the same request, owned by `owner`, which runs as soon as it can.
 */
export function successorOf(ended: Chain, owner: ChainOwner): Chain {
  const chain = new Chain();
  chain.owner = owner;
  chain.facade = ended.facade;
  chain.method = ended.method;
  chain.url = ended.url;
  chain.delivered = ended.delivered;
  if (ended.trace !== undefined) chain.trace = ended.trace;
  chain.runsHere = ended.runsHere;
  chain.inProcessChain = ended.inProcessChain;
  // Its tasks are numbered after the request's earlier ones.
  chain.added = chain.position = ended.added;
  chain.moveTo("returned");
  return chain;
}
