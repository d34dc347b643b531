// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { AsyncLocalStorage } from "node:async_hooks";
import { ambient } from "../core/_ambient.ts";
import type { BackgroundTasks } from "../core/background_tasks.ts";

const context = new AsyncLocalStorage<BackgroundTasks>();
ambient.context = context;

/**
 * Returns the current request's {@linkcode BackgroundTasks} from anywhere in
 * the handler's asynchronous call tree, so that a helper deep down can add a
 * task without receiving `tasks` as an argument: FastAPI's dependency
 * injection, without the threading. Inside a running task it returns that
 * task's own chain, so a task can add the next one.
 *
 * It works only for handlers wrapped with `ambient: true` (by
 * `withBackgroundTasks`, `serve` or the Hono middleware). Tracking the context
 * uses `AsyncLocalStorage`, which costs: in the run of `deno task bench:http`
 * shown in the README (10 rounds, one trivial task), the server used 1.28×
 * the CPU per request of a bare handler with `ambient`, 1.08× without, and
 * served 0.80× the bare throughput at saturation against 0.96×. Pass `tasks`
 * explicitly on hot paths.
 *
 * @example A helper that adds a task on its own
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { getBackgroundTasks } from "@afterward/background-tasks/ambient";
 * import assert from "node:assert/strict";
 *
 * const audit: string[] = [];
 * async function recordLogin(user: string) {
 *   await Promise.resolve();
 *   getBackgroundTasks().addTask((who: string) => audit.push(who), user);
 * }
 *
 * const handler = withBackgroundTasks(async () => {
 *   await recordLogin("ada");
 *   return new Response("welcome");
 * }, { ambient: true });
 *
 * const response = await handler(new Request("http://localhost/login"), {} as Deno.ServeHandlerInfo);
 * await response.body?.cancel();
 * await handler.drain();
 * assert.deepEqual(audit, ["ada"]);
 * ```
 *
 * @returns The current request's tasks.
 * @throws {Error} Outside a request handled with `ambient: true`, or when no
 * handler was wrapped with it.
 */
export function getBackgroundTasks(): BackgroundTasks {
  const tasks = context.getStore();
  if (tasks !== undefined) return tasks;
  throw new Error(
    ambient.enabled
      ? "Cannot get background tasks outside a request handled with 'ambient: true'"
      : "Cannot get background tasks as no handler was wrapped with 'ambient: true'",
  );
}
