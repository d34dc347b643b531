// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Giving up at a deadline: the chains a drain still waits for, and, at a
// shutdown, those whose handler still runs. The books are done first for
// every chain given up on (its state, the counts, the drains); only then
// are their signals aborted, which runs user code (abort listeners) that may
// end other drains, and the runner frees their slots, which starts the next
// queued chains.

import { type Chain, nameOf } from "./_chain.ts";
import type { ChainList } from "./_chain_list.ts";
import type { Drains } from "./_drain.ts";
import { abortTask } from "./_report.ts";
import type { Tally } from "./_tally.ts";
import type { DrainResult } from "../api/task_controls.ts";

/**
 * Abandons the live chains up to sequence `last`, aborting their signals
 * with `reason`. Returns how many slots they held.
 */
export function giveUpLive(
  live: ChainList,
  last: number,
  reason: unknown,
  tally: Tally,
  drains: Drains,
): number {
  const given: Chain[] = [];
  let slots = 0;
  // The live list is in sequence order: those up to `last` come first.
  while (live.first !== undefined && live.first.sequence <= last) {
    const chain = live.first;
    const { state } = chain;
    // One that may be in an attempt gets a signal, to tell it to stop.
    if (state === "running" || state === "storing") void chain.signal;
    const names = chain.unfinished();
    chain.moveTo("abandoned");
    if (state === "running") tally.running--;
    if (state === "storing") tally.storing -= names.length;
    if (state === "running" || state === "storing") slots++;
    tally.dropped("abandoned", names.length);
    drains.abandoned(chain.sequence, names, state === "storing");
    live.remove(chain);
    drains.ended(chain.sequence);
    given.push(chain);
  }
  for (const chain of given) {
    // Its running attempt, its waits, a backend's attempts to store it.
    const { controller, head } = chain;
    if (controller === undefined) continue;
    abortTask(controller, reason, {
      name: head === undefined ? "anonymous" : nameOf(head),
      index: chain.position,
      attempt: 1,
      request: chain.request,
      delivered: chain.delivered,
    });
  }
  return slots;
}

/**
 * Abandons the chains whose handler still runs (at a shutdown deadline,
 * their responses will not go out), adding them to a drain's `result`.
 */
export function giveUpOpen(
  open: ChainList,
  tally: Tally,
  result: DrainResult,
): DrainResult {
  const abandonedTasks = { ...result.abandonedTasks };
  let abandoned = result.abandoned;
  while (open.first !== undefined) {
    const chain = open.first;
    open.remove(chain);
    const names = chain.unfinished();
    chain.moveTo("abandoned");
    tally.dropped("abandoned", names.length);
    for (const name of names) {
      abandonedTasks[name] = (abandonedTasks[name] ?? 0) + 1;
    }
    abandoned += names.length;
  }
  return { ...result, abandoned, abandonedTasks };
}
