// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Tasks a worker does not know: a deploy that renamed or dropped one, or a
// worker started without it. Web processes write the names of the tasks
// they store (when they last did), for a worker to say at start which of
// them it lacks; and a delivery of such a task is reported like any failed
// task, through `onTaskError`, saying where the task is kept.

import { escapeControls } from "../api/_describe_task.ts";
import { report } from "../core/_report.ts";
import type { ExecutionConfig } from "../core/_config.ts";
import type { TaskInfo } from "../api/task_info.ts";

/**
 * Milliseconds after which a name a web process wrote counts as stale, from
 * a deploy long gone: a worker starting later does not mention it. A web
 * process writes its names when it starts storing, and again each day while
 * it stores, so a name older than
 * this comes from processes gone for days, not the deploy being rolled out
 * (one still storing writes its names again every NAMES_REFRESH).
 */
export const NAMES_STALE_AFTER = 7 * 24 * 60 * 60 * 1000;

/**
 * Milliseconds after which a web process writes its names again, while it
 * stores: one that runs longer than NAMES_STALE_AFTER must not look gone.
 */
export const NAMES_REFRESH = 24 * 60 * 60 * 1000;

/**
 * The names among `written` (each with when a web process last wrote it)
 * that `known` lacks and that are not stale, sorted.
 */
export function unknownNames(
  written: Iterable<readonly [name: string, at: number]>,
  known: ReadonlyMap<string, unknown>,
  now: number = Date.now(),
): string[] {
  const names: string[] = [];
  for (const [name, at] of written) {
    if (!known.has(name) && now - at <= NAMES_STALE_AFTER) names.push(name);
  }
  return names.sort();
}

/** `"a", "b"`: names for a line. */
export function quoteNames(names: readonly string[]): string {
  return names.map((name) => `"${escapeControls(name)}"`).join(", ");
}

/**
 * Reports a delivery of a task this process does not know through
 * `onTaskError` (the default reporter writes it), as every failed task is:
 * `message` says which task and where it is kept. The task's name came from
 * another process: its control characters are escaped, so that the line
 * cannot be forged; and the error's stack, which would show only the
 * library's frames, is its message. Never rejects.
 */
export async function reportUnknownTask(
  info: TaskInfo,
  message: string,
  config: ExecutionConfig,
): Promise<void> {
  const error = new Error(escapeControls(message));
  error.stack = `${error.name}: ${error.message}`;
  const reporting = report(config.onTaskError, error, info);
  if (reporting !== undefined) await reporting;
}
