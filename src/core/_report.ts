// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Calls into the user's reporting code (onTaskError, the hooks) and into
// listeners of the signals we abort, so that nothing they do (throw, reject,
// return a hostile value) can disturb a chain or end the process. What fails
// there is written by the default reporter instead.

import { describeTask } from "../api/_describe_task.ts";
import { abortIsolated, isThenable, toPromise } from "../util/_promise.ts";
import { logTaskError } from "../api/log_task_error.ts";
import type {
  TaskEndEvent,
  TaskErrorHandler,
  TaskInfo,
} from "../api/task_info.ts";

/**
 * Calls an observer hook without letting it disturb the chain: it is not
 * awaited, and a throw or rejection from it is written by the default
 * reporter.
 */
export function hook<E extends TaskInfo>(
  name: string,
  fn: ((event: E) => unknown) | undefined,
  event: E,
): void {
  if (fn === undefined) return;
  try {
    const result = fn(event);
    if (isThenable(result)) {
      toPromise(result).then(
        undefined,
        (hookError) => reportHookFailure(name, event, hookError),
      );
    }
  } catch (hookError) {
    reportHookFailure(name, event, hookError);
  }
}

/**
 * Tells `onTaskEnd` that the task `info` names ended deduplicated: a
 * duplicate took its place, or it took none, and it never ran.
 */
export function tellDeduplicated(
  onTaskEnd: ((event: TaskEndEvent) => unknown) | undefined,
  info: TaskInfo,
): void {
  hook("onTaskEnd", onTaskEnd, {
    ...info,
    attempt: 0,
    duration: 0,
    outcome: "deduplicated",
    error: undefined,
    willRetry: false,
  });
}

/**
 * Calls `onTaskError` without letting it disturb the chain: a throw or
 * rejection from it is written by the default reporter, after the original
 * error. Returns a promise only when `onTaskError` returned one; that promise
 * never rejects.
 */
export function report(
  onTaskError: TaskErrorHandler,
  error: unknown,
  info: TaskInfo,
): Promise<void> | undefined {
  let result: unknown;
  try {
    result = onTaskError(error, info);
  } catch (hookError) {
    reportErrorHandlerFailure(error, info, hookError);
    return undefined;
  }
  if (!isThenable(result)) return undefined;
  return toPromise(result).then(
    () => {},
    (hookError) => reportErrorHandlerFailure(error, info, hookError),
  );
}

function reportErrorHandlerFailure(
  error: unknown,
  info: TaskInfo,
  hookError: unknown,
): void {
  try {
    logTaskError(error, info);
  } catch {
    // console.error itself throws; see below.
  }
  reportHookFailure("onTaskError", info, hookError);
}

/** Writes a failing hook's error, naming the hook and the task. */
export function reportHookFailure(
  name: string,
  info: TaskInfo,
  hookError: unknown,
): void {
  write(
    `The '${name}' handler threw while reporting background task ${
      describeTask(info)
    }:`,
    hookError,
  );
}

/**
 * Aborts a task's signal. A listener of the task's that throws is written by
 * the default reporter instead of ending the process.
 */
export function abortTask(
  controller: AbortController,
  reason: unknown,
  info: TaskInfo,
): void {
  abortIsolated(
    controller,
    reason,
    (error) =>
      write(
        `An abort listener of background task ${describeTask(info)} threw:`,
        error,
      ),
  );
}

function write(line: string, error: unknown): void {
  try {
    console.error(line, error);
  } catch {
    // Even console.error was replaced by something that throws; there is no
    // one left to tell, and the chain must go on.
  }
}
