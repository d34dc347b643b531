// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { RunOptions } from "./task_info.ts";
import type { DefinedTask } from "./define_task.ts";

/**
 * Options shared by the backends' workers, the processes that run the tasks:
 * which tasks they know, and how to report and bound them.
 *
 * @example The same tasks in the web process and the workers
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import type { WorkerOptions } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * const sendEmail = defineTask(async () => {}, { name: "sendEmail" });
 * const resize = defineTask(async () => {}, { name: "resize", timeout: 60_000 });
 * const options: WorkerOptions = {
 *   tasks: [sendEmail, resize],
 *   onTaskError: (error, info) => console.error(info.name, error),
 * };
 * assert.equal(options.tasks.length, 2);
 * ```
 */
export interface WorkerOptions extends RunOptions {
  /**
   * The tasks this process can run, found by name: the same `defineTask`
   * results the web process adds. A name may appear once. A task handed to
   * this process under another name fails at once, reported through
   * `onTaskError` with where it is kept (a failed job, a dead letter); the
   * worker says at start which names the web processes store that it lacks.
   */
  tasks: readonly DefinedTask<never[]>[];
}
