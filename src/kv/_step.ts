// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A KV backend's chains as the database holds them: each step of a chain
// travels in a queue message (the first steps of chains stored together
// share one), and the chain's progress, under a key of the backend's, says
// which step is the live one. The two are written together, in one atomic
// operation checked against what was read, through commitRetrying(), since
// Deno KV does not wait for another process's lock. The producing side
// (_store.ts), the consuming side (_consumer.ts, its claims, _claim.ts, and
// its write batch, _batch_writes.ts) and the failed tasks (_failed.ts)
// build on it.

import { structuredSizeBound } from "../durable/_structured_size.ts";
import type { Envelope } from "../durable/_envelope.ts";

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
export interface Step extends Envelope {
  afterwardStep: 1;
  chain: string;
  index: number;
  attempt: number;
  tasks: QueuedTask[];
  /**
   * A keyed task's key: its step is one of its lane's (_keyed.ts), a chain
   * of its one task.
   */
  key?: string;
  /**
   * The positions, ascending, of the request's keyed tasks, which their
   * lanes hold: the chain's other tasks keep the positions they were
   * added at, in their ids (see `identity()`).
   */
  keyed?: number[];
}

/**
 * The first step of a chain: the first attempt of the first of `tasks`,
 * with what the chain carries of its request (`envelope()`) and any more
 * fields its kind of chain has (a keyed task's `key`, a chain's `keyed`).
 */
export function firstStep(
  chain: string,
  tasks: QueuedTask[],
  more: Pick<Step, "request" | "delivered" | "trace" | "key" | "keyed"> = {},
): Step {
  return { afterwardStep: 1, chain, index: 0, attempt: 1, tasks, ...more };
}

/** Where a chain stands: the task and attempt its next message carries. */
export interface Progress {
  index: number;
  attempt: number;
  /** Who runs that step now, if anyone, and until when unless renewed. */
  lease?: Lease;
  /**
   * For a keyed task's step queued again once its claim lapsed (its process
   * died in the attempt, _lane.ts): it began, and counts as running.
   */
  begun?: true;
}

/** A claim on a step, renewed while its attempt runs. */
interface Lease {
  /** The backend that runs it: its `Claimant.holder`. */
  holder: string;
  /** `Date.now()` past which the claim lapses, its holder presumed dead. */
  until: number;
}

/**
 * A queue message of several steps, each of its own chain: the first steps
 * of chains stored together (_store.ts), or the next steps of steps run
 * together (_batch_writes.ts).
 */
export interface StepGroup {
  afterwardSteps: 1;
  steps: Step[];
}

/** Whether a queue message is a step of the backend's. */
export function isStep(value: unknown): value is Step {
  return typeof value === "object" && value !== null &&
    (value as Step).afterwardStep === 1;
}

/** Whether a queue message is a group of the backend's steps. */
export function isStepGroup(value: unknown): value is StepGroup {
  return typeof value === "object" && value !== null &&
    (value as StepGroup).afterwardSteps === 1 &&
    Array.isArray((value as StepGroup).steps);
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
   * Where Deno KV puts a message it gave up delivering, under a number drawn
   * for it (the message says which step it is), or for a keyed task's step,
   * under its chain, index and attempt, where its lane's watch looks
   * (_lane.ts); with no part, where they all are.
   */
  undelivered(
    ...parts:
      | []
      | [id: number]
      | [chain: string, index: number, attempt: number]
  ): Deno.KvKey;
  /** A key never written: what asking whether the database can queue checks. */
  neverWritten(): Deno.KvKey;
  /**
   * A keyed task's lane: its record, or with `seq`, one of its entries
   * (_keyed.ts).
   */
  lane(name: string, key: string, ...seq: [] | [number]): Deno.KvKey;
}

/** The key schema under `prefix`. */
export function kvKeys(prefix: Deno.KvKey): Keys {
  return {
    progress: (chain) => [...prefix, "chains", chain],
    failed: (...parts) => [...prefix, "failed", ...parts],
    tasks: (...parts) => [...prefix, "tasks", ...parts],
    undelivered: (...parts) => [...prefix, "undelivered", ...parts],
    neverWritten: () => [...prefix, "never-written"],
    lane: (name, key, ...seq) => [...prefix, "lanes", name, key, ...seq],
  };
}

/** Where a backend queues its steps. */
export interface StepQueue {
  readonly kv: Deno.Kv;
  readonly keys: Keys;
  /** Milliseconds between Deno KV's deliveries of a message. */
  readonly redelivery: number[];
}

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

/**
 * Whether Deno KV refused a write because another process held the file (a
 * `TypeError`, like its refusal of an operation over its limits).
 */
export function isLocked(error: unknown): boolean {
  return error instanceof Error && error.message === "database is locked";
}

/**
 * The id and index of a step's task, as its context, its reports and its
 * failed task show them: `chain:index` and its index in the chain, or for a
 * task that `retry()` put back, those it failed under.
 */
export function identity(step: Step): { id: string; index: number } {
  const { id, index } = step.tasks[step.index]!;
  let position = index ?? step.index;
  // Counted past the keyed tasks, which their lanes hold.
  if (index === undefined && step.keyed !== undefined) {
    for (const keyed of step.keyed) if (keyed <= position) position++;
  }
  return { id: id ?? `${step.chain}:${position}`, index: position };
}

/** A step's key among those a backend runs: its chain, index and attempt. */
export function stepKey(step: Step): string {
  return `${step.chain}:${step.index}:${step.attempt}`;
}

/**
 * Adds to `operation` what queues a step: the chain's progress (marked
 * `begun` if so), and the message, delayed by `delay` milliseconds.
 */
export function enqueueStep(
  operation: Deno.AtomicOperation,
  queue: Pick<StepQueue, "keys" | "redelivery">,
  step: Step,
  delay = 0,
  begun?: true,
): Deno.AtomicOperation {
  const progress: Progress = { index: step.index, attempt: step.attempt };
  if (begun) progress.begun = true;
  return enqueueMessage(
    operation.set(queue.keys.progress(step.chain), progress),
    queue,
    step,
    delay,
  );
}

/**
 * Adds to `operation` what queues several steps, each of its own chain, in
 * one message: each chain's progress, and the message.
 */
function enqueueSteps(
  operation: Deno.AtomicOperation,
  queue: Pick<StepQueue, "keys" | "redelivery">,
  steps: Step[],
): Deno.AtomicOperation {
  for (const step of steps) {
    operation = operation.set(
      queue.keys.progress(step.chain),
      { index: step.index, attempt: step.attempt } satisfies Progress,
    );
  }
  return enqueueMessage(
    operation,
    queue,
    { afterwardSteps: 1, steps } satisfies StepGroup,
    0,
  );
}

/**
 * Adds to `operation` what queues `steps` at once, each of its own chain:
 * each chain's progress, and the steps in as few messages as fit in
 * `bytes` as far as a cheap upper bound of their weight tells (a message
 * the bound misjudged is refused, and the operation split). A step the
 * bound does not fit (a large chain) goes alone, in a message its message
 * budget sized for Deno KV.
 */
export function queueSteps(
  operation: Deno.AtomicOperation,
  queue: Pick<StepQueue, "keys" | "redelivery">,
  steps: readonly Step[],
  bytes: number,
): Deno.AtomicOperation {
  for (const message of pack(steps, bytes)) {
    operation = message.length === 1
      ? enqueueStep(operation, queue, message[0]!)
      : enqueueSteps(operation, queue, message);
  }
  return operation;
}

/** `steps` in messages of at most `bytes` by their bound, in order. */
function pack(steps: readonly Step[], bytes: number): Step[][] {
  const packed: Step[][] = [];
  let current: Step[] = [];
  let weight = 0;
  for (const step of steps) {
    const bound = structuredSizeBound(step);
    if (bound > bytes) {
      packed.push([step]);
      continue;
    }
    if (weight + bound > bytes) {
      packed.push(current);
      current = [];
      weight = 0;
    }
    current.push(step);
    weight += bound;
  }
  if (current.length > 0) packed.push(current);
  return packed;
}

/**
 * Adds to `operation` a message, a step alone or a group, progress left as
 * it is.
 *
 * Each delivery makes Deno KV read its whole queue (it removes the message
 * by an id it has no index on: `delete from queue where id = ?`, in
 * denoland/denokv's sqlite/backend.rs), so the weight of a queued message
 * sets how fast a backlog drains: the message itself, its redelivery steps,
 * and the key it would be kept under if undelivered, as JSON text of the
 * key's bytes. That key is a random number under the prefix, not the step's
 * chain, index and attempt (the message holds them): 145 bytes of JSON
 * rather than 276 under the default prefix. A backlog of 5,000 one-task
 * chains then weighs 1.9 MB rather than 2.6, and fits the 2 MB that
 * SQLite caches by default. A keyed task's step keeps the longer key, which
 * its lane's watch reads to learn that Deno KV gave up on its head.
 */
export function enqueueMessage(
  operation: Deno.AtomicOperation,
  queue: Pick<StepQueue, "keys" | "redelivery">,
  message: Step | StepGroup,
  delay: number,
): Deno.AtomicOperation {
  return operation.enqueue(message, {
    delay,
    keysIfUndelivered: [
      isStep(message) && message.key !== undefined
        ? queue.keys.undelivered(message.chain, message.index, message.attempt)
        : queue.keys.undelivered(Math.floor(Math.random() * 2 ** 53)),
    ],
    backoffSchedule: queue.redelivery,
  });
}
