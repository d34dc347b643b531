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
 * stack. Control characters in what it writes (a task's name, the path, an
 * error's message, a string thrown) are escaped (`\n`, `\x1b`), so that
 * nothing a request controls can forge or recolour a line.
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
    } else console.error(line, escapedText(error) ?? error);
  } catch {
    // The console could not inspect it (a revoked proxy): its text will do.
    console.error(line, errorText(error));
  }
}

/**
 * What the task threw, as text with its control characters escaped, when
 * it has some: a string, or an error whose name or message does (each line
 * of its stack escaped, its cause and properties left out). Otherwise
 * `undefined`: the console writes the value itself, and quotes and escapes
 * the strings inside an object.
 */
function escapedText(error: unknown): string | undefined {
  if (typeof error === "string") {
    const escaped = escapeControls(error);
    return escaped === error ? undefined : escaped;
  }
  if (!isInstance(error, Error)) return undefined;
  try {
    const { name, message, stack } = error;
    const header = String(message) === ""
      ? String(name)
      : String(name) === ""
      ? String(message)
      : `${String(name)}: ${String(message)}`;
    if (escapeControls(header) === header) return undefined;
    // The frames follow the message the stack was made with (its name may
    // have been set since); a message changed since leaves them out.
    const at = typeof stack === "string" && String(message) !== ""
      ? stack.indexOf(String(message))
      : -1;
    const frames = at === -1
      ? ""
      : stack!.slice(at + String(message).length).split("\n").map(
        escapeControls,
      ).join("\n");
    return escapeControls(header) + frames;
  } catch {
    return escapeControls(errorText(error));
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
