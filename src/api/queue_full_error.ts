// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { escapeControls } from "./_describe_task.ts";

/**
 * Thrown by `addTask()` when the runner already holds `maxPending` tasks: the
 * task is refused, not queued. Catch it in the handler and answer `503` with a
 * `Retry-After` header, so that the client comes back later; `serve()` does
 * so by default when the handler lets it through (`Retry-After: 5`).
 *
 * Tasks the request added before the refusal were accepted and still run. To
 * refuse a request whole, add its tasks before doing anything else.
 *
 * @example Answer 503 when the server is saturated
 * ```ts
 * import { QueueFullError, withBackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   try {
 *     tasks.addTask(() => new Promise((resolve) => setTimeout(resolve, 10)));
 *   } catch (error) {
 *     if (!(error instanceof QueueFullError)) throw error;
 *     return new Response("Busy, try again later", {
 *       status: 503,
 *       headers: { "retry-after": "5" },
 *     });
 *   }
 *   return new Response("Accepted", { status: 202 });
 * }, { maxPending: 1 });
 *
 * const info = {} as Deno.ServeHandlerInfo;
 * const first = await handler(new Request("http://localhost/"), info);
 * const second = await handler(new Request("http://localhost/"), info);
 * assert.equal(first.status, 202);
 * assert.equal(second.status, 503);
 * assert.equal(handler.stats.refused, 1);
 * await Promise.all([first.body?.cancel(), second.body?.cancel()]);
 * await handler.drain();
 * ```
 */
export class QueueFullError extends Error {
  /** The name of the task that was refused. */
  readonly task: string;
  /** The runner's `maxPending`. */
  readonly limit: number;

  /**
   * Constructs a new {@linkcode QueueFullError}.
   *
   * @param task The refused task's name.
   * @param limit The `maxPending` that was reached.
   */
  constructor(task: string, limit: number) {
    super(
      `Cannot add task "${
        escapeControls(task)
      }" as ${limit} tasks are already pending, the 'maxPending' limit`,
    );
    this.name = "QueueFullError";
    this.task = task;
    this.limit = limit;
  }
}
