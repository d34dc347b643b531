// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { describeTask, escapeControls } from "./_describe_task.ts";
import { errorText } from "../util/_error_text.ts";
import { isInstance } from "../util/_promise.ts";
import { TaskTimeoutError } from "./define_task.ts";
import type { TaskInfo } from "./task_info.ts";

/**
 * The default error reporter: writes one `console.error` entry that names the
 * failed task, its index in the chain, the request as `METHOD /path` and the
 * number of attempts when there were several, followed by the error with its
 * stack.
 *
 * It never prints the task's arguments or the URL's query string, since either
 * may hold secrets, and never throws: a value the console cannot inspect (a
 * revoked proxy) is written as text. Call it from your own `onTaskError` to keep the default output
 * while also counting or forwarding failures.
 *
 * @example Keep the default output and count failures
 * ```ts
 * import { BackgroundTasks, logTaskError } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * let failures = 0;
 * const tasks = new BackgroundTasks();
 * tasks.addTask(function sendEmail() {
 *   throw new Error("SMTP server unreachable");
 * });
 * await tasks.run({
 *   onTaskError(error, info) {
 *     failures++;
 *     logTaskError(error, info);
 *   },
 * });
 * assert.equal(failures, 1);
 * ```
 *
 * @param error The value the task threw or rejected with.
 * @param info The task and the request it belongs to.
 */
export function logTaskError(error: unknown, info: TaskInfo): void {
  const attempts = info.attempt > 1 ? ` after ${info.attempt} attempts` : "";
  const line = `Background task ${describeTask(info)} failed${attempts}${
    isRequestClosed(error) ? REQUEST_CLOSED : ""
  }:`;
  try {
    // A timeout's stack shows only the library's timer: its message says it all.
    if (isInstance(error, TaskTimeoutError)) {
      console.error(line, `${error.name}: ${escapeControls(error.message)}`);
    } else console.error(line, error);
  } catch {
    // The console could not inspect it (a revoked proxy): its text will do.
    console.error(line, errorText(error));
  }
}

const REQUEST_CLOSED =
  ", as Deno closes the request once the response is sent (read what the task needs in the handler and pass that instead)";

/** Whether `error` is Deno's for a request read after its response was sent. */
function isRequestClosed(error: unknown): boolean {
  try {
    return error instanceof TypeError && error.message === "Request closed";
  } catch {
    return false;
  }
}
