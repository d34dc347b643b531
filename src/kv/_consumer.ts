// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The consuming side of the KV backend: what one delivery of a message
// does. A step's outcome (the next step, its retry, or a failed task) is
// written atomically, checked against its chain's progress (_step.ts), so
// that a message delivered twice acts once; the step is claimed first
// (_claim.ts), so that a message delivered twice at once (to two processes
// on one file) runs once. Claims and outcomes go through the backend's
// write batch (_batch_writes.ts): those of the deliveries under way share
// an atomic operation, each checked on its own.

import { errorText } from "../util/_error_text.ts";
import { structuredSize } from "../durable/_structured_size.ts";
import { reportUnknownTask } from "../durable/_unknown_tasks.ts";
import { runQueued, type WorkerConfig } from "../durable/_worker.ts";
import { claim, type Claimant, putBack, renewLease } from "./_claim.ts";
import { laneEnded } from "./_lane.ts";
import {
  enqueueStep,
  identity,
  type Progress,
  type Step,
  stepKey,
} from "./_step.ts";
import type { KvFailedTask } from "./kv_failed_task.ts";

/** What a delivery needs of its backend, fixed when the backend is made. */
export interface Consumer extends Claimant {
  /** Its tasks and hooks, with those of the handlers attached so far. */
  config: WorkerConfig;
  /** The backend's shutdown: aborted, it gives up on the tasks running. */
  readonly shutdown: AbortController;
  /** The queue's name in its spans (`messaging.destination.name`): its prefix. */
  readonly queueName: string;
}

/** How a step whose attempt ran here ended, for a close's result. */
export interface StepEnd {
  readonly name: string;
  /**
   * `"retried"`: failed, its retry queued; `"handedBack"`: given up on at a
   * close, and put back on the queue.
   */
  readonly outcome: "succeeded" | "failed" | "retried" | "handedBack";
}

/**
 * A delivery as a close follows it: once its attempt begins, a promise of
 * how that attempt ended, which settles before the outcome is written (a
 * close at a deadline counts it without waiting for the write).
 */
export interface StepWatch {
  attempt?: Promise<StepEnd>;
}

/**
 * Runs one delivery of one step: claims it, runs the task's attempt (the
 * claim renewed meanwhile), then in one operation checked against the
 * chain's progress writes its failed task if it failed for good, and the
 * retry, the next step, or the end of the chain. Does nothing for a message
 * already acted on; waits for the run of a step this backend runs already;
 * puts the step back when another process holds its claim (to come back
 * when the claim lapses), when the backend closed meanwhile, or when it
 * closes during the attempt.
 *
 * @returns How its attempt ended, once that is written, if one ran.
 */
export async function runStep(
  step: Step,
  consumer: Consumer,
  watch: StepWatch = {},
): Promise<StepEnd | undefined> {
  const claimed = await claim(step, consumer);
  if (claimed === undefined) return;
  const key = stepKey(step);
  const run = Promise.withResolvers<void>();
  consumer.claimed.set(key, run.promise);
  try {
    return await actOn(step, claimed, consumer, watch);
  } finally {
    consumer.claimed.delete(key);
    run.resolve();
  }
}

/**
 * Runs the attempt of a step this backend claimed, then writes its outcome
 * checked against the claim as last renewed; or puts the step back if the
 * backend closed meanwhile.
 */
async function actOn(
  step: Step,
  progress: Deno.KvEntry<Progress>,
  consumer: Consumer,
  watch: StepWatch,
): Promise<StepEnd | undefined> {
  const { keys, config, shutdown } = consumer;
  const progressKey = keys.progress(step.chain);
  const queued = step.tasks[step.index]!;
  const task = config.registry.get(queued.name);
  const { id, index } = identity(step);
  let checked = progress;
  let failed: KvFailedTask | undefined;
  let retryDelay: number | undefined;
  let outcome: StepEnd["outcome"] | undefined;
  // A deploy that renamed or dropped the task: a failed task, reported.
  let missing: string | undefined;
  if (task === undefined) {
    missing = `No task named "${queued.name}" in this process's 'tasks'`;
    failed = failedTask(step, missing);
  } else {
    const renewal = renewLease(step, progress, consumer);
    const ended = Promise.withResolvers<StepEnd>();
    watch.attempt = ended.promise;
    const result = await runQueued({
      task,
      args: queued.args,
      id,
      index,
      attempt: step.attempt,
      request: step.request,
      delivered: step.delivered,
      signal: shutdown.signal,
      trace: step.trace,
      messaging: config.telemetry === undefined ? undefined : {
        system: "deno_kv",
        destination: consumer.queueName,
        messageId: id,
      },
    }, config);
    const handedBack = result.outcome === "abandoned" ||
      shutdown.signal.aborted;
    outcome = handedBack
      ? "handedBack"
      : result.willRetry
      ? "retried"
      : result.outcome === "succeeded"
      ? "succeeded"
      : "failed";
    ended.resolve({ name: queued.name, outcome });
    // The claim as last renewed: what the outcome is checked against.
    const claimed = await renewal.stop();
    if (handedBack) {
      await putBack(step, claimed, consumer);
      return { name: queued.name, outcome };
    }
    checked = claimed;
    if (result.willRetry) retryDelay = result.delay;
    else if (result.outcome !== "succeeded") {
      failed = failedTask(step, errorText(result.value));
    }
  }
  // The next message is the delivered one, changed in two numbers: it
  // weighs more than the first (its arrays came back holey), and the
  // message budget measured that weight (see messageSize()), so it fits.
  const next: Step | undefined = retryDelay !== undefined
    ? { ...step, attempt: step.attempt + 1 }
    : step.index + 1 < step.tasks.length
    ? { ...step, index: step.index + 1, attempt: 1 }
    : undefined;
  const delay = Math.round(retryDelay ?? 0);
  // A failed check means another delivery took the step over, its claim
  // having lapsed (this process stalled for a whole lease): it writes it.
  // The next task is queued with those of the other steps in the batch; a
  // retry, delayed, in a message of its own, as is a keyed task's step: its
  // lane's watch finds it under its own undelivered key (_lane.ts).
  const alone = delay > 0 || step.key !== undefined;
  const { ok } = await consumer.batch.commit({
    key: step.chain,
    add(operation) {
      operation = operation.check(checked);
      if (failed !== undefined) {
        operation = operation.set(keys.failed(step.chain, step.index), failed);
      }
      if (next !== undefined) {
        return alone
          ? enqueueStep(operation, consumer, next, delay)
          : operation;
      }
      operation = operation.delete(progressKey);
      return step.key === undefined
        ? operation
        : laneEnded(operation, consumer, step);
    },
    ...(next === undefined || alone ? {} : { queue: next }),
  });
  if (ok && missing !== undefined) {
    await reportUnknownTask(
      {
        name: queued.name,
        index,
        attempt: step.attempt,
        id,
        request: step.request,
        delivered: step.delivered,
      },
      `${missing}: it is kept as failed task "${id}" (backend.failed() lists it)`,
      config,
    );
  }
  return outcome === undefined ? undefined : { name: queued.name, outcome };
}

/** The most a Deno KV value may weigh, a failed task included. */
const KV_MAX_VALUE = 64 * 1024;
/** What a cut error text ends with. */
const CUT = " [cut to fit in Deno KV]";

/**
 * A step's failed task, in a form that fits in a Deno KV value (64 KiB,
 * like a message): the error text (a stack, say) gives way first;
 * arguments too large to keep with the rest are dropped, and the error says
 * so.
 */
function failedTask(step: Step, error: string): KvFailedTask {
  const task = step.tasks[step.index]!;
  let kept: KvFailedTask = {
    ...identity(step),
    reason: "failed",
    name: task.name,
    args: task.args,
    attempts: step.attempt,
    error,
    request: step.request,
    at: new Date(),
    ...(step.key === undefined ? {} : { key: step.key }),
  };
  for (
    let excess = structuredSize(kept) - KV_MAX_VALUE;
    excess > 0;
    excess = structuredSize(kept) - KV_MAX_VALUE
  ) {
    const keep = kept.error.length - excess - CUT.length;
    kept = keep > 0 ? { ...kept, error: kept.error.slice(0, keep) + CUT } : {
      ...kept,
      args: [],
      error: `${
        error.slice(0, 4096)
      }${CUT}; its arguments were too large to keep`,
    };
  }
  return kept;
}
