// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// How one store changes one lane (_lane.ts): what it reads of the lane, and
// what it writes, checked against what it read, so that the decisions each
// `onDuplicate` makes hold in the commit or are made again (_keyed.ts).

import {
  activate,
  enqueueLane,
  type Head,
  type LaneEntry,
  type LaneRecord,
  started,
  watchDelay,
} from "./_lane.ts";
import type { Claimant } from "./_claim.ts";
import type { Progress, Step } from "./_step.ts";
import type { OnDuplicate } from "../api/define_task.ts";

/** A keyed task to store: its step, and what its definition says of duplicates. */
export interface KeyedItem {
  step: Step;
  onDuplicate: OnDuplicate;
  delay: number;
  /** Its position in its chain, for the store's result; none for a retry. */
  position?: number;
}

/** A lane as one store changes it, and what it writes. */
export interface Plan {
  /** Its positions deduplicated, and the tasks of earlier stores it replaced. */
  deduplicated: number[];
  replaced: LaneEntry[];
  /**
   * The head of an earlier store that this one put tasks behind, which the
   * process may watch too: Deno KV tells a process of the messages another
   * queued (the head's own watch) only about once a minute.
   */
  behind: Head | undefined;
  /** Adds the plan to `operation`, with a watch of `behind` if `watch`. */
  write(operation: Deno.AtomicOperation, watch: boolean): Deno.AtomicOperation;
}

/**
 * Reads one lane, and adds its items to it as each one's `onDuplicate`
 * says: as its head when the lane has none (or only one whose chain
 * ended, with nothing behind it); otherwise behind the last entry, unless
 * a task waits (a head not started, or an entry behind it), when "skip"
 * adds nothing and "replace" takes the place of the last task waiting.
 */
export async function planLane(
  consumer: Claimant,
  items: readonly KeyedItem[],
  now: number,
): Promise<Plan> {
  const { kv, keys } = consumer;
  const { name } = items[0]!.step.tasks[0]!;
  const key = items[0]!.step.key!;
  const record = await kv.get<LaneRecord>(keys.lane(name, key));
  const checks: Deno.AtomicCheck[] = [record];
  const deletes: Deno.KvKey[] = [];
  /** The entries this store writes, with their tasks' positions. */
  const entries = new Map<
    number,
    { entry: LaneEntry; position: number | undefined }
  >();
  const deduplicated: number[] = [];
  const replaced: LaneEntry[] = [];
  let lane = record.value ?? undefined;
  let head: "ended" | "waiting" | "started" | undefined;
  let activated: LaneEntry | undefined;
  let progress: Deno.KvEntryMaybe<Progress> | undefined;
  let addedBehind = false;
  if (lane !== undefined) {
    progress = await kv.get<Progress>(keys.progress(lane.active));
    checks.push(progress);
    head = progress.value === null
      ? "ended"
      : started(progress.value)
      ? "started"
      : "waiting";
  }
  for (const item of items) {
    const entry: LaneEntry = { step: item.step, due: now + item.delay };
    const behind = lane === undefined ? 0 : lane.tail - lane.seq - 1;
    if (lane === undefined || (head === "ended" && behind === 0)) {
      // The ended head's entry goes with it: its "ended" message will
      // find another head, and leave the lane as it is.
      if (lane !== undefined) deletes.push(keys.lane(name, key, lane.seq));
      const seq = lane?.tail ?? 0;
      lane = { active: item.step.chain, seq, tail: seq + 1 };
      head = "waiting";
      entries.set(seq, { entry: activated = entry, position: item.position });
      continue;
    }
    const waits = head === "waiting" || behind > 0;
    if (item.onDuplicate === "skip" && waits) {
      if (item.position !== undefined) deduplicated.push(item.position);
      continue;
    }
    if (item.onDuplicate === "replace" && waits) {
      const seq = behind > 0 ? lane.tail - 1 : lane.seq;
      const ours = entries.get(seq);
      if (ours !== undefined) {
        if (ours.position !== undefined) deduplicated.push(ours.position);
      } else {
        const old = await kv.get<LaneEntry>(keys.lane(name, key, seq));
        checks.push(old);
        if (old.value !== null) replaced.push(old.value);
        // A stored head loses its step: its messages find nothing to do.
        if (seq === lane.seq) deletes.push(keys.progress(lane.active));
      }
      entries.set(seq, { entry, position: item.position });
      if (seq === lane.seq) {
        lane = { ...lane, active: item.step.chain };
        activated = entry;
      } else addedBehind = true;
      continue;
    }
    addedBehind = true;
    entries.set(lane.tail, { entry, position: item.position });
    lane = { ...lane, tail: lane.tail + 1 };
  }
  const final = lane!;
  // Behind the head it read, which lives: not one this store made.
  const watched = addedBehind && record.value?.active === final.active &&
      progress?.value
    ? { name, key, chain: final.active }
    : undefined;
  return {
    deduplicated,
    replaced,
    behind: watched,
    write: (operation, watch) => {
      for (const check of checks) operation = operation.check(check);
      if (final !== record.value) {
        operation = operation.set(record.key, final);
      }
      for (const [seq, { entry }] of entries) {
        operation = operation.set(keys.lane(name, key, seq), entry);
      }
      for (const deleted of deletes) operation = operation.delete(deleted);
      if (watch && watched !== undefined) {
        const delay = watchDelay(progress!.value!, now, consumer.lease);
        operation = enqueueLane(operation, consumer, watched, "watch", delay);
      }
      return activated === undefined
        ? operation
        : activate(operation, consumer, activated, now);
    },
  };
}
