// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A keyed task's lane in Deno KV, as the listeners move it on. A lane (one
// per task name and key) is a record naming its head, the one task of the
// lane whose step is live (queued, delayed, running or waiting to retry),
// and entries, one per task, in the order they were stored: the head's,
// then those waiting behind it. The head's step is an ordinary chain of
// one task, which the consumer claims and runs (_consumer.ts, _claim.ts):
// only the head has a step, so two duplicates never run at once. When the
// head's chain ends, the same commit queues an "ended" message, which makes
// the next entry the head; a "watch" message follows the head meanwhile,
// so that a head whose process died runs again once its claim lapses,
// without waiting for Deno KV's own redelivery (about a minute). Storing
// into a lane is _keyed.ts's.

import {
  commitRetrying,
  enqueueStep,
  type Progress,
  type Step,
  type StepQueue,
} from "./_step.ts";
import type { Claimant } from "./_claim.ts";

/** A lane's record: its head, and the entries behind it. */
export interface LaneRecord {
  /** The chain of the head's step. */
  active: string;
  /** The head's entry. */
  seq: number;
  /** The next entry's number: those from `seq + 1` wait behind the head. */
  tail: number;
}

/** One of a lane's entries: a task's step, and when it may start. */
export interface LaneEntry {
  step: Step;
  /** `Date.now()` before which it may not start: its store, plus its delay. */
  due: number;
}

/** A message about a lane's head, the chain of one task's step. */
export interface LaneMessage {
  afterwardLane: 1;
  name: string;
  key: string;
  chain: string;
  /**
   * `"ended"`: the head's chain ended, the next entry becomes the head;
   * `"watch"`: whether the head's claim lapsed, its process dead.
   */
  event: "ended" | "watch";
}

/** Whether a queue message is one of the lanes'. */
export function isLaneMessage(value: unknown): value is LaneMessage {
  return typeof value === "object" && value !== null &&
    (value as LaneMessage).afterwardLane === 1;
}

/** Whether the task of a lane's head has begun an attempt. */
export function started(progress: Progress): boolean {
  return progress.lease !== undefined || progress.attempt > 1 ||
    progress.begun === true;
}

/** A lane's head: its lane, and the chain of its step. */
export type Head = Pick<LaneMessage, "name" | "key" | "chain">;

/** The head whose step `step` is. */
function headOf(step: Step): Head {
  return { name: step.tasks[0]!.name, key: step.key!, chain: step.chain };
}

/** Adds to `operation` a message about the head `head`. */
export function enqueueLane(
  operation: Deno.AtomicOperation,
  queue: Pick<StepQueue, "redelivery">,
  head: Head,
  event: LaneMessage["event"],
  delay: number,
): Deno.AtomicOperation {
  const message: LaneMessage = { afterwardLane: 1, ...head, event };
  return operation.enqueue(message, {
    delay,
    backoffSchedule: queue.redelivery,
  });
}

/**
 * Adds to `operation` what makes `entry` its lane's head: its step,
 * delayed until it is due, and the watch that follows it, due a lease
 * after.
 */
export function activate(
  operation: Deno.AtomicOperation,
  queue: Pick<Claimant, "keys" | "redelivery" | "lease">,
  entry: LaneEntry,
  now: number,
): Deno.AtomicOperation {
  const delay = Math.max(0, entry.due - now);
  return enqueueLane(
    enqueueStep(operation, queue, entry.step, delay),
    queue,
    headOf(entry.step),
    "watch",
    delay + queue.lease,
  );
}

/**
 * Adds to `operation`, which ends the chain of a keyed task's step, the
 * message that moves its lane on: in the same commit, so that a crash
 * cannot leave the lane without a head.
 */
export function laneEnded(
  operation: Deno.AtomicOperation,
  queue: Pick<StepQueue, "redelivery">,
  step: Step,
): Deno.AtomicOperation {
  return enqueueLane(operation, queue, headOf(step), "ended", 0);
}

/**
 * Handles a lane message: moves the lane on, or watches its head. A message
 * about a head the lane no longer has does nothing, so that one delivered
 * twice acts once. If the database closed meanwhile, nothing is written,
 * nor acknowledged: Deno KV delivers the message again once it is next
 * opened.
 */
export async function runLaneMessage(
  message: LaneMessage,
  consumer: Claimant,
): Promise<void> {
  try {
    if (message.event === "ended") await moveOn(message, consumer);
    else await watch(message, consumer);
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource)) throw error;
  }
}

/**
 * The head's chain ended: the first entry behind it becomes the head, or
 * the lane goes, with nothing behind it. A store that adds an entry
 * meanwhile changes the record, and this looks again.
 */
async function moveOn(message: LaneMessage, consumer: Claimant): Promise<void> {
  const { kv, keys } = consumer;
  const { name, key } = message;
  for (;;) {
    const record = await kv.get<LaneRecord>(keys.lane(name, key));
    const lane = record.value;
    if (lane?.active !== message.chain) return;
    let operation = kv.atomic().check(record).delete(
      keys.lane(name, key, lane.seq),
    );
    const [next] = await Array.fromAsync(
      kv.list<LaneEntry>({
        start: keys.lane(name, key, lane.seq + 1),
        end: keys.lane(name, key, lane.tail),
      }, { limit: 1 }),
    );
    if (next === undefined) operation = operation.delete(record.key);
    else {
      const head: LaneRecord = {
        active: next.value.step.chain,
        seq: next.key.at(-1) as number,
        tail: lane.tail,
      };
      operation = activate(
        operation.check(next).set(record.key, head),
        consumer,
        next.value,
        Date.now(),
      );
    }
    if ((await commitRetrying(operation)).ok) return;
  }
}

/**
 * Follows a lane's head until its chain ends, then moves the lane on as
 * its "ended" message does (which this leaves nothing to do, or finds done):
 * while its claim is renewed,
 * the watch comes back when the claim would lapse; once it has lapsed (its
 * process died, or stalled for a whole lease), the head's step is queued
 * again, to run at once wherever a backend listens; a step Deno KV gave up
 * delivering ends the head's chain (`backend.failed()` keeps it). Otherwise
 * (a step delayed, or waiting to retry), it comes back a lease later.
 */
async function watch(message: LaneMessage, consumer: Claimant): Promise<void> {
  const { kv, keys, lease } = consumer;
  const { name, key, chain } = message;
  for (;;) {
    const record = await kv.get<LaneRecord>(keys.lane(name, key));
    if (record.value?.active !== chain) return;
    const progress = await kv.get<Progress>(keys.progress(chain));
    // Ended: its "ended" message moves the lane on, or this one, should
    // Deno KV have given up delivering that one.
    if (progress.value === null) return await moveOn(message, consumer);
    const now = Date.now();
    const claim = progress.value.lease;
    let operation = kv.atomic().check(record).check(progress);
    if (claim !== undefined && claim.until <= now) {
      const entry = await kv.get<LaneEntry>(
        keys.lane(name, key, record.value.seq),
      );
      if (entry.value === null) return;
      const again = { ...entry.value.step, attempt: progress.value.attempt };
      // Its attempt began: a "replace" or "skip" stored now treats it as
      // running, and it runs again, once, before the tasks behind it.
      operation = enqueueLane(
        enqueueStep(operation.check(entry), consumer, again, 0, true),
        consumer,
        message,
        "watch",
        lease,
      );
    } else {
      const { index, attempt } = progress.value;
      const undelivered = claim === undefined
        ? await kv.get(keys.undelivered(chain, index, attempt))
        : undefined;
      operation = undelivered?.value
        ? laneEnded(
          operation.check(undelivered).delete(progress.key),
          consumer,
          undelivered.value as Step,
        )
        : enqueueLane(
          operation,
          consumer,
          message,
          "watch",
          watchDelay(progress.value, now, lease),
        );
    }
    if ((await commitRetrying(operation)).ok) return;
  }
}

/**
 * When a watch of a head whose progress is `progress` should come back:
 * when its claim would lapse, or a lease from `now` when it has none.
 */
export function watchDelay(
  progress: Progress,
  now: number,
  lease: number,
): number {
  const until = progress.lease?.until;
  return until !== undefined && until > now ? until - now : lease;
}
