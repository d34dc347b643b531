// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { RequestScopes, tasksOf } from "./_scope.ts";
import {
  BackgroundTasks,
  type DurableTasks,
} from "../core/background_tasks.ts";
import type { TaskControls } from "../api/task_controls.ts";
import type { WithBackgroundTasksOptions } from "../api/options.ts";

/**
 * The variable {@linkcode backgroundTasks} sets on Hono's context:
 * `c.var.backgroundTasks`.
 *
 * @example Declare it with your own variables
 * ```ts
 * import type { BackgroundTasksVariables } from "@afterward/background-tasks/hono";
 * import { Hono } from "npm:hono@^4";
 *
 * const app = new Hono<{ Variables: BackgroundTasksVariables & { user: string } }>();
 * app.get("/", (c) => c.text(`${c.var.user}: ${c.var.backgroundTasks.size}`));
 * ```
 */
export interface BackgroundTasksVariables {
  /** The request's tasks, to run after its response has been sent. */
  backgroundTasks: BackgroundTasks;
}

/**
 * The variable {@linkcode backgroundTasks} sets on Hono's context when its
 * options name a `backend`: declare it instead of
 * {@linkcode BackgroundTasksVariables}, and `deno check` refuses a plain
 * function given to `c.var.backgroundTasks.addTask()` (the backend runs
 * only tasks made by `defineTask`); `c.var.backgroundTasks.inProcess` takes
 * the tasks that run in this process. (Hono's types do not tie an app's
 * variables to its middleware: declare the one that matches.)
 *
 * @example Durable orders, in-process mails
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import { backgroundTasks, type DurableTasksVariables } from "@afterward/background-tasks/hono";
 * import { kvBackend } from "@afterward/background-tasks/kv";
 * import { Hono } from "npm:hono@^4";
 * import assert from "node:assert/strict";
 *
 * const shipOrder = defineTask((_context, _order: string) => {}, { name: "shipOrder" });
 * const kv = await Deno.openKv(":memory:");
 * const backend = kvBackend({ kv, tasks: [shipOrder], listen: false });
 * const middleware = backgroundTasks({ backend });
 * const mailed: string[] = [];
 * const app = new Hono<{ Variables: DurableTasksVariables }>().use(middleware);
 * app.post("/orders/:id", (c) => {
 *   c.var.backgroundTasks.addTask(shipOrder, c.req.param("id"));
 *   c.var.backgroundTasks.inProcess.addTask((id: string) => mailed.push(id), c.req.param("id"));
 *   // @ts-expect-error: the backend runs only tasks made by defineTask
 *   const _wrong = () => c.var.backgroundTasks.addTask((id: string) => mailed.push(id), "42");
 *   return c.text("Accepted", 202);
 * });
 * assert.equal((await app.request("/orders/42", { method: "POST" })).status, 202);
 * await middleware.drain();
 * assert.deepEqual(mailed, ["42"]);
 * await backend.close();
 * kv.close();
 * ```
 */
export interface DurableTasksVariables {
  /** The request's tasks: for the backend, and `inProcess`. */
  backgroundTasks: DurableTasks;
}

/**
 * The part of Hono's `Context` that the middleware uses. Hono's context
 * satisfies it when the app's environment declares
 * {@linkcode BackgroundTasksVariables}; the middleware depends on Hono's
 * types only through this shape.
 *
 * @example Hono's context satisfies it
 * ```ts
 * import type { HonoContext } from "@afterward/background-tasks/hono";
 * import type { BackgroundTasksVariables } from "@afterward/background-tasks/hono";
 * import { Hono } from "npm:hono@^4";
 * import assert from "node:assert/strict";
 *
 * const app = new Hono<{ Variables: BackgroundTasksVariables }>();
 * app.get("/", (c) => {
 *   const shape: HonoContext = c;
 *   return c.text(shape.req.raw.method);
 * });
 * assert.equal(await (await app.request("/")).text(), "GET");
 * ```
 */
export interface HonoContext {
  /** The request, as Hono received it in `req.raw`. */
  readonly req: { readonly raw: Request };
  /** Hono's `env`: Deno's `ServeHandlerInfo` under `Deno.serve(app.fetch)`. */
  readonly env: unknown;
  /** The error a handler threw, once Hono has answered with its error handler. */
  readonly error: Error | undefined;
  /** The response the next handlers answered with. */
  readonly res: Response;
  /** Hono's execution context: a getter that throws when there is none. */
  readonly executionCtx: unknown;
  /**
   * Sets a context variable.
   *
   * @param key The variable's name.
   * @param value The request's tasks.
   */
  set(key: "backgroundTasks", value: BackgroundTasks): void;
}

/**
 * What {@linkcode backgroundTasks} returns: a Hono middleware with the
 * runner's `drain()` and `stats`.
 *
 * @example Drain the middleware's tasks on shutdown
 * ```ts
 * import { backgroundTasks, type BackgroundTasksVariables } from "@afterward/background-tasks/hono";
 * import { Hono } from "npm:hono@^4";
 * import assert from "node:assert/strict";
 *
 * const middleware = backgroundTasks();
 * const app = new Hono<{ Variables: BackgroundTasksVariables }>().use(middleware);
 * app.get("/", (c) => {
 *   c.var.backgroundTasks.addTask(() => {});
 *   return c.text("ok");
 * });
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
 * await (await fetch(`http://127.0.0.1:${server.addr.port}/`)).text();
 * await server.shutdown();
 * const result = await middleware.drain({ timeout: 5_000 });
 * assert.equal(result.abandoned, 0);
 * assert.equal(middleware.stats.succeeded, 1);
 * ```
 */
export interface BackgroundTasksMiddleware extends TaskControls {
  /**
   * Handles one request: makes its tasks, calls the next handlers, and
   * schedules the tasks once the response has been sent.
   *
   * @param c Hono's context.
   * @param next Calls the next handlers.
   * @returns A promise that settles once the next handlers have.
   */
  (c: HonoContext, next: () => Promise<void>): Promise<void>;
}

/**
 * A Hono middleware that gives each request a {@linkcode BackgroundTasks} at
 * `c.var.backgroundTasks`, and runs what it adds once the response has been
 * sent, with the same guarantees as `withBackgroundTasks`.
 *
 * Served by `Deno.serve(app.fetch)`, the tasks wait for `c.env.completed`
 * (Deno's `info`); called another way, as `app.request()` does in tests, they
 * run one macrotask after the response. If a handler throws, Hono answers
 * with its error handler and the request's tasks are discarded, as they are
 * when it answers with something other than a `Response`.
 *
 * When the app is served with `withBackgroundTasks()` or `serve()` and
 * receives their tasks as its execution context
 * (`app.fetch(request, info, tasks)`), the middleware puts those tasks at
 * `c.var.backgroundTasks` instead of making its own: everything joins one
 * chain, and the wrapper's options and shutdown apply. Its own options then
 * go unused. A test does the same with Hono's
 * `app.request(path, init, env, new BackgroundTasks())`, then `run()`.
 *
 * With a `backend`, `c.var.backgroundTasks.addTask()` takes the tasks the
 * backend runs, and `c.var.backgroundTasks.inProcess` those that run in this
 * process: declare {@linkcode DurableTasksVariables} so that `deno check`
 * knows.
 *
 * @example Served by Deno.serve
 * ```ts ignore
 * import { backgroundTasks, type BackgroundTasksVariables } from "@afterward/background-tasks/hono";
 * import { Hono } from "npm:hono@^4";
 *
 * const app = new Hono<{ Variables: BackgroundTasksVariables }>();
 * app.use(backgroundTasks({ onTaskError: (error, info) => console.error(info.name, error) }));
 * app.post("/send-notification/:email", (c) => {
 *   c.var.backgroundTasks.addTask(writeNotification, c.req.param("email"), "some notification");
 *   return c.json({ message: "Notification sent in the background" });
 * });
 *
 * Deno.serve(app.fetch);
 * ```
 *
 * @example Tested with app.request()
 * ```ts
 * import { backgroundTasks, type BackgroundTasksVariables } from "@afterward/background-tasks/hono";
 * import { Hono } from "npm:hono@^4";
 * import assert from "node:assert/strict";
 *
 * const log: string[] = [];
 * const tasks = backgroundTasks();
 * const app = new Hono<{ Variables: BackgroundTasksVariables }>();
 * app.use(tasks);
 * app.get("/", (c) => {
 *   c.var.backgroundTasks.addTask(() => log.push("after"));
 *   log.push("response");
 *   return c.text("ok");
 * });
 *
 * const response = await app.request("/");
 * assert.equal(await response.text(), "ok");
 * await tasks.drain();
 * assert.deepEqual(log, ["response", "after"]);
 * ```
 *
 * @param options How tasks run, as for `withBackgroundTasks`.
 * @returns The middleware, with `drain()` and `stats`.
 * @throws {TypeError} If an option has the wrong type.
 * @throws {RangeError} If a number is out of range.
 */
export function backgroundTasks(
  options: WithBackgroundTasksOptions = {},
): BackgroundTasksMiddleware {
  const scopes = new RequestScopes(options, "Cannot create middleware");
  const { ambient } = scopes;

  async function backgroundTasksMiddleware(
    c: HonoContext,
    next: () => Promise<void>,
  ): Promise<void> {
    const given = executionContextOf(c);
    if (given instanceof BackgroundTasks) {
      c.set("backgroundTasks", given);
      await next();
      return;
    }
    const chain = scopes.open(c.req.raw);
    const tasks = tasksOf(chain);
    c.set("backgroundTasks", tasks);
    try {
      await (ambient === undefined ? next() : ambient.run(tasks, next));
    } catch (error) {
      scopes.fail(chain);
      throw error;
    }
    // Hono turns a handler's error into a response and records it here.
    if (c.error !== undefined) return scopes.fail(chain);
    // What the handlers answered: Hono keeps it here even when it is not a
    // Response. A promise when a backend stores the tasks first.
    const answered = scopes.respond(
      chain,
      c.res,
      c.req.raw,
      c.env as Deno.ServeHandlerInfo,
    );
    if (answered instanceof Promise) await answered;
  }

  return scopes.controls(backgroundTasksMiddleware);
}

function executionContextOf(c: HonoContext): unknown {
  try {
    return c.executionCtx;
  } catch {
    // Hono throws when the app was called without an execution context.
    return undefined;
  }
}
