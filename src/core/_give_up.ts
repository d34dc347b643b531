// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Giving up at a deadline: the chains a drain still waits for, and, at a
// shutdown, those whose handler still runs. The books are done first for
// every chain given up on (the runner's `close`: its state, the counts, the
// drains, its list, its slot); only then are their signals aborted, which
// runs user code (abort listeners) that may end other drains. The runner
// holds the slots freed until then, so that no queued chain starts before
// the deadline has given up on all it had to.

import type { Chain, ChainState } from "./_chain.ts";
import { nameOf } from "./_task.ts";
import type { ChainList } from "./_chain_list.ts";
import { abortTask } from "./_report.ts";
import type { DrainResult } from "../api/task_controls.ts";

/** The states of a chain in the runner's live list. */
const LIVE: ReadonlySet<ChainState> = new Set<ChainState>([
  "waiting",
  "queued",
  "running",
  "storing",
]);

/**
 * Abandons the live chains up to sequence `last`: `close` ends each (and
 * takes it off `live`), then their signals are aborted with `reason`.
 */
export function giveUpLive(
  live: ChainList,
  last: number,
  reason: unknown,
  close: (chain: Chain) => void,
): void {
  // Not in sequence order (a keyed task's chain takes its request's), so
  // the whole list is looked at, before any chain leaves it.
  const due: Chain[] = [];
  for (let chain = live.first; chain !== undefined; chain = chain.next) {
    if (chain.sequence <= last) due.push(chain);
  }
  const given: Chain[] = [];
  for (const chain of due) {
    const { state } = chain;
    // Ended meanwhile: a keyed task's, with the request it waited for.
    if (!LIVE.has(state)) continue;
    // One that may be in an attempt gets a signal, to tell it to stop.
    if (state === "running" || state === "storing") void chain.signal;
    close(chain);
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
}

/**
 * Abandons the chains whose handler still runs (at a shutdown deadline,
 * their responses will not go out): `close` ends each (and takes it off
 * `open`), and their tasks are added to a drain's `result`.
 */
export function giveUpOpen(
  open: ChainList,
  result: DrainResult,
  close: (chain: Chain) => void,
): DrainResult {
  const abandonedTasks = { ...result.abandonedTasks };
  let abandoned = result.abandoned;
  while (open.first !== undefined) {
    const chain = open.first;
    close(chain);
    const names = chain.unfinished();
    for (const name of names) {
      abandonedTasks[name] = (abandonedTasks[name] ?? 0) + 1;
    }
    abandoned += names.length;
  }
  return { ...result, abandoned, abandonedTasks };
}
