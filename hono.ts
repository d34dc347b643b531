// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Background tasks for Hono on Deno.
 *
 * Hono on Deno has no `waitUntil`: its `c.executionCtx` throws there. Two
 * ways fill the gap, and they combine:
 *
 * - the {@linkcode backgroundTasks} middleware puts the request's tasks at a
 *   typed `c.var.backgroundTasks` and runs them after `c.env.completed` when
 *   the app is served by `Deno.serve(app.fetch)`;
 * - serving the app through `withBackgroundTasks()` or `serve()` and passing
 *   the tasks as Hono's execution context gives Hono code a working
 *   `c.executionCtx.waitUntil()`.
 *
 * ```ts ignore
 * import { serve } from "@afterward/background-tasks";
 * import { backgroundTasks, type BackgroundTasksVariables } from "@afterward/background-tasks/hono";
 * import { Hono } from "npm:hono@^4";
 *
 * const app = new Hono<{ Variables: BackgroundTasksVariables }>();
 * app.use(backgroundTasks());
 * app.post("/orders", (c) => {
 *   c.var.backgroundTasks.addTask(sendReceipt, "order-42");
 *   c.executionCtx.waitUntil(analytics.flush());
 *   return c.json({ ok: true }, 201);
 * });
 *
 * serve({ port: 8000 }, (request, info, tasks) => app.fetch(request, info, tasks));
 * ```
 *
 * The middleware imports nothing from Hono at run time, only its types.
 *
 * @module
 */

export * from "./src/http/hono_middleware.ts";
