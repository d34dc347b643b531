// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The controls a wrapped handler or the Hono middleware offers (drain() and
// stats) and what they answer: types only, below every module that
// implements them.

import type { BackendStatus } from "./task_backend.ts";
import type { DrainOptions } from "./options.ts";

/**
 * A snapshot of a runner's work, from {@linkcode DrainableHandler.stats}.
 *
 * @example Expose the stats as metrics
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(() => {});
 *   return new Response("ok");
 * });
 * const { tasks } = await callHandler(handler, "/");
 * await tasks;
 * const { pending, succeeded, failed } = handler.stats;
 * assert.deepEqual({ pending, succeeded, failed }, { pending: 0, succeeded: 1, failed: 0 });
 * ```
 */
export interface TaskStats {
  /** Tasks accepted and not finished: `queued + running + storing`. */
  readonly pending: number;
  /**
   * Tasks waiting: for their response, for a free slot, behind earlier
   * tasks of their chain, or, keyed, for their turn in their key's lane or
   * their delay.
   */
  readonly queued: number;
  /** Tasks running now, a retry delay included. */
  readonly running: number;
  /** Tasks that succeeded, at their first attempt or a later one. */
  readonly succeeded: number;
  /** Tasks that failed at their last attempt, those that timed out included. */
  readonly failed: number;
  /** Tasks among `failed` whose last attempt timed out. */
  readonly timedOut: number;
  /** Attempts that were retries, over all tasks. */
  readonly retried: number;
  /** Tasks refused by `addTask()` because `maxPending` was reached. */
  readonly refused: number;
  /**
   * Tasks dropped because their handler threw, rejected or returned no
   * `Response`, or because a backend could not store them before their
   * response (the handler then fails).
   */
  readonly discarded: number;
  /** Tasks dropped with `skipUndelivered` because their response was not delivered. */
  readonly skipped: number;
  /**
   * Keyed tasks that did not run because a duplicate took their place
   * (`onDuplicate: "skip"` or `"replace"`).
   */
  readonly deduplicated: number;
  /** Tasks given up on at a drain deadline. */
  readonly abandoned: number;
  /** Tasks handed over to a backend, to run elsewhere. */
  readonly handedOver: number;
  /**
   * Tasks among `pending` that a backend is storing now: while it cannot
   * reach its store, they wait here (bound them with `maxPending`).
   */
  readonly storing: number;
  /** The backend's status, when there is one and it tells it. */
  readonly backend?: BackendStatus;
}

/**
 * What a drain waited for, and how it ended.
 *
 * @example Decide an exit code
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const handler = withBackgroundTasks(() => new Response("ok"));
 * const result = await handler.drain({ timeout: 1_000 });
 * const exitCode = result.abandoned === 0 ? 0 : 1;
 * assert.equal(exitCode, 0);
 * ```
 */
export interface DrainResult {
  /**
   * Tasks of the drained chains that succeeded while it waited; at a
   * `serve()` shutdown, with those a backend ran in this process (the Deno
   * KV listener) meanwhile.
   */
  readonly succeeded: number;
  /**
   * Tasks of the drained chains that failed (after their last attempt, a
   * timeout included) while it waited; at a `serve()` shutdown, with those
   * a backend ran in this process meanwhile.
   */
  readonly failed: number;
  /** Tasks of the drained chains that a backend took over while it waited. */
  readonly handedOver: number;
  /**
   * Tasks still pending at the deadline, running or not yet started; at a
   * `serve()` shutdown, with those a backend was running in this process
   * (see `handedBack`).
   */
  readonly abandoned: number;
  /** The abandoned tasks by name, with how many of each. */
  readonly abandonedTasks: Readonly<Record<string, number>>;
  /** Tasks among `abandoned` that a backend was still storing. */
  readonly unstored: number;
  /**
   * Tasks among `abandoned` that a backend was running in this process at a
   * `serve()` shutdown's deadline, and handed back to its store: they run
   * again, with the same id, once a process takes them (this one restarted,
   * or another on the same store). Nothing of theirs is lost, but they were
   * cut off: the exit code is 1, as for the other abandoned tasks. Present
   * only when the shutdown closed a backend that runs tasks here.
   */
  readonly handedBack?: number;
  /** The backend's status when the drain ended, when it tells it. */
  readonly backend?: BackendStatus;
}

/**
 * The runner's controls, on a wrapped handler and on the Hono middleware:
 * wait for the work, and see how much there is.
 *
 * @example Wait in a test
 * ```ts
 * import { type TaskControls, withBackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * async function settle(controls: TaskControls): Promise<void> {
 *   const result = await controls.drain();
 *   assert.equal(result.abandoned, 0);
 *   assert.equal(controls.stats.pending, 0);
 * }
 * await settle(withBackgroundTasks(() => new Response("ok")));
 * ```
 */
export interface TaskControls {
  /**
   * Resolves once every chain scheduled so far has finished, with what
   * happened to their tasks meanwhile, those their running tasks add
   * included: a plain task joins its chain, a keyed task (defined with a
   * `key`) its request's. Other chains scheduled after the call are not
   * waited for. Call it after `server.shutdown()`, or in a test after the
   * response has been read.
   *
   * With a `timeout` (or a `signal` that aborts), it gives up on the tasks
   * still pending at the deadline: a running task's signal is aborted, no
   * further task of those chains starts, and they are counted as abandoned.
   *
   * @param options How long to wait before abandoning what is left.
   * @returns The summary; the promise never rejects.
   * @throws {TypeError} If `options` is not an object, has a key it does not
   * know, or a value of the wrong type.
   * @throws {RangeError} If `timeout` is negative.
   */
  drain(options?: DrainOptions): Promise<DrainResult>;
  /** A snapshot of the counts of queued, running and finished tasks. */
  readonly stats: TaskStats;
}
