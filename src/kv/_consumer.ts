// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The consuming side of the KV backend: what a queue message holds, where
// the backend keeps a chain's state, and what one delivery of a message
// does. A chain's progress in the database says which message is the live
// one, and a step's outcome (the next step, its retry, or a failed task) is
// written in one atomic operation checked against that progress, so that a
// message delivered twice acts once. A delivery claims its step in that
// progress before running it, so that a message delivered twice at once (to
// two processes on one file) runs once.

import { errorText } from "../util/_error_text.ts";
import { structuredSize } from "../durable/_serializable.ts";
import { reportUnknownTask } from "../durable/_unknown_tasks.ts";
import { runQueued, type WorkerConfig } from "../durable/_worker.ts";
import type { KvFailedTask } from "./kv_failed_task.ts";
import type { RequestSummary } from "../api/task_info.ts";

/** A task as its chain's message holds it. */
interface QueuedTask {
  name: string;
  args: unknown[];
  /**
   * For a task that `retry()` put back, as a chain of its own: the id and
   * index it failed under, which it keeps (see `identity()`).
   */
  id?: string;
  index?: number;
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
  /** Who runs that step now, if anyone, and until when unless renewed. */
  lease?: Lease;
}

/** A claim on a step, renewed while its attempt runs. */
interface Lease {
  /** The backend that runs it: its `Consumer.holder`. */
  holder: string;
  /** `Date.now()` past which the claim lapses, its holder presumed dead. */
  until: number;
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
  /** A failed task; with no part, where they all are. */
  failed(...parts: [] | [chain: string, index: number]): Deno.KvKey;
  /**
   * When a process last stored chains with a task of this name; with no
   * part, where they all are.
   */
  tasks(...parts: [] | [name: string]): Deno.KvKey;
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
    failed: (...parts) => [...prefix, "failed", ...parts],
    tasks: (...parts) => [...prefix, "tasks", ...parts],
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
  /** The backend's shutdown: aborted, it gives up on the tasks running. */
  readonly shutdown: AbortController;
  /** The queue's name in its spans (`messaging.destination.name`): its prefix. */
  readonly queueName: string;
  /** Whether the backend closed: a step delivered now is put back, not run. */
  closing: boolean;
  /** This backend, in the claims it writes: unique to it. */
  readonly holder: string;
  /**
   * Milliseconds a claim lasts unless renewed (a third of it apart): how
   * long a step whose process died holding it waits before another runs it.
   */
  readonly lease: number;
  /** The steps this backend runs now, by `stepKey()`, each until it is written. */
  readonly claimed: Map<string, Promise<unknown>>;
}

/** How long a claim on a step lasts unless renewed. */
export const LEASE = 30_000;

/**
 * How long a commit tries again while another process holds the database's
 * write lock, before the error goes to its caller.
 */
const LOCKED_PATIENCE = 30_000;

/**
 * Commits `operation`, again and again while Deno KV answers "database is
 * locked": another process on the file holds its write lock, and Deno KV
 * does not wait for it (its SQLite backend waits only for a transaction as a
 * whole, and an atomic write's lock failure is reported inside one). Such a
 * commit did not apply (none of 9,228 such failures did, on Deno 2.9.6), so
 * trying it again is safe, the more so as each of ours is checked against
 * what it read. Pauses grow from about 2 ms to 100 ms, with jitter, so that two
 * processes do not collide again.
 */
export async function commitRetrying(
  operation: Deno.AtomicOperation,
): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
  const since = Date.now();
  for (let pause = 2;; pause = Math.min(pause * 2, 100)) {
    try {
      return await operation.commit();
    } catch (error) {
      // The time the commits took counts: one that meets a lock held from
      // outside Deno KV (a backup, say) waits 5 s before it fails.
      if (!isLocked(error) || Date.now() - since >= LOCKED_PATIENCE) {
        throw error;
      }
      const delay = pause / 2 + Math.random() * pause;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/** Whether Deno KV refused a write because another process held the file. */
function isLocked(error: unknown): boolean {
  return error instanceof Error && error.message === "database is locked";
}

/**
 * The id and index of a step's task, as its context, its reports and its
 * failed task show them: `chain:index` and its index in the chain, or for a
 * task that `retry()` put back, those it failed under.
 */
export function identity(step: Step): { id: string; index: number } {
  const { id, index } = step.tasks[step.index]!;
  return {
    id: id ?? `${step.chain}:${step.index}`,
    index: index ?? step.index,
  };
}

/** A step's key among those a backend runs: its chain, index and attempt. */
function stepKey(step: Step): string {
  return `${step.chain}:${step.index}:${step.attempt}`;
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
 * Adds to `operation` what queues a step: the chain's progress, and the
 * message, delayed by `delay` milliseconds.
 */
export function enqueueStep(
  operation: Deno.AtomicOperation,
  queue: Pick<Consumer, "keys" | "redelivery">,
  step: Step,
  delay = 0,
): Deno.AtomicOperation {
  return enqueueMessage(
    operation.set(
      queue.keys.progress(step.chain),
      { index: step.index, attempt: step.attempt } satisfies Progress,
    ),
    queue,
    step,
    delay,
  );
}

/** Adds to `operation` a step's message alone, its progress left as it is. */
function enqueueMessage(
  operation: Deno.AtomicOperation,
  queue: Pick<Consumer, "keys" | "redelivery">,
  step: Step,
  delay: number,
): Deno.AtomicOperation {
  return operation.enqueue(step, {
    delay,
    keysIfUndelivered: [
      queue.keys.undelivered(step.chain, step.index, step.attempt),
    ],
    backoffSchedule: queue.redelivery,
  });
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
 * Claims a live step for this backend, in its chain's progress: the claimed
 * progress, or nothing when the step is not this delivery's to run (acted
 * on already, run here already, claimed by another process, or the backend
 * closed; the step is then put back as needed).
 */
async function claim(
  step: Step,
  consumer: Consumer,
): Promise<Deno.KvEntry<Progress> | undefined> {
  const { kv, keys } = consumer;
  const progressKey = keys.progress(step.chain);
  for (
    let progress = await kv.get<Progress>(progressKey);;
    progress = await kv.get<Progress>(progressKey)
  ) {
    // A message already acted on, delivered again: nothing to do.
    if (
      progress.value?.index !== step.index ||
      progress.value.attempt !== step.attempt
    ) return;
    // Delivered again while this backend runs it (Deno KV gives a message
    // that runs long up for dead, and queues it again): its run writes it.
    const running = consumer.claimed.get(stepKey(step));
    if (running !== undefined) return void await running;
    // Run by another process: this copy comes back once the claim would
    // have lapsed, in case that process died.
    const { lease } = progress.value;
    if (
      lease !== undefined && lease.holder !== consumer.holder &&
      lease.until > Date.now()
    ) {
      const delay = lease.until - Date.now();
      return void await putBack(step, progress, consumer, delay);
    }
    // Closed meanwhile: the step waits for a process that listens.
    if (consumer.closing) {
      return void await putBack(step, progress, consumer);
    }
    const value: Progress = {
      index: step.index,
      attempt: step.attempt,
      lease: { holder: consumer.holder, until: Date.now() + consumer.lease },
    };
    const claimed = await commitRetrying(
      kv.atomic().check(progress).set(progressKey, value),
    );
    if (claimed.ok) {
      return { key: progressKey, value, versionstamp: claimed.versionstamp };
    }
    // Claimed or acted on meanwhile, by another delivery: look again.
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
  const { kv, keys, config, shutdown } = consumer;
  const progressKey = keys.progress(step.chain);
  const queued = step.tasks[step.index]!;
  const task = config.registry.get(queued.name);
  const { id, index } = identity(step);
  let operation = kv.atomic().check(progress);
  let retryDelay: number | undefined;
  let outcome: StepEnd["outcome"] | undefined;
  // A deploy that renamed or dropped the task: a failed task, reported.
  let missing: string | undefined;
  if (task === undefined) {
    missing = `No task named "${queued.name}" in this process's 'tasks'`;
    operation = operation.set(
      keys.failed(step.chain, step.index),
      failedTask(step, missing),
    );
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
    operation = kv.atomic().check(claimed);
    if (result.willRetry) retryDelay = result.delay;
    else if (result.outcome !== "succeeded") {
      operation = operation.set(
        keys.failed(step.chain, step.index),
        failedTask(step, errorText(result.value)),
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
  // A failed check means another delivery took the step over, its claim
  // having lapsed (this process stalled for a whole lease): it writes it.
  const { ok } = await commitRetrying(operation);
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

/**
 * Renews the claim on a step every third of a lease, while its attempt
 * runs. `stop()` ends the renewals and resolves with the claim as last
 * written, once no renewal is in flight. A renewal that fails leaves the
 * claim as it was: the outcome's check then tells whether it was lost.
 */
function renewLease(
  step: Step,
  claimed: Deno.KvEntry<Progress>,
  consumer: Consumer,
): { stop(): Promise<Deno.KvEntry<Progress>> } {
  const { kv, keys, holder, lease } = consumer;
  let latest = claimed;
  let renewing = Promise.resolve();
  const renew = async () => {
    const value: Progress = {
      index: step.index,
      attempt: step.attempt,
      lease: { holder, until: Date.now() + lease },
    };
    try {
      const renewed = await commitRetrying(
        kv.atomic().check(latest).set(keys.progress(step.chain), value),
      );
      if (renewed.ok) {
        latest = { ...latest, value, versionstamp: renewed.versionstamp };
      }
    } catch {
      // The database closed, or stayed locked: the claim lapses as it is.
    }
  };
  const timer = setInterval(() => {
    renewing = renewing.then(renew);
  }, lease / 3);
  return {
    async stop() {
      clearInterval(timer);
      await renewing;
      return latest;
    },
  };
}

/**
 * Puts a step back on the queue, checked against its progress `current`,
 * delayed by `delay` (by default the first redelivery step: a process
 * still listening with its backend closed gives it up again at that pace,
 * without using up its deliveries). A step this backend claimed is released
 * with it. If the database closed too, nothing is written, and nothing
 * acknowledged either: Deno KV delivers the unfinished message again once
 * the database is next opened, as after a crash.
 */
async function putBack(
  step: Step,
  current: Deno.KvEntryMaybe<Progress>,
  consumer: Consumer,
  delay = consumer.redelivery[0] ?? 0,
): Promise<void> {
  const { kv } = consumer;
  const ours = current.value?.lease?.holder === consumer.holder;
  try {
    await commitRetrying(
      ours || current.value?.lease === undefined
        ? enqueueStep(kv.atomic().check(current), consumer, step, delay)
        // Another's claim stays as it is: only the copy is queued.
        : enqueueMessage(kv.atomic().check(current), consumer, step, delay),
    );
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource)) throw error;
  }
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
