// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV backend's failed task: a type only, below both the backend, which
// lists them, and its consumer, which writes them.

import type { FailedTask } from "../api/task_backend.ts";

/**
 * A task the Deno KV backend keeps because it will not run again unless
 * retried: a {@linkcode FailedTask}, with why.
 *
 * @example Tell the two kinds apart
 * ```ts
 * import type { KvFailedTask } from "@afterward/background-tasks/kv";
 * import assert from "node:assert/strict";
 *
 * const line = (task: KvFailedTask) =>
 *   task.reason === "undelivered"
 *     ? `${task.name} (${task.id}): Deno KV gave up delivering it`
 *     : `${task.name} (${task.id}) failed ${task.attempts} times`;
 * assert.equal(
 *   line({
 *     id: "c1:0", reason: "failed", name: "charge", args: [], index: 0, attempts: 3,
 *     error: "Error: declined", request: undefined, at: new Date(0),
 *   }),
 *   "charge (c1:0) failed 3 times",
 * );
 * ```
 */
export interface KvFailedTask extends FailedTask {
  /**
   * Why: `"failed"`, it failed at its last attempt (or no listener knew
   * its name); `"undelivered"`, Deno KV gave up delivering its message
   * after the `redelivery` steps, as when the process running it ends
   * during each delivery. Deno KV does not say when it gave up: such a task
   * is dated (`at`) when the backend first found it, at a `failed()` or
   * `retry()` call.
   */
  readonly reason: "failed" | "undelivered";
  /**
   * A keyed task's key (see `key` in `defineTask()`'s options), absent for
   * a task without one: `backend.retry()` puts the task back in its lane,
   * behind the duplicates waiting there, whatever its `onDuplicate`.
   */
  readonly key?: string;
}
