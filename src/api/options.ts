// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The options a caller gives a wrapped handler and its drains, in one place
// as p-queue keeps its own (source/options.ts), apart from the controls
// they make (task_controls.ts). A handler's options hold a backend, so this
// file sits above the backend contract; the options every runner takes
// (ExecutionOptions) sit below it, in task_info.ts with the events their
// hooks are told, since a backend's attach() receives them: one file
// holding both would close a cycle with the contract.

import type { TaskBackend } from "./task_backend.ts";
import type { ExecutionOptions } from "./task_info.ts";

/**
 * Options for {@linkcode DrainableHandler.drain}.
 *
 * @example Give up after a deadline
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(function forever() {
 *     return new Promise(() => {});
 *   });
 *   return new Response("ok");
 * });
 * await callHandler(handler, "/");
 * const result = await handler.drain({ timeout: 10 });
 * assert.deepEqual(result.abandonedTasks, { forever: 1 });
 * ```
 */
export interface DrainOptions {
  /**
   * Milliseconds to wait before giving up on the tasks still pending: their
   * signals are aborted and they are counted as abandoned.
   *
   * @default {Infinity}
   */
  timeout?: number;
  /** Gives up on the tasks still pending as soon as it is aborted. */
  signal?: AbortSignal;
}

/**
 * Options for {@linkcode withBackgroundTasks}.
 *
 * @example Options for a busy service
 * ```ts
 * import {
 *   QueueFullError,
 *   withBackgroundTasks,
 *   type WithBackgroundTasksOptions,
 * } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const options: WithBackgroundTasksOptions = {
 *   concurrency: 16,
 *   maxPending: 1,
 *   timeout: 30_000,
 *   skipUndelivered: true,
 *   onTaskEnd: ({ name, duration }) => void [name, duration],
 * };
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(() => new Promise((resolve) => setTimeout(resolve, 5)));
 *   return new Response("ok");
 * }, options);
 * const info = {} as Deno.ServeHandlerInfo;
 * await (await handler(new Request("http://localhost/"), info)).text();
 * await assert.rejects(
 *   async () => await handler(new Request("http://localhost/"), info),
 *   QueueFullError,
 * );
 * await handler.drain();
 * ```
 */
export interface WithBackgroundTasksOptions extends ExecutionOptions {
  /**
   * Skip a request's tasks when its response was not delivered, which Deno
   * signals by rejecting `info.completed` (an HTTP/2 client that went away).
   * By default the tasks still run, since the work was accepted; over
   * HTTP/1.1, Deno 2.9 reports every response as delivered.
   *
   * @default {false}
   */
  skipUndelivered?: boolean;
  /**
   * How many requests' chains may run at the same time. The others wait, in
   * the order their responses were sent, and count as `queued`.
   *
   * @default {Infinity}
   */
  concurrency?: number;
  /**
   * Make the request's tasks available to {@linkcode getBackgroundTasks}
   * anywhere in the handler's asynchronous call tree, and in its running
   * tasks. Needs `@afterward/background-tasks/ambient` to be imported; costs
   * about a fifth more server CPU per request (`AsyncLocalStorage`; see
   * `getBackgroundTasks` for the measurement).
   *
   * @default {false}
   */
  ambient?: boolean;
  /**
   * Where to send each request's chain instead of running it in this
   * process: a durable queue or workers elsewhere. The chain is stored
   * before its response goes out, or after with `handOver:
   * "after-response"`. Tasks must then be made by `defineTask` and listed
   * in the backend, which checks their arguments as they are added (the
   * handler's `tasks` are then typed {@linkcode DurableTasks}, so that
   * `deno check` refuses a plain function); those the handler adds to
   * `tasks.inProcess` run in this process instead, after the response.
   *
   * The hooks (`onTaskStart`, `onTaskEnd`, `onTaskError`), `timeout` and
   * `telemetry` given here apply to every attempt the backend runs in this
   * process (the Deno KV listener), together with the backend's own (see
   * `kvBackend()`). Where tasks run in other processes (BullMQ), their hooks
   * are those processes' own: give them to `bullmqWorker()`.
   *
   * @default {undefined, to run tasks in this process}
   */
  backend?: TaskBackend;
  /**
   * When a backend takes a request's chain. `"before-response"`: the
   * response goes out only once the backend has stored the chain, so a
   * client that got it knows its tasks survive a crash; concurrent requests
   * still share the backend's commits. If the chain cannot be stored, the
   * handler fails (Deno.serve's `onError`, a 500 by default) and its tasks
   * are discarded. `"after-response"`: the chain is handed over once the
   * response has been sent, which answers sooner but loses the chains of a
   * process killed in between.
   *
   * @default {"before-response"}
   */
  handOver?: "before-response" | "after-response";
  /**
   * How many tasks may be pending (queued or running) at once. Beyond it,
   * `addTask()` throws a {@linkcode QueueFullError}: catch it and answer `503`.
   * Tasks added by running tasks count too.
   *
   * @default {Infinity}
   */
  maxPending?: number;
}
