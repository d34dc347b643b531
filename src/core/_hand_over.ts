// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Giving a chain to a backend: what is handed over is a snapshot of the
// whole chain, taken when it moves to `storing` (a task added after starts a
// chain of its own). The backend keeps trying through passing faults until
// the chain is stored or the chain's signal aborts, when the runner gives up
// on it. Before its response, the response waits for the outcome; after,
// a chain that could not be stored is reported as failed. How the store
// ended goes to the runner, which ends the chain and counts.

import type { Chain } from "./_chain.ts";
import type { Task } from "./_task.ts";
import { isKeyed } from "./_keyed_task.ts";
import type {
  BackendTask,
  EnqueueResult,
  TaskBackend,
} from "../api/task_backend.ts";
import { report, tellDeduplicated } from "./_report.ts";
import type { Telemetry } from "./_telemetry.ts";
import { toPromise } from "../util/_promise.ts";
import type {
  TaskEndEvent,
  TaskErrorHandler,
  TaskInfo,
} from "../api/task_info.ts";
import { uuidV7 } from "../util/_uuid_v7.ts";

/** A task as a backend receives it; it must have been made by `defineTask`. */
export function backendTask(task: Task): BackendTask {
  const defined = task.defined!;
  const { name, timeout, retry } = defined;
  // A task without a key has none of a keyed task's fields.
  if (!isKeyed(task)) {
    return { name, args: task.args, timeout, retry, task: defined };
  }
  const { key } = task;
  const { onDuplicate, delay } = defined;
  return {
    name,
    args: task.args,
    timeout,
    retry,
    key,
    onDuplicate,
    delay,
    task: defined,
  };
}

/** What a hand-over needs of its runner. */
export interface HandOverRunner {
  readonly onTaskError: TaskErrorHandler;
  readonly onTaskEnd: ((event: TaskEndEvent) => unknown) | undefined;
  /** Deno's telemetry, when on: the chain then carries its trace. */
  readonly telemetry: Telemetry | undefined;
  /**
   * Ends the chain, once the store is over: stored (`handedOver`), or lost
   * before its response (`discarded`) or after (`finished`, its tasks
   * failed).
   */
  ended(chain: Chain, to: "handedOver" | "discarded" | "finished"): void;
  /** Counts `n` tasks of a chain being stored that the store deduplicated. */
  deduplicated(n: number): void;
}

/**
 * Hands a `storing` chain to `backend`, and tells `runner` how it ended,
 * unless the chain was given up on meanwhile. Before the response, the
 * promise settles as the store does, and rejects at once when the chain is
 * given up on; after, it never rejects.
 */
export function handOver(
  chain: Chain,
  backend: TaskBackend,
  beforeResponse: boolean,
  runner: HandOverRunner,
): Promise<void> {
  const first = chain.position;
  const tasks: BackendTask[] = [];
  for (let task = chain.head; task !== undefined; task = task.next) {
    tasks.push(backendTask(task));
  }
  const { signal } = chain;
  let storing: Promise<void | EnqueueResult>;
  try {
    storing = backend.enqueue({
      // Made at its first task's accept().
      id: chain.id ??= uuidV7(),
      tasks,
      request: chain.request,
      delivered: chain.delivered,
      traceparent: runner.telemetry?.traceparent(chain.trace),
    }, { signal });
  } catch (error) {
    storing = Promise.reject(error);
  }
  const settled = toPromise(storing).then((result) => {
    // Given up on at a deadline: counted then.
    if (chain.state === "storing") stored(chain, tasks, first, result, runner);
  }, (error) => {
    if (chain.state === "storing") {
      lost(chain, tasks, first, error, beforeResponse, runner);
    }
    throw error;
  });
  // After the response, nobody waits for it.
  if (!beforeResponse) return settled.catch(() => {});
  return new Promise((resolve, reject) => {
    // Given up on inside enqueue() already: the store no longer counts.
    if (signal.aborted) {
      settled.catch(() => {});
      return reject(signal.reason);
    }
    signal.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    });
    settled.then(resolve, reject);
  });
}

/**
 * The chain is stored: its tasks are the backend's now, but for the keyed
 * ones it deduplicated, which end here, each told to `onTaskEnd`.
 */
function stored(
  chain: Chain,
  tasks: readonly BackendTask[],
  first: number,
  result: unknown,
  runner: HandOverRunner,
): void {
  const deduplicated = deduplicatedOf(result, tasks);
  if (deduplicated.length > 0) {
    // They leave the chain's remaining tasks, which count as handed over.
    chain.position += deduplicated.length;
    runner.deduplicated(deduplicated.length);
  }
  runner.ended(chain, "handedOver");
  chain.release();
  const { request, delivered } = chain;
  const told: TaskInfo[] = [
    ...deduplicated.map((index) => ({
      name: tasks[index]!.name,
      index: first + index,
      attempt: 0,
      request,
      delivered,
    })),
    // Stored earlier, and counted as handed over there: told, not counted.
    ...replacedOf(result),
  ];
  for (const info of told) tellDeduplicated(runner.onTaskEnd, info);
}

/** The replaced tasks an {@linkcode EnqueueResult} names, those that are tasks. */
function replacedOf(result: unknown): TaskInfo[] {
  try {
    const named = (result as EnqueueResult | undefined)?.replaced;
    if (!Array.isArray(named)) return [];
    return named.filter((info): info is TaskInfo =>
      typeof info === "object" && info !== null &&
      typeof info.name === "string"
    );
  } catch {
    return [];
  }
}

/**
 * The positions of keyed tasks an {@linkcode EnqueueResult} names, each
 * once, in order; what a backend resolved with is not trusted to be one.
 */
function deduplicatedOf(
  result: unknown,
  tasks: readonly BackendTask[],
): number[] {
  try {
    const named = (result as EnqueueResult | undefined)?.deduplicated;
    if (!Array.isArray(named)) return [];
    return [...new Set(named)].filter((index): index is number =>
      Number.isInteger(index) && tasks[index]?.key !== undefined
    ).sort((a, b) => a - b);
  } catch {
    return [];
  }
}

/**
 * The chain could not be stored: before its response, its tasks are
 * discarded (the handler fails with the error); after, they failed, each
 * reported.
 */
function lost(
  chain: Chain,
  tasks: readonly BackendTask[],
  first: number,
  error: unknown,
  beforeResponse: boolean,
  runner: HandOverRunner,
): void {
  // Ended before the reports, which may end drains that would give up on
  // it again.
  runner.ended(chain, beforeResponse ? "discarded" : "finished");
  chain.release();
  if (beforeResponse) return;
  tasks.forEach((task, index) =>
    report(runner.onTaskError, error, {
      name: task.name,
      index: first + index,
      attempt: 0,
      request: chain.request,
      delivered: chain.delivered,
    })
  );
}
