// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One call of a task, raced as std's abortable() races a promise against a
// signal: the attempt's own signal, which its timeout aborts, and which
// follows whoever holds the task (its chain, a worker's shutdown) for as
// long as the attempt lasts. The abort event of that signal ends the
// attempt, and tells of an abandonment, once. A defined task's context
// carries the same signal. Not AbortSignal.any() of the holder's signal
// and the timeout's, as std's deadline() composes them: such a signal
// follows the holder's for as long as it lives, after its attempt too, and
// Deno (2.9.6) keeps it, with its listeners, for as long as the holder's
// lives, which for a worker's shutdown signal is the worker's life.

import { abortTask } from "./_report.ts";
import {
  type DefinedTask,
  type TaskContext,
  TaskTimeoutError,
} from "../api/define_task.ts";
import { MAX_TIMER_DELAY } from "../util/_assert.ts";
import { isInstance, isThenable, toPromise } from "../util/_promise.ts";
import type { TaskInfo, TaskOutcome } from "../api/task_info.ts";

/** What an attempt calls: a function, or a defined task's, which takes a context first. */
export interface Runnable {
  readonly fn: (...args: never[]) => unknown;
  readonly args: readonly unknown[];
  readonly defined: DefinedTask | undefined;
}

/** How an attempt ends: every outcome but deduplicated, which has none. */
export type AttemptOutcome = Exclude<TaskOutcome, "deduplicated">;

/** How a task that was not given up on ended. */
export type Settled = Exclude<AttemptOutcome, "abandoned">;

/** What a call needs besides the task. */
export interface CallOptions {
  /** The task's stable id, for the context of a defined task. */
  readonly id: string;
  /**
   * Aborted when whoever holds the task gives up on it (its chain at a
   * deadline, a worker's shutdown): the attempt then ends at once, as
   * abandoned. Followed only while the attempt lasts, so that a signal that
   * many attempts share gathers no listener.
   */
  readonly signal: AbortSignal | undefined;
  /** Milliseconds the call may take. */
  readonly timeout: number | undefined;
}

/** How a call ended. */
export interface Called {
  outcome: AttemptOutcome;
  value: unknown;
}

/**
 * Calls the task once. If it returns a promise, races it against the
 * attempt's signal, which aborts at the timeout or when `options.signal`
 * does. `abandoned` is told once, at once, if the attempt is abandoned:
 * from that signal's abort event, or when the task returned after its
 * holder gave up. Settles at once when the task did. The timeout counts
 * from `clock`, when the caller read `performance.now()` already, else from
 * the call.
 */
export function call(
  task: Runnable,
  info: TaskInfo,
  options: CallOptions,
  abandoned: ((reason: unknown) => void) | undefined,
  clock?: number,
): Called | Promise<Called> {
  const { signal: given } = options;
  // A limit no timer can express is no limit.
  const timeout = options.timeout !== undefined &&
      options.timeout <= MAX_TIMER_DELAY
    ? options.timeout
    : undefined;
  const startedAt = timeout === undefined ? 0 : clock ?? performance.now();
  // A defined task's context carries the attempt's signal from the start.
  const attempt = task.defined === undefined
    ? undefined
    : new AbortController();
  const unfollow = attempt === undefined
    ? undefined
    : follow(given, attempt, info);
  let value: unknown;
  try {
    const { fn, args } = task as unknown as {
      fn: (...args: unknown[]) => unknown;
      args: unknown[];
    };
    value = attempt === undefined
      // Called as a plain function, as FastAPI does: `this` is undefined.
      ? fn(...args)
      : fn(new Context(attempt.signal, info, options.id), ...args);
  } catch (error) {
    unfollow?.();
    return tellIfAbandoned(failure(error, given), abandoned);
  }
  if (!isThenable(value)) {
    unfollow?.();
    return tellIfAbandoned(success(value, given), abandoned);
  }
  const settled = toPromise(value);
  if (attempt === undefined && given === undefined && timeout === undefined) {
    // Nothing may end it early: it ends when its task settles.
    return settled.then(
      (result) => success(result, undefined),
      (error) => failure(error, undefined),
    );
  }
  const controller = attempt ?? new AbortController();
  const stop = unfollow ?? follow(given, controller, info);
  const { signal } = controller;
  return new Promise<Called>((resolve) => {
    let expire: ReturnType<typeof setTimeout> | undefined;
    const end = (called: Called) => {
      clearTimeout(expire);
      stop();
      signal.removeEventListener("abort", interrupted);
      resolve(called);
    };
    const interrupted = () =>
      end(tellIfAbandoned(failure(signal.reason, given), abandoned));
    // The timeout counts from the call: what the task did synchronously
    // counts. The timer is set first: setTimeout may run pending
    // microtasks (the first timer of a `deno test` process does, Deno
    // 2.9.6: tests/suites/deno_behaviours_test.ts), the task's settling among
    // them, which must find the timer to clear.
    if (timeout !== undefined) {
      expire = setTimeout(
        () =>
          abortTask(
            controller,
            new TaskTimeoutError(info.name, timeout),
            info,
          ),
        Math.max(0, timeout - (performance.now() - startedAt)),
      );
    }
    // Handled even once interrupted, so that a late rejection is never
    // unhandled.
    settled.then(
      (result) => end(success(result, given)),
      (error) => end(failure(error, given)),
    );
    if (signal.aborted) interrupted();
    else signal.addEventListener("abort", interrupted, { once: true });
  });
}

/** A defined task's context. */
class Context implements TaskContext {
  readonly signal: AbortSignal;
  readonly attempt: number;
  readonly name: string;
  readonly id: string;

  constructor(signal: AbortSignal, info: TaskInfo, id: string) {
    this.signal = signal;
    this.attempt = info.attempt;
    this.name = info.name;
    this.id = id;
  }
}

/**
 * Aborts the attempt's `controller` when `given` aborts (a listener's throw
 * reported as the task's), until the returned function is called.
 */
function follow(
  given: AbortSignal | undefined,
  controller: AbortController,
  info: TaskInfo,
): () => void {
  if (given === undefined) return ignore;
  if (given.aborted) {
    abortTask(controller, given.reason, info);
    return ignore;
  }
  const abort = () => abortTask(controller, given.reason, info);
  given.addEventListener("abort", abort, { once: true });
  return () => given.removeEventListener("abort", abort);
}

function ignore(): void {}

/** `called`, once `abandoned` has been told if it was abandoned. */
function tellIfAbandoned(
  called: Called,
  abandoned: ((reason: unknown) => void) | undefined,
): Called {
  if (called.outcome === "abandoned") abandoned?.(called.value);
  return called;
}

/**
 * How a call that returned ended: succeeded, unless its holder gave up on
 * it meanwhile (a drain it ended, say), when it counts as abandoned.
 */
function success(value: unknown, given: AbortSignal | undefined): Called {
  return given?.aborted
    ? { outcome: "abandoned", value: given.reason }
    : { outcome: "succeeded", value };
}

/** How a failed call ended: given up on, timed out, or failed. */
function failure(error: unknown, given: AbortSignal | undefined): Called {
  return {
    outcome: given?.aborted
      ? "abandoned"
      : isInstance(error, TaskTimeoutError)
      ? "timedOut"
      : "failed",
    value: error,
  };
}
