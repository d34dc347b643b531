// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Giving a chain to a backend: what is handed over is a snapshot of the
// whole chain, taken when it moves to `storing` (a task added after starts a
// chain of its own). The backend keeps trying through passing faults until
// the chain is stored or the chain's signal aborts, when the runner gives up
// on it. Before its response, the response waits for the outcome; after,
// a chain that could not be stored is reported as failed. How the store
// ended goes to the runner, which ends the chain and counts.

import type { Chain, Task } from "./_chain.ts";
import { isKeyed } from "./_keyed_task.ts";
import type {
  BackendTask,
  Deduplicated,
  TaskBackend,
} from "../api/task_backend.ts";
import { hook, report } from "./_report.ts";
import type { Telemetry } from "./_telemetry.ts";
import { toPromise } from "../util/_promise.ts";
import type {
  TaskEndEvent,
  TaskErrorHandler,
  TaskInfo,
} from "../api/task_info.ts";

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
  /** Deno's telemetry, when on: the chain then carries its trace. */
  readonly telemetry: Telemetry | undefined;
  /**
   * Ends the chain, once the store is over: stored (`handedOver`), or lost
   * before its response (`discarded`) or after (`finished`, its tasks
   * failed). Of a chain handed over, `deduplicated` of its tasks were not
   * stored, a duplicate taking their place.
   */
  ended(
    chain: Chain,
    to: "handedOver" | "discarded" | "finished",
    deduplicated?: number,
  ): void;
  /** Told of the tasks the store deduplicated. */
  readonly onTaskEnd: ((event: TaskEndEvent) => unknown) | undefined;
  /**
   * A task stored earlier will not run: the chain's duplicate took its place
   * as it was stored (the chain's own such tasks count as it ends).
   */
  replaced(): void;
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
  let keyed = false;
  for (let task = chain.head; task !== undefined; task = task.next) {
    const given = backendTask(task);
    keyed ||= given.key !== undefined;
    tasks.push(given);
  }
  const { signal } = chain;
  // What the store deduplicated, if it keeps keyed tasks and the chain has.
  let deduplicated: Deduplicated | undefined;
  let storing: Promise<void>;
  try {
    storing = backend.enqueue(
      {
        // Made at its first task's accept().
        id: chain.id ??= crypto.randomUUID(),
        tasks,
        request: chain.request,
        delivered: chain.delivered,
        traceparent: runner.telemetry?.traceparent(chain.trace),
      },
      keyed ? { signal, onDeduplicated: (told) => deduplicated = told } : {
        signal,
      },
    );
  } catch (error) {
    storing = Promise.reject(error);
  }
  const settled = toPromise(storing).then(() => {
    // Given up on at a deadline: counted then.
    if (chain.state !== "storing") return;
    stored(chain, tasks, first, deduplicated, runner);
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
 * The chain is stored: its tasks are the backend's now, but for those its
 * store deduplicated, which the runner is told of.
 */
function stored(
  chain: Chain,
  tasks: readonly BackendTask[],
  first: number,
  deduplicated: Deduplicated | undefined,
  runner: HandOverRunner,
): void {
  if (typeof deduplicated !== "object" || deduplicated === null) {
    runner.ended(chain, "handedOver");
    chain.release();
    return;
  }
  const { indexes, replaced } = deduplicated;
  // Each of the chain's keyed tasks once, whatever the backend said.
  const own = [...new Set(indexes ?? [])].filter((index) =>
    tasks[index]?.key !== undefined
  );
  const { request, delivered } = chain;
  runner.ended(chain, "handedOver", own.length);
  chain.release();
  for (const index of own) {
    tellDeduplicated(runner, {
      name: tasks[index]!.name,
      index: first + index,
      attempt: 0,
      request,
      delivered,
    });
  }
  for (const info of replaced ?? []) {
    runner.replaced();
    tellDeduplicated(runner, info);
  }
}

/** Tells `onTaskEnd` that a keyed task will not run: a duplicate took its place. */
function tellDeduplicated(runner: HandOverRunner, info: TaskInfo): void {
  hook("onTaskEnd", runner.onTaskEnd, {
    ...info,
    duration: 0,
    outcome: "deduplicated",
    error: undefined,
    willRetry: false,
  });
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
