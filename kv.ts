// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * A durable backend on Deno KV: the request's tasks survive a crash, a
 * restart or a deploy. Pass {@linkcode kvBackend} as the `backend` option of
 * `withBackgroundTasks()` or `serve()`; tasks must then be made by
 * `defineTask` and listed in the backend's `tasks`, or added to
 * `tasks.inProcess` to run in this process. Needs `--unstable-kv` and a
 * database file on this host: Deno KV's queues do not work on Deno Deploy,
 * nor with any remote database (KV Connect).
 *
 * ```ts ignore
 * import { defineTask, serve } from "@afterward/background-tasks";
 * import { kvBackend } from "@afterward/background-tasks/kv";
 *
 * const sendEmail = defineTask(async ({ id }, to: string) => {
 *   await mailer.send({ to, idempotencyKey: id });
 * }, { name: "sendEmail", retry: { maxAttempts: 5 } });
 *
 * const kv = await Deno.openKv("./tasks.sqlite3");
 * serve({ backend: kvBackend({ kv, tasks: [sendEmail] }) }, (_request, _info, tasks) => {
 *   tasks.addTask(sendEmail, "a@example.com");
 *   return new Response("Accepted", { status: 202 });
 * });
 * ```
 *
 * @module
 */

export * from "./src/kv/kv_backend.ts";
