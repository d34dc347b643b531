// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV backend's producing side: the chains handed over together are
// stored in one commit, each with its progress, and their first steps
// travel together too, in as few queue messages as fit in Deno KV's 64 KiB.
// A message costs Deno KV a write of its own to deliver it and another to
// acknowledge it, each a flush to disk, and each delivery reads the whole
// queue (see enqueueMessage()): a message per chain made the queue, not the
// tasks, what bounded a listener. The consuming side (_consumer.ts) runs the
// steps of a message each on its own, as if each had come alone.

import {
  commitRetrying,
  isLocked,
  queueSteps,
  type Step,
  type StepQueue,
} from "./_step.ts";
import { cannotStore, refusesQueue } from "./_queue_support.ts";
import { type GroupCommit, groupCommit } from "../durable/_group_commit.ts";
import { NAMES_REFRESH } from "../durable/_unknown_tasks.ts";

/** Chains per commit: Deno KV allows 100 checks in an atomic operation. */
const GROUP_SIZE = 100;

/**
 * Stores the first step of each chain handed to it: chains handed over
 * together share a commit (one costs about as much as one chain, a hundred
 * in one cost a few) and their steps share messages of at most `bytes`
 * (by a bound of their weight). A group fails as a whole when a chain is already queued, or when
 * it is over Deno KV's 800 KiB per operation; it is then split down to the
 * chain at fault. Before the first, and once a day after, the names of the
 * tasks are written, with the time, for listeners that lack one to say so
 * (_listener.ts). Once a commit showed that the database cannot queue
 * messages (KV Connect, Deno Deploy), every store fails, saying why, at
 * once.
 */
export function storeSteps(
  queue: StepQueue,
  registry: ReadonlyMap<string, unknown>,
  bytes: number,
): GroupCommit<Step> {
  const { kv, keys } = queue;
  let announced = -Infinity;
  let refusal: Error | undefined;
  return groupCommit<Step>(
    async (steps) => {
      if (refusal !== undefined) throw cannotStore(refusal);
      if (Date.now() - announced >= NAMES_REFRESH) {
        const now = announced = Date.now();
        await Promise.all(
          [...registry.keys()].map((name) =>
            kv.set(keys.tasks(name), now).catch(() => {})
          ),
        );
      }
      let operation = kv.atomic();
      for (const step of steps) {
        operation = operation.check({
          key: keys.progress(step.chain),
          versionstamp: null,
        });
      }
      operation = queueSteps(operation, queue, steps, bytes);
      let committed: Deno.KvCommitResult | Deno.KvCommitError;
      try {
        committed = await commitRetrying(operation);
      } catch (error) {
        if (!refusesQueue(error)) throw error;
        refusal = error as Error;
        throw cannotStore(error);
      }
      if (!committed.ok) {
        throw new Error(
          steps.length === 1
            ? `Chain ${steps[0]!.chain} is already queued`
            : "A chain of the group is already queued",
        );
      }
    },
    GROUP_SIZE,
    // No chain is at fault when the database cannot queue, nor when it
    // stayed locked (split, each half would wait as long again): no split.
    { split: (error) => refusal === undefined && !isLocked(error) },
  );
}
