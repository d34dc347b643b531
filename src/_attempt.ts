// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One attempt of one task, the same wherever it runs: in this process, in a
// Deno KV listener or in a BullMQ worker. Built as std's deadline() is: the
// attempt races a signal, which the task's timeout and the caller's own
// signal (a drain deadline, a shutdown) abort through AbortSignal.any().
// Around it: the hooks, the outcome, the retry decision, and the report of a
// last failure.

import { abortTask, hook, report } from "./_report.ts";
import { backoff, delay, isRetriable } from "./_retry.ts";
import type { ExecutionConfig } from "./_options.ts";
import { type DefinedTask, TaskTimeoutError } from "./define_task.ts";
import { isInstance, isThenable, MAX_TIMER_DELAY, toPromise } from "./_util.ts";
import type { TaskInfo } from "./task_info.ts";

/** What an attempt calls: a function, or a defined task's, which takes a context first. */
export interface Runnable {
  readonly fn: (...args: never[]) => unknown;
  readonly args: readonly unknown[];
  readonly defined: DefinedTask | undefined;
}

/** How an attempt ended. */
export type Outcome = "succeeded" | "failed" | "timedOut" | "abandoned";

/** How an attempt ended, and what follows it. */
export interface AttemptResult {
  readonly outcome: Outcome;
  /** What the task returned, or what it threw. */
  readonly value: unknown;
  /** Whether another attempt follows, after `delay` milliseconds. */
  readonly willRetry: boolean;
  readonly delay: number;
}

/**
 * Who may give up on a task: its chain, or a worker's shutdown. Its signal
 * is made on first use, so an attempt that never waits costs no signal.
 */
export interface Holder {
  /** The controller behind `signal`, once made: aborted when it gives up. */
  readonly controller: AbortController | undefined;
  /** Aborted when it gives up on the task; made on first use. */
  readonly signal: AbortSignal;
}

/** What an attempt needs besides the task. */
export interface AttemptOptions {
  /** The task's stable id, for the context of a defined task. */
  readonly id: string;
  /** Who may give up on the task: it then ends as abandoned. */
  readonly holder: Holder | undefined;
  /** Milliseconds the attempt may take. */
  readonly timeout: number | undefined;
  /** How many attempts there may be in all. */
  readonly maxAttempts: number;
}

/**
 * Runs one attempt: tells `onTaskStart`, calls the task, tells `onTaskEnd`
 * how it went and whether it will be retried, and reports a failure that
 * will not be to `onTaskError`. Never rejects.
 */
export async function runAttempt(
  task: Runnable,
  info: TaskInfo,
  options: AttemptOptions,
  config: ExecutionConfig,
): Promise<AttemptResult> {
  hook("onTaskStart", config.onTaskStart, info);
  const startedAt = performance.now();
  const { holder } = options;
  // The end of an attempt given up on is told at once, as the drain that
  // gave up on it ends, not once the attempt notices.
  let told = false;
  const abandoned = (reason: unknown) => {
    told = true;
    tell(info, startedAt, config, "abandoned", reason, false);
  };
  const given = holder?.controller?.signal;
  let outcome: Outcome;
  let value: unknown;
  if (given?.aborted) {
    // The hook gave up on the task (a drain it ended): it does not run.
    abandoned(given.reason);
    outcome = "abandoned";
    value = given.reason;
  } else {
    const called = call(task, info, options, abandoned);
    // A task that returned at once costs no wait.
    ({ outcome, value } = called instanceof Promise ? await called : called);
  }
  const failed = outcome === "failed" || outcome === "timedOut";
  const policy = task.defined?.retry;
  const willRetry = failed && info.attempt < options.maxAttempts &&
    (policy === undefined || isRetriable(policy, value, info));
  if (!told) tell(info, startedAt, config, outcome, value, willRetry);
  if (failed && !willRetry) {
    const reporting = report(config.onTaskError, value, info);
    if (reporting !== undefined) await reporting;
  }
  return {
    outcome,
    value,
    willRetry,
    delay: willRetry && policy !== undefined
      ? backoff(policy, info.attempt)
      : 0,
  };
}

/**
 * Runs a task's attempts in this process, each after the backoff of the one
 * before, until one succeeds or is the last, or the holder gives up. Never
 * rejects.
 */
export async function runAttempts(
  task: Runnable,
  infoOf: (attempt: number) => TaskInfo,
  options: Omit<AttemptOptions, "maxAttempts" | "holder"> & {
    readonly holder: Holder;
  },
  config: ExecutionConfig,
  retried: () => void,
): Promise<AttemptResult> {
  const attempts: AttemptOptions = {
    ...options,
    maxAttempts: task.defined?.retry?.maxAttempts ?? 1,
  };
  for (let attempt = 1;; attempt++) {
    const info = infoOf(attempt);
    const startedAt = performance.now();
    const result = await runAttempt(task, info, attempts, config);
    if (!result.willRetry) return result;
    retried();
    // Given up on while it waits: the attempt's end is told once more, at
    // once, now that no other follows.
    const { signal } = options.holder;
    const abandon = () =>
      tell(info, startedAt, config, "abandoned", signal.reason, false);
    signal.addEventListener("abort", abandon, { once: true });
    const waited = await delay(result.delay, signal);
    signal.removeEventListener("abort", abandon);
    if (!waited) {
      return {
        outcome: "abandoned",
        value: signal.reason,
        willRetry: false,
        delay: 0,
      };
    }
  }
}

/** Tells `onTaskEnd` how an attempt ended. */
function tell(
  info: TaskInfo,
  startedAt: number,
  config: ExecutionConfig,
  outcome: Outcome,
  value: unknown,
  willRetry: boolean,
): void {
  hook("onTaskEnd", config.onTaskEnd, {
    ...info,
    duration: performance.now() - startedAt,
    outcome,
    error: outcome === "succeeded" ? undefined : value,
    willRetry,
  });
}

/** How a call ended. */
interface Called {
  outcome: Outcome;
  value: unknown;
}

/**
 * Calls the task once. If it returns a promise, races it against its
 * timeout and the holder's signal; `abandoned` is told at once when the
 * holder gives up meanwhile. Settles at once when the task did.
 */
function call(
  task: Runnable,
  info: TaskInfo,
  options: AttemptOptions,
  abandoned: (reason: unknown) => void,
): Called | Promise<Called> {
  const startedAt = performance.now();
  const { holder } = options;
  // A limit no timer can express is no limit.
  const timeout = options.timeout !== undefined &&
      options.timeout <= MAX_TIMER_DELAY
    ? options.timeout
    : undefined;
  let timer: AbortController | undefined;
  let signal: AbortSignal | undefined;
  let value: unknown;
  try {
    const { fn, args } = task as unknown as {
      fn: (...args: unknown[]) => unknown;
      args: unknown[];
    };
    if (task.defined === undefined) {
      // Called as a plain function, as FastAPI does: `this` is undefined.
      value = fn(...args);
    } else {
      // A defined task's signal exists from the start, for it to listen to.
      if (timeout !== undefined) timer = new AbortController();
      signal = combined(holder?.signal, timer?.signal);
      value = fn({
        signal: signal ?? new AbortController().signal,
        attempt: info.attempt,
        name: info.name,
        id: options.id,
      }, ...args);
    }
  } catch (error) {
    return failure(error, holder);
  }
  if (!isThenable(value)) return { outcome: "succeeded", value };
  if (task.defined === undefined) {
    if (timeout !== undefined) timer = new AbortController();
    signal = combined(holder?.signal, timer?.signal);
  }
  // The timeout counts from the call: what the task did synchronously counts.
  const expire = timer === undefined ? undefined : setTimeout(
    () => abortTask(timer, new TaskTimeoutError(info.name, timeout!), info),
    Math.max(0, timeout! - (performance.now() - startedAt)),
  );
  const settled = signal === undefined
    ? toPromise(value)
    : abortable(value, signal, () => {
      const given = holder?.controller?.signal;
      if (given?.aborted) abandoned(given.reason);
    });
  return settled.then(
    (result): Called => {
      clearTimeout(expire);
      return { outcome: "succeeded", value: result };
    },
    (error) => {
      clearTimeout(expire);
      return failure(error, holder);
    },
  );
}

/** The signal that aborts when either does. */
function combined(
  given: AbortSignal | undefined,
  timer: AbortSignal | undefined,
): AbortSignal | undefined {
  if (given === undefined) return timer;
  if (timer === undefined) return given;
  return AbortSignal.any([given, timer]);
}

/** How a failed call ended: given up on, timed out, or failed. */
function failure(
  error: unknown,
  holder: Holder | undefined,
): { outcome: Outcome; value: unknown } {
  return {
    outcome: holder?.controller?.signal.aborted
      ? "abandoned"
      : isInstance(error, TaskTimeoutError)
      ? "timedOut"
      : "failed",
    value: error,
  };
}

/**
 * Settles as `value` does, or rejects with `signal.reason` as soon as it
 * aborts (after calling `onAbort`), as std's abortable() does. `value` is
 * handled either way, so that a late rejection is never unhandled.
 */
function abortable(
  value: PromiseLike<unknown>,
  signal: AbortSignal,
  onAbort: () => void,
): Promise<unknown> {
  const settled = toPromise(value);
  if (signal.aborted) {
    settled.catch(() => {});
    onAbort();
    return Promise.reject(signal.reason);
  }
  return new Promise((resolve, reject) => {
    const abort = () => {
      onAbort();
      reject(signal.reason);
    };
    signal.addEventListener("abort", abort, { once: true });
    settled.then((result) => {
      signal.removeEventListener("abort", abort);
      resolve(result);
    }, (error) => {
      signal.removeEventListener("abort", abort);
      reject(error);
    });
  });
}
