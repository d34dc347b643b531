// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The consuming side of the KV backend: what a queue message holds, where
// the backend keeps a chain's state, and what one delivery of a message
// does. A chain's progress in the database says which message is the live
// one, and a step's outcome (the next step, its retry, or a dead letter) is
// written in one atomic operation checked against that progress, so that a
// message delivered twice acts once.

import type { Holder } from "./_call.ts";
import { errorText } from "./_error_text.ts";
import { structuredSize } from "./_serializable.ts";
import { runDelivery, type WorkerConfig } from "./_worker.ts";
import type { DeadLetter } from "./dead_letter.ts";
import type { RequestSummary } from "./task_info.ts";

/** A task as its chain's message holds it. */
interface QueuedTask {
  name: string;
  args: unknown[];
}

/** A queue message: one step of a chain. */
export interface Step {
  afterwardStep: 1;
  chain: string;
  index: number;
  attempt: number;
  tasks: QueuedTask[];
  request?: RequestSummary;
  delivered?: boolean;
  /** The `traceparent` of the request's span, when telemetry was on. */
  trace?: string;
}

/** Where a chain stands: the task and attempt its next message carries. */
interface Progress {
  index: number;
  attempt: number;
}

/** Whether a queue message is one of the backend's. */
export function isStep(value: unknown): value is Step {
  return typeof value === "object" && value !== null &&
    (value as Step).afterwardStep === 1;
}

/** The keys the backend writes, each under its prefix. */
export interface Keys {
  /** A chain's progress: there while the chain has a message queued. */
  progress(chain: string): Deno.KvKey;
  /** A failed task's dead letter; with no part, where they all are. */
  dead(...parts: [] | [chain: string, index: number]): Deno.KvKey;
  /**
   * Where Deno KV puts a step it gave up delivering; with fewer parts,
   * where a task's or all of them are.
   */
  undelivered(
    ...parts:
      | []
      | [chain: string, index: number]
      | [chain: string, index: number, attempt: number]
  ): Deno.KvKey;
}

/** The key schema under `prefix`. */
export function kvKeys(prefix: Deno.KvKey): Keys {
  return {
    progress: (chain) => [...prefix, "chains", chain],
    dead: (...parts) => [...prefix, "dead", ...parts],
    undelivered: (...parts) => [...prefix, "undelivered", ...parts],
  };
}

/** What a delivery needs of its backend, fixed when the backend is made. */
export interface Consumer {
  readonly kv: Deno.Kv;
  readonly keys: Keys;
  /** Milliseconds between Deno KV's deliveries of a message. */
  readonly redelivery: number[];
  /** Its tasks and hooks, with those of the handlers attached so far. */
  config: WorkerConfig;
  /** The backend's shutdown, which gives up on the tasks running. */
  readonly shutdown: Holder;
  /** Where its messages come from, as its spans name it: its prefix. */
  readonly source: string;
  /** Whether the backend closed: a step delivered now is put back, not run. */
  closing: boolean;
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
 * Adds to `operation` what queues a step: the chain's progress, and the
 * message, delayed by `delay` milliseconds.
 */
export function enqueueStep(
  operation: Deno.AtomicOperation,
  queue: Pick<Consumer, "keys" | "redelivery">,
  step: Step,
  delay = 0,
): Deno.AtomicOperation {
  return operation
    .set(
      queue.keys.progress(step.chain),
      { index: step.index, attempt: step.attempt } satisfies Progress,
    )
    .enqueue(step, {
      delay,
      keysIfUndelivered: [
        queue.keys.undelivered(step.chain, step.index, step.attempt),
      ],
      backoffSchedule: queue.redelivery,
    });
}

/**
 * Runs one delivery of one step: the task's attempt, then in one operation
 * checked against the chain's progress its dead letter if it failed for
 * good, and the retry, the next step, or the end of the chain. Does nothing
 * for a message already acted on, and puts the step back when the backend
 * closed meanwhile, or closes during the attempt.
 *
 * @returns How its attempt ended, once that is written, if one ran.
 */
export async function runStep(
  step: Step,
  consumer: Consumer,
): Promise<StepEnd | undefined> {
  const { kv, keys, config, shutdown } = consumer;
  const progressKey = keys.progress(step.chain);
  const progress = await kv.get<Progress>(progressKey);
  // A message already acted on, delivered again: nothing to do.
  if (
    progress.value?.index !== step.index ||
    progress.value.attempt !== step.attempt
  ) return;
  // Closed meanwhile: the step waits for a process that listens.
  if (consumer.closing) return void await putBack(step, progress, consumer);
  const queued = step.tasks[step.index]!;
  const task = config.registry.get(queued.name);
  const id = `${step.chain}:${step.index}`;
  let operation = kv.atomic().check(progress);
  let retryDelay: number | undefined;
  let outcome: StepEnd["outcome"] | undefined;
  if (task === undefined) {
    operation = operation.set(
      keys.dead(step.chain, step.index),
      deadLetter(
        step,
        id,
        `No task named "${queued.name}" in this process's 'tasks'`,
      ),
    );
  } else {
    const result = await runDelivery({
      task,
      args: queued.args,
      id,
      index: step.index,
      attempt: step.attempt,
      request: step.request,
      delivered: step.delivered,
      holder: shutdown,
      trace: step.trace,
      source: config.telemetry === undefined ? undefined : {
        consumer: {
          system: "deno_kv",
          destination: consumer.source,
          messageId: id,
        },
      },
    }, config);
    if (result.outcome === "abandoned" || shutdown.signal.aborted) {
      await putBack(step, progress, consumer);
      return { name: queued.name, outcome: "handedBack" };
    }
    outcome = result.willRetry
      ? "retried"
      : result.outcome === "succeeded"
      ? "succeeded"
      : "failed";
    if (result.willRetry) retryDelay = result.delay;
    else if (result.outcome !== "succeeded") {
      operation = operation.set(
        keys.dead(step.chain, step.index),
        deadLetter(step, id, errorText(result.value)),
      );
    }
  }
  // The next message is the delivered one, changed in two numbers: it
  // weighs more than the first (its arrays came back holey), and the
  // message budget measured that weight (see messageSize()), so it fits.
  if (retryDelay !== undefined) {
    operation = enqueueStep(
      operation,
      consumer,
      { ...step, attempt: step.attempt + 1 },
      Math.round(retryDelay),
    );
  } else if (step.index + 1 < step.tasks.length) {
    operation = enqueueStep(operation, consumer, {
      ...step,
      index: step.index + 1,
      attempt: 1,
    });
  } else {
    operation = operation.delete(progressKey);
  }
  // A failed check means another delivery of this message got there first.
  await operation.commit();
  return outcome === undefined ? undefined : { name: queued.name, outcome };
}

/**
 * Puts back on the queue a step whose attempt a close gave up on, delayed
 * by the first redelivery step (a process still listening with its backend
 * closed gives it up again at that pace, without using up its deliveries).
 * If the database closed too, nothing is written, and nothing acknowledged
 * either: Deno KV delivers the unfinished message again once the database
 * is next opened, as after a crash.
 */
async function putBack(
  step: Step,
  progress: Deno.KvEntryMaybe<Progress>,
  consumer: Consumer,
): Promise<void> {
  const { kv, redelivery } = consumer;
  try {
    await enqueueStep(
      kv.atomic().check(progress),
      consumer,
      step,
      redelivery[0],
    )
      .commit();
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource)) throw error;
  }
}

/** The most a Deno KV value may weigh, a dead letter included. */
const KV_MAX_VALUE = 64 * 1024;
/** What a cut error text ends with. */
const CUT = " [cut to fit in Deno KV]";

/**
 * A dead letter that fits in a Deno KV value (64 KiB, like a message): the
 * error text (a stack, say) gives way first; arguments too large to keep
 * with the rest are dropped, and the error says so.
 */
function deadLetter(step: Step, id: string, error: string): DeadLetter {
  const task = step.tasks[step.index]!;
  let letter: DeadLetter = {
    id,
    reason: "failed",
    name: task.name,
    args: task.args,
    index: step.index,
    attempts: step.attempt,
    error,
    request: step.request,
    at: new Date(),
  };
  for (
    let excess = structuredSize(letter) - KV_MAX_VALUE;
    excess > 0;
    excess = structuredSize(letter) - KV_MAX_VALUE
  ) {
    const keep = letter.error.length - excess - CUT.length;
    letter = keep > 0
      ? { ...letter, error: letter.error.slice(0, keep) + CUT }
      : {
        ...letter,
        args: [],
        error: `${
          error.slice(0, 4096)
        }${CUT}; its arguments were too large to keep`,
      };
  }
  return letter;
}
