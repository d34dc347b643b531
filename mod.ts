// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Run work after the response has been sent: FastAPI's `BackgroundTasks`
 * for `Deno.serve`.
 *
 * Wrap a handler with {@linkcode withBackgroundTasks}; it receives a
 * {@linkcode BackgroundTasks} as its third argument. Add tasks with
 * {@linkcode BackgroundTasks.prototype.addTask | addTask(fn, ...args)}, whose
 * arguments are type-checked against `fn`, and return at once. Once the
 * response has been sent, the request's tasks run one after another, in the
 * order they were added, from a chain detached from the request. A task that
 * throws or rejects is reported (to `console.error` by default, or to your
 * `onTaskError`) and the next one runs; nothing a task does can crash the server.
 *
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
 * What the wrapper guarantees:
 *
 * - Tasks start after `info.completed` has settled and one macrotask more, so
 *   even a task that blocks the event loop cannot delay its own response; a
 *   streamed body is sent in full first.
 * - Pass the same `tasks` to any helper (FastAPI's dependencies): everything
 *   it adds joins the one chain. Tasks added by a running task join the end.
 * - If the handler throws or rejects, its tasks are discarded and the error
 *   reaches `Deno.serve` unchanged. The `Response` is returned as the same
 *   object; its body is never wrapped.
 * - The request is closed once the response completes: give tasks copies of
 *   what they need, not the `Request`.
 * - `handler.drain()` waits for every chain scheduled so far (for tests and
 *   shutdown); `handler.stats.pending` counts tasks not yet finished.
 *
 * For production, {@linkcode serve} wraps `Deno.serve` with the same handler
 * and shuts down gracefully on SIGINT and SIGTERM: it finishes the responses
 * in flight, drains the tasks within `shutdownTimeout`, aborts and names what
 * is left, and exits 0 or 1. The options bound the work (`concurrency`,
 * `maxPending`, whose overflow throws a {@linkcode QueueFullError} to answer
 * with a 503), time it out (`timeout`), and observe it (`onTaskStart`,
 * `onTaskEnd`, `handler.stats`). {@linkcode defineTask} gives a task a name, a
 * timeout, a retry policy and an `AbortSignal`.
 *
 * ```ts ignore
 * import { defineTask, serve } from "@afterward/background-tasks";
 *
 * const sendReceipt = defineTask(async ({ signal }, orderId: string) => {
 *   await fetch(`https://mail.internal/receipts/${orderId}`, { method: "POST", signal });
 * }, { name: "sendReceipt", timeout: 10_000, retry: { maxAttempts: 5 } });
 *
 * serve({ port: 8000, concurrency: 16, maxPending: 10_000 }, (_request, _info, tasks) => {
 *   tasks.addTask(sendReceipt, "order-42");
 *   return new Response("Accepted", { status: 202 });
 * });
 * ```
 *
 * More entry points: `@afterward/background-tasks/hono` (a Hono middleware,
 * and `waitUntil()` for Hono's `c.executionCtx`), `/testing` (call a handler
 * and wait for its tasks) and `/ambient` (`getBackgroundTasks()` from any
 * depth of a request), `/kv` (a durable backend on Deno KV), `/bullmq`
 * (worker processes on Redis) and `/backend` (the types for writing a
 * backend of your own).
 *
 * Tasks live in the process: a crash or a `SIGKILL` loses those not yet run.
 *
 * @module
 */

export * from "./src/core/background_tasks.ts";
export * from "./src/api/define_task.ts";
export * from "./src/api/log_task_error.ts";
export * from "./src/api/options.ts";
export * from "./src/api/queue_full_error.ts";
export * from "./src/http/serve.ts";
export type {
  BackendCloseOptions,
  BackendCloseResult,
  BackendStatus,
  TaskBackend,
} from "./src/api/task_backend.ts";
export * from "./src/api/task_controls.ts";
export * from "./src/api/task_info.ts";
export * from "./src/http/with_background_tasks.ts";
