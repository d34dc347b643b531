// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { wrapHandler } from "./_scope.ts";
import type {
  BackgroundTasks,
  DurableTasks,
} from "../core/background_tasks.ts";
import type { TaskControls } from "../api/task_controls.ts";
import type { WithBackgroundTasksOptions } from "../api/options.ts";
import type { TaskBackend } from "../api/task_backend.ts";

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
 * A `Deno.serve` handler whose options name a `backend`: it receives the
 * request's tasks as {@linkcode DurableTasks}, whose `addTask()` takes only
 * tasks made by `defineTask` (for the backend), and whose `inProcess` takes
 * the tasks that run in this process.
 *
 * @param request The incoming request.
 * @param info Deno's information about the connection and the response.
 * @param tasks The request's tasks: for the backend, and `inProcess`.
 * @returns The response, or a promise of it.
 *
 * @example Declare a handler for a backend apart from the wrapper
 * ```ts
 * import {
 *   defineTask,
 *   type DurableTasksHandler,
 *   withBackgroundTasks,
 * } from "@afterward/background-tasks";
 * import { kvBackend } from "@afterward/background-tasks/kv";
 * import assert from "node:assert/strict";
 *
 * const sendInvoice = defineTask((_context, _order: string) => {}, { name: "sendInvoice" });
 * const app: DurableTasksHandler = (_request, _info, tasks) => {
 *   tasks.addTask(sendInvoice, "42");
 *   tasks.inProcess.addTask(() => {});
 *   return new Response("Accepted", { status: 202 });
 * };
 * const kv = await Deno.openKv(":memory:");
 * const backend = kvBackend({ kv, tasks: [sendInvoice], listen: false });
 * assert.equal(typeof withBackgroundTasks(app, { backend }), "function");
 * await backend.close();
 * kv.close();
 * ```
 */
export type DurableTasksHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo,
  tasks: DurableTasks,
) => Response | Promise<Response>;

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
 * Wraps a `Deno.serve` handler whose tasks go to a `backend`, but for those
 * it adds to `tasks.inProcess`, which run in this process after the
 * response. Its `tasks` are {@linkcode DurableTasks}, so that `deno check`
 * refuses a plain function given to `addTask()` (the backend runs only
 * tasks made by `defineTask`); at run time, `addTask()` refuses it, and a
 * defined task the backend does not list, with a `TypeError`. One
 * wrapper's `drain()`, `stats` and (under `serve()`) shutdown count both.
 *
 * @example Store some tasks, run others here
 * ```ts
 * import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
 * import { kvBackend } from "@afterward/background-tasks/kv";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const sendInvoice = defineTask((_context, _order: string) => {}, { name: "sendInvoice" });
 * const kv = await Deno.openKv(":memory:");
 * const backend = kvBackend({ kv, tasks: [sendInvoice], listen: false });
 * const seen: string[] = [];
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(sendInvoice, "42");
 *   tasks.inProcess.addTask((order: string) => seen.push(order), "42");
 *   // @ts-expect-error: the backend runs only tasks made by defineTask
 *   const _wrong = () => tasks.addTask((order: string) => seen.push(order), "42");
 *   return new Response("Accepted", { status: 202 });
 * }, { backend });
 * await (await callHandler(handler, "/orders/42")).tasks;
 * assert.deepEqual(seen, ["42"]);
 * assert.deepEqual([handler.stats.handedOver, handler.stats.succeeded], [1, 1]);
 * await backend.close();
 * kv.close();
 * ```
 *
 * @param handler The handler to wrap.
 * @param options The backend, and how tasks run.
 * @returns A handler for `Deno.serve`, with `drain()` and `stats`.
 * @throws {TypeError} If `handler` is not a function, or an option unknown
 * or of the wrong type.
 * @throws {RangeError} If a number is out of range.
 */
export function withBackgroundTasks(
  handler: DurableTasksHandler,
  options: WithBackgroundTasksOptions & { backend: TaskBackend },
): DrainableHandler;
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
 * @throws {TypeError} If `handler` is not a function, `options` not an
 * object, or an option unknown or of the wrong type.
 * @throws {RangeError} If a number is out of range (`concurrency: 0`).
 */
export function withBackgroundTasks(
  handler: BackgroundTasksHandler,
  options?: WithBackgroundTasksOptions,
): DrainableHandler;
export function withBackgroundTasks(
  handler: BackgroundTasksHandler | DurableTasksHandler,
  options: WithBackgroundTasksOptions = {},
): DrainableHandler {
  return wrapHandler(
    handler as BackgroundTasksHandler,
    options,
    "Cannot wrap handler",
  );
}
