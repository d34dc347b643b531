// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What reports and hooks are told about tasks, and the options that say how
// tasks run: the vocabulary every other module speaks, importing nothing.

/**
 * The request whose handler added a task, captured while the handler ran.
 *
 * @example Read it in onTaskError
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const seen: string[] = [];
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(() => Promise.reject(new Error("smtp down")));
 *   return new Response("ok");
 * }, {
 *   onTaskError: (_error, info) => void seen.push(`${info.request?.method} ${info.request?.url}`),
 * });
 * const { tasks } = await callHandler(handler, new Request("http://localhost/signup?ref=ad", { method: "POST" }));
 * await tasks;
 * assert.deepEqual(seen, ["POST http://localhost/signup?ref=ad"]);
 * ```
 */
export interface RequestSummary {
  /** The request's method, such as `"POST"`. */
  readonly method: string;
  /** The request's full URL, query string included. */
  readonly url: string;
}

/**
 * What a report or hook is told about one task.
 *
 * @example Route failures by task name
 * ```ts
 * import { BackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const tasks = new BackgroundTasks();
 * tasks.addTask(function sendEmail() {
 *   throw new Error("smtp down");
 * });
 * const pages: string[] = [];
 * await tasks.run({
 *   onTaskError(_error, info) {
 *     if (info.name === "sendEmail") pages.push(`mail task #${info.index}, attempt ${info.attempt}`);
 *   },
 * });
 * assert.deepEqual(pages, ["mail task #0, attempt 1"]);
 * ```
 */
export interface TaskInfo {
  /** The task's name: its function's `name`, else `"anonymous"`. */
  readonly name: string;
  /**
   * The task's position in its chain, from 0. A keyed task is alone in a
   * chain of its own, in its key's lane: 0.
   */
  readonly index: number;
  /**
   * The attempt, from 1: above 1 only for a task defined with a `retry`
   * policy. For `onTaskError`, the last attempt made.
   */
  readonly attempt: number;
  /**
   * The task's stable id, the same as its context's, when a backend's worker
   * runs it: to match reports with deliveries, which may repeat.
   */
  readonly id?: string;
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
 *
 * @example Forward failures to an error tracker
 * ```ts
 * import { BackgroundTasks, type TaskErrorHandler } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const tracked: string[] = [];
 * const forward: TaskErrorHandler = async (error, info) => {
 *   await Promise.resolve(); // an HTTP call to the tracker, say
 *   tracked.push(`${info.name}: ${error instanceof Error ? error.message : String(error)}`);
 * };
 *
 * const tasks = new BackgroundTasks();
 * tasks.addTask(function resize() {
 *   throw new Error("image too large");
 * });
 * await tasks.run({ onTaskError: forward });
 * assert.deepEqual(tracked, ["resize: image too large"]);
 * ```
 */
export type TaskErrorHandler = (
  error: unknown,
  info: TaskInfo,
) => unknown;

/**
 * How an attempt ended: `"succeeded"`, `"failed"`, `"timedOut"` (it failed by
 * its timeout), or `"abandoned"` (a drain's deadline gave up on it while it
 * ran or waited to retry); or how a keyed task ended without an attempt,
 * `"deduplicated"`: a duplicate took its place (see `onDuplicate` in
 * {@linkcode DefineTaskOptions}), which is never an error.
 *
 * @example Count the attempts by outcome
 * ```ts
 * import { BackgroundTasks, type TaskOutcome } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const counts: Partial<Record<TaskOutcome, number>> = {};
 * const tasks = new BackgroundTasks();
 * tasks.addTask(() => {});
 * await tasks.run({
 *   onTaskEnd: ({ outcome }) => void (counts[outcome] = (counts[outcome] ?? 0) + 1),
 * });
 * assert.deepEqual(counts, { succeeded: 1 });
 * ```
 */
export type TaskOutcome =
  | "succeeded"
  | "failed"
  | "timedOut"
  | "abandoned"
  | "deduplicated";

/**
 * What `onTaskEnd` is told when an attempt is over.
 *
 * @example Log each attempt with its duration
 * ```ts
 * import { BackgroundTasks, type TaskEndEvent } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const lines: string[] = [];
 * const log = (event: TaskEndEvent) =>
 *   lines.push(`${event.name} ${event.outcome}${event.willRetry ? ", will retry" : ""}`);
 *
 * const tasks = new BackgroundTasks();
 * tasks.addTask(function thumbnail() {});
 * await tasks.run({ onTaskEnd: log });
 * assert.deepEqual(lines, ["thumbnail succeeded"]);
 * ```
 */
export interface TaskEndEvent extends TaskInfo {
  /** Milliseconds the attempt took: 0 for a task deduplicated. */
  readonly duration: number;
  /**
   * How the attempt ended: `"abandoned"` when a drain deadline gave up on the
   * task while it ran or waited to retry; `"deduplicated"`, told once with
   * `attempt` 0, when a keyed task will not run because a duplicate took
   * its place.
   */
  readonly outcome: TaskOutcome;
  /** What the attempt threw or rejected with; `undefined` when it succeeded. */
  readonly error: unknown;
  /** Whether another attempt follows: only the last failure reaches `onTaskError`. */
  readonly willRetry: boolean;
}

/**
 * The settled outcome of one task, in the manner of `Promise.allSettled`:
 * `status` is `"fulfilled"` with the task's `value`, or `"rejected"` with
 * the `reason` it threw or rejected with (which need not be an `Error`),
 * and `name` and `index` say which task it was.
 *
 * @example Read values and count failures
 * ```ts
 * import { BackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const tasks = new BackgroundTasks();
 * tasks.addTask(function total(a: number, b: number) {
 *   return a + b;
 * }, 2, 3);
 * tasks.addTask(() => Promise.reject("not an Error"));
 * const [first, second] = await tasks.run({ onTaskError: () => {} });
 * assert.ok(first?.status === "fulfilled");
 * assert.equal(first.value, 5);
 * assert.ok(second?.status === "rejected");
 * assert.deepEqual([second.name, second.index, second.reason], ["anonymous", 1, "not an Error"]);
 * ```
 */
export type TaskResult = PromiseSettledResult<unknown> & {
  /** The task's name. */
  readonly name: string;
  /** The task's position in its chain, from 0. */
  readonly index: number;
};

/**
 * How tasks are executed and observed: the options every runner takes,
 * {@linkcode BackgroundTasks.prototype.run}, {@linkcode withBackgroundTasks}
 * (so `serve()` and the Hono middleware) and the backends' workers.
 *
 * @example Bound every attempt and observe it
 * ```ts
 * import { BackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const ends: string[] = [];
 * const tasks = new BackgroundTasks();
 * tasks.addTask(function hang() {
 *   return new Promise(() => {});
 * });
 * await tasks.run({
 *   timeout: 10,
 *   onTaskEnd: (event) => void ends.push(`${event.name}: ${event.outcome}`),
 *   onTaskError: () => {},
 * });
 * assert.deepEqual(ends, ["hang: timedOut"]);
 * ```
 */
export interface ExecutionOptions {
  /**
   * Called once for each task that fails, after its last attempt, with the
   * task's name, index and request.
   *
   * @default {logTaskError}
   */
  onTaskError?: TaskErrorHandler;
  /**
   * Milliseconds an attempt may take before it is given up and reported as a
   * `TaskTimeoutError`; the chain goes on with the next task. A task made by
   * `defineTask` can set its own. JavaScript cannot stop a function, so a task
   * that ignores its signal keeps running unobserved: the limit bounds how long
   * the chain waits for it.
   *
   * @default {Infinity}
   */
  timeout?: number;
  /**
   * Called when an attempt starts. Not awaited; a throw or rejection is
   * written by the default reporter and changes nothing else.
   */
  onTaskStart?: (event: TaskInfo) => unknown;
  /**
   * Called when an attempt ends, with its duration and outcome, including the
   * failures that will be retried. Not awaited; a throw or rejection is
   * written by the default reporter and changes nothing else.
   */
  onTaskEnd?: (event: TaskEndEvent) => unknown;
  /**
   * Whether each attempt is a span in its request's trace, and is measured,
   * through Deno's built-in OpenTelemetry. It only acts when Deno's
   * telemetry is on (`OTEL_DENO=true`); `false` turns it off there. Off,
   * it costs nothing. The hooks are called either way.
   *
   * @default {true}
   */
  telemetry?: boolean;
}
