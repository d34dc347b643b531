// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { Chain, internals } from "./_chain.ts";
import { runChain } from "./_runner.ts";
import { describe } from "./_util.ts";
import { logTaskError } from "./log_task_error.ts";

/** The request whose handler added a task, captured while the handler ran. */
export interface RequestSummary {
  /** The request's method, such as `"POST"`. */
  readonly method: string;
  /** The request's full URL, query string included. */
  readonly url: string;
}

/** What a report or hook is told about one task. */
export interface TaskInfo {
  /** The task's name: its function's `name`, else `"anonymous"`. */
  readonly name: string;
  /** The task's position in its chain, from 0. */
  readonly index: number;
  /**
   * The request whose handler added the task, or `undefined` when the tasks
   * were run with {@linkcode BackgroundTasks.prototype.run} outside a server.
   */
  readonly request: RequestSummary | undefined;
  /**
   * Whether the response reached the client: `true` when `info.completed`
   * resolved, `false` when it rejected (an HTTP/2 client went away), and
   * `undefined` when the server gave no such signal.
   */
  readonly delivered: boolean | undefined;
}

/**
 * Called once for each task that throws or rejects. It may return a promise;
 * the chain waits for it before the next task. If it throws or rejects, the
 * default reporter writes both errors and the chain goes on.
 */
export type TaskErrorHandler = (
  error: unknown,
  info: TaskInfo,
) => void | Promise<void>;

/** The outcome of a task that returned or resolved. */
export interface TaskFulfilledResult {
  /** Always `"fulfilled"`. */
  readonly status: "fulfilled";
  /** The task's name. */
  readonly name: string;
  /** The task's position in its chain, from 0. */
  readonly index: number;
  /** What the task returned or resolved with. */
  readonly value: unknown;
}

/** The outcome of a task that threw or rejected. */
export interface TaskRejectedResult {
  /** Always `"rejected"`. */
  readonly status: "rejected";
  /** The task's name. */
  readonly name: string;
  /** The task's position in its chain, from 0. */
  readonly index: number;
  /** What the task threw or rejected with, which need not be an `Error`. */
  readonly reason: unknown;
}

/** The settled outcome of one task, in the manner of `Promise.allSettled`. */
export type TaskResult = TaskFulfilledResult | TaskRejectedResult;

/** Options for {@linkcode BackgroundTasks.prototype.run}. */
export interface RunOptions {
  /**
   * Called once for each task that throws or rejects.
   *
   * @default {logTaskError}
   */
  onError?: TaskErrorHandler;
}

/**
 * The tasks one request wants done after its response, in the order they were
 * added: the counterpart of FastAPI's `BackgroundTasks`.
 *
 * {@linkcode withBackgroundTasks} creates one per request and passes it to the
 * handler as its third argument; hand the same object to any helper that
 * should add work, and every task joins one chain. Once the response has been
 * sent, the tasks run one after another, each awaited; one that throws or
 * rejects is reported and the next one runs.
 *
 * On its own, with {@linkcode BackgroundTasks.prototype.run}, it runs tasks
 * anywhere: in a unit test, or under another framework.
 *
 * @example Add tasks and run them
 * ```ts
 * import { BackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const sent: string[] = [];
 * async function sendEmail(to: string, subject = "") {
 *   await Promise.resolve();
 *   sent.push(`${to}: ${subject}`);
 * }
 *
 * const tasks = new BackgroundTasks();
 * tasks.addTask(sendEmail, "a@example.com", "Welcome");
 * tasks.addTask(sendEmail, "b@example.com");
 *
 * const results = await tasks.run();
 * assert.deepEqual(sent, ["a@example.com: Welcome", "b@example.com: "]);
 * assert.deepEqual(results.map((result) => result.status), [
 *   "fulfilled",
 *   "fulfilled",
 * ]);
 * ```
 */
export class BackgroundTasks {
  #chain: Chain;

  /** Creates an empty list of tasks, to fill with `addTask()` and execute with `run()`. */
  constructor() {
    this.#chain = new Chain();
  }

  /**
   * Adds a task: `fn` will be called with `args` after the response has been
   * sent, once the tasks added before it have finished. `fn` may be
   * synchronous or return a promise; `args` are checked against its
   * parameters at compile time.
   *
   * Methods lose their `this` when passed on their own: add
   * `mailer.send.bind(mailer)` or `(to) => mailer.send(to)`.
   *
   * @example Arguments are type-checked
   * ```ts
   * import { BackgroundTasks } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * function writeNotification(email: string, message = "") {
   *   return `notification for ${email}: ${message}`;
   * }
   *
   * const tasks = new BackgroundTasks();
   * tasks.addTask(writeNotification, "a@example.com", "some notification");
   * // @ts-expect-error: a number is not an email address
   * tasks.addTask(writeNotification, 42);
   * assert.equal(tasks.size, 2);
   * ```
   *
   * @typeParam A The parameters of `fn`, which `args` must match.
   * @param fn The function to call.
   * @param args The arguments to call it with.
   * @throws {TypeError} If `fn` is not a function.
   * @throws {Error} If the tasks can no longer change: they have already run,
   * or the handler failed or returned without adding any.
   */
  addTask<A extends unknown[]>(
    fn: (...args: A) => unknown,
    ...args: NoInfer<A>
  ): void {
    if (typeof fn !== "function") {
      throw new TypeError(
        `Cannot add task as 'fn' must be a function: current value is ${
          describe(fn)
        }`,
      );
    }
    this.#chain.add({
      fn: fn as (...args: unknown[]) => unknown,
      args,
      name: fn.name || "anonymous",
    });
  }

  /**
   * How many tasks have been added, including those that have already run.
   *
   * @example Usage
   * ```ts
   * import { BackgroundTasks } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * const tasks = new BackgroundTasks();
   * tasks.addTask(() => {});
   * assert.equal(tasks.size, 1);
   * ```
   *
   * @returns The number of tasks added.
   */
  get size(): number {
    return this.#chain.tasks.length;
  }

  /**
   * Runs the tasks in the order they were added, each awaited, and resolves
   * with one settled result per task. A task that throws or rejects is
   * reported through `onError` and the next one runs; the promise never
   * rejects. Tasks added while it runs join the end.
   *
   * The tasks run once: calling `run()` again returns the same promise.
   *
   * @example Failures are reported and do not stop the chain
   * ```ts
   * import { BackgroundTasks } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * const tasks = new BackgroundTasks();
   * tasks.addTask(function failing() {
   *   throw new Error("boom");
   * });
   * tasks.addTask(() => "still runs");
   *
   * const failed: string[] = [];
   * const results = await tasks.run({
   *   onError: (_error, info) => {
   *     failed.push(info.name);
   *   },
   * });
   * assert.deepEqual(failed, ["failing"]);
   * assert.equal(results[1]?.status, "fulfilled");
   * ```
   *
   * @param options How to report failures.
   * @returns The settled results, one per task, in order.
   * @throws {TypeError} If `onError` is given but is not a function.
   */
  run(options: RunOptions = {}): Promise<TaskResult[]> {
    const { onError = logTaskError } = options;
    if (typeof onError !== "function") {
      throw new TypeError(
        `Cannot run tasks as 'onError' must be a function: current value is ${
          describe(onError)
        }`,
      );
    }
    return runChain(this.#chain, onError);
  }

  /**
   * Shows the number of tasks and their names, never their arguments.
   *
   * @param inspect Deno's inspect function.
   * @returns A one-line description.
   */
  [Symbol.for("Deno.customInspect")](
    inspect: (value: unknown) => string,
  ): string {
    const chain = this.#chain;
    const state = chain.idle ? "open" : chain.open ? "running" : "closed";
    return `BackgroundTasks ${inspect({ size: this.size, state })}`;
  }

  static {
    internals.chainOf = (tasks) => tasks.#chain;
  }
}
