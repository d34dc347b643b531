// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { DrainOptions, DrainResult, TaskStats } from "./_runner.ts";
import { wrapHandler } from "./_wrap.ts";
import type { BackgroundTasks, RunOptions } from "./background_tasks.ts";
import type { TaskBackend } from "./task_backend.ts";

export type { DrainOptions, DrainResult, TaskStats };

/**
 * A `Deno.serve` handler that also receives the request's
 * {@linkcode BackgroundTasks}.
 *
 * @param request The incoming request.
 * @param info Deno's information about the connection and the response.
 * @param tasks The request's tasks, to run after its response has been sent.
 * @returns The response, or a promise of it.
 *
 * @example Declare a handler apart from the wrapper
 * ```ts
 * import {
 *   type BackgroundTasksHandler,
 *   withBackgroundTasks,
 * } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const app: BackgroundTasksHandler = (_request, _info, tasks) => {
 *   tasks.addTask(() => {});
 *   return new Response("ok");
 * };
 * const handler = withBackgroundTasks(app);
 * assert.equal(typeof handler, "function");
 * ```
 */
export type BackgroundTasksHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo,
  tasks: BackgroundTasks,
) => Response | Promise<Response>;

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
   * happened to their tasks meanwhile. Chains scheduled after the call are not
   * waited for. Call it after `server.shutdown()`, or in a test after the
   * response has been read.
   *
   * With a `timeout` (or a `signal` that aborts), it gives up on the tasks
   * still pending at the deadline: a running task's signal is aborted, no
   * further task of those chains starts, and they are counted as abandoned.
   *
   * @param options How long to wait before abandoning what is left.
   * @returns The summary; the promise never rejects.
   * @throws {RangeError} If `timeout` is negative or not a number.
   */
  drain(options?: DrainOptions): Promise<DrainResult>;
  /** A snapshot of the counts of queued, running and finished tasks. */
  readonly stats: TaskStats;
}

/**
 * What {@linkcode withBackgroundTasks} returns: a handler for `Deno.serve` (or
 * the `fetch` of a `deno serve` default export) that can also report and wait
 * for the work it has scheduled.
 *
 * @example Use it with Deno.serve and deno serve
 * ```ts
 * import { type DrainableHandler, withBackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const handler: DrainableHandler = withBackgroundTasks(() => new Response("ok"));
 * const serveHandler: Deno.ServeHandler = handler;
 * const defaultExport = { fetch: handler } satisfies Deno.ServeDefaultExport;
 * assert.equal(serveHandler, defaultExport.fetch);
 * ```
 */
export interface DrainableHandler extends TaskControls {
  /**
   * Handles a request like the wrapped handler, then runs its tasks once the
   * response has been sent.
   *
   * @param request The incoming request.
   * @param info Deno's information about the connection and the response.
   * @returns The wrapped handler's response, as the same object.
   */
  (request: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response>;
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
export interface WithBackgroundTasksOptions extends RunOptions {
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
   * Where to send each request's chain once its response has been sent,
   * instead of running it in this process: a durable queue or workers
   * elsewhere. Tasks must then be made by `defineTask`, and the backend
   * checks their arguments as they are added.
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

/**
 * Wraps a `Deno.serve` handler so that it receives a {@linkcode BackgroundTasks}
 * as its third argument, and runs the tasks it adds after the response has
 * been sent.
 *
 * The tasks of a request run one after another, in the order they were
 * added, starting one macrotask after `info.completed` has settled; a task
 * that throws or rejects is reported through `onTaskError` and the next one runs.
 * The chains of different requests are independent. If the handler throws,
 * rejects or returns something other than a `Response`, its tasks are
 * discarded and the error reaches `Deno.serve` unchanged. The response itself
 * is returned as it is: its body is never wrapped.
 *
 * The request is closed once its response completes, so tasks cannot read
 * its URL, headers or body: pass them what they need as arguments.
 *
 * @example The seed's notification endpoint
 * ```ts ignore
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 *
 * function writeNotification(email: string, message = "") {
 *   Deno.writeTextFileSync("log.txt", `notification for ${email}: ${message}`);
 * }
 *
 * Deno.serve(withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(writeNotification, "a@example.com", "some notification");
 *   return Response.json({ message: "Notification sent in the background" });
 * }));
 * ```
 *
 * @example Call the handler directly and wait for its tasks
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const log: string[] = [];
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask((line: string) => log.push(line), "after the response");
 *   log.push("response");
 *   return new Response("ok");
 * });
 *
 * const info = { remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 80 } };
 * const response = await handler(new Request("http://localhost/"), info as Deno.ServeHandlerInfo);
 * assert.equal(await response.text(), "ok");
 * await handler.drain();
 * assert.deepEqual(log, ["response", "after the response"]);
 * ```
 *
 * @param handler The handler to wrap.
 * @param options How to report failures and treat undelivered responses.
 * @returns A handler for `Deno.serve`, with `drain()` and `stats`.
 * @throws {TypeError} If `handler` is not a function or an option has the
 * wrong type.
 */
export function withBackgroundTasks(
  handler: BackgroundTasksHandler,
  options: WithBackgroundTasksOptions = {},
): DrainableHandler {
  return wrapHandler(handler, options, "Cannot wrap handler");
}
