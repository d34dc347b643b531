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

/** What an attempt needs besides the task. */
export interface AttemptOptions {
  /** The task's stable id, for the context of a defined task. */
  readonly id: string;
  /** Aborted when the caller gives up on the task: it ends as abandoned. */
  readonly signal: AbortSignal | undefined;
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
  const startedAt = performance.now();
  const { signal } = options;
  // The end of an attempt given up on is told at once, as the drain that
  // gave up on it ends, not once the attempt notices.
  const end = ending(info, startedAt, config);
  const abandon = () => end("abandoned", signal!.reason, false);
  signal?.addEventListener("abort", abandon, { once: true });
  hook("onTaskStart", config.onTaskStart, info);
  // The hook may have given up on the task (a drain it ended): it does not run.
  const { outcome, value } = signal?.aborted
    ? { outcome: "abandoned" as const, value: signal.reason }
    : await call(task, info, options);
  signal?.removeEventListener("abort", abandon);
  const failed = outcome === "failed" || outcome === "timedOut";
  const policy = task.defined?.retry;
  const willRetry = failed && info.attempt < options.maxAttempts &&
    (policy === undefined || isRetriable(policy, value, info));
  end(outcome, value, willRetry);
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
 * before, until one succeeds or is the last, or `signal` aborts. Never
 * rejects.
 */
export async function runAttempts(
  task: Runnable,
  infoOf: (attempt: number) => TaskInfo,
  options: Omit<AttemptOptions, "maxAttempts" | "signal"> & {
    readonly signal: AbortSignal;
  },
  config: ExecutionConfig,
  retried: () => void,
): Promise<AttemptResult> {
  const maxAttempts = task.defined?.retry?.maxAttempts ?? 1;
  for (let attempt = 1;; attempt++) {
    const info = infoOf(attempt);
    const startedAt = performance.now();
    const result = await runAttempt(task, info, {
      ...options,
      maxAttempts,
    }, config);
    if (!result.willRetry) return result;
    retried();
    // Given up on while it waits: the attempt's end is told once more, at
    // once, now that no other follows.
    const { signal } = options;
    const abandon = () =>
      ending(info, startedAt, config)("abandoned", signal.reason, false);
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

/** Tells `onTaskEnd` how an attempt ended, once, however often it is called. */
function ending(
  info: TaskInfo,
  startedAt: number,
  config: ExecutionConfig,
): (outcome: Outcome, value: unknown, willRetry: boolean) => void {
  let told = false;
  return (outcome, value, willRetry) => {
    if (told) return;
    told = true;
    hook("onTaskEnd", config.onTaskEnd, {
      ...info,
      duration: performance.now() - startedAt,
      outcome,
      error: outcome === "succeeded" ? undefined : value,
      willRetry,
    });
  };
}

/** Calls the task once, racing its timeout and the caller's signal. */
async function call(
  task: Runnable,
  info: TaskInfo,
  options: AttemptOptions,
): Promise<{ outcome: Outcome; value: unknown }> {
  const startedAt = performance.now();
  const { signal: given, id } = options;
  // A limit no timer can express is no limit.
  const timeout = options.timeout !== undefined &&
      options.timeout <= MAX_TIMER_DELAY
    ? options.timeout
    : undefined;
  let timer: AbortController | undefined;
  let signal = given;
  const limit = () => {
    timer = new AbortController();
    signal = given === undefined
      ? timer.signal
      : AbortSignal.any([given, timer.signal]);
  };
  const failure = (error: unknown) => ({
    outcome: given?.aborted
      ? "abandoned" as const
      : isInstance(error, TaskTimeoutError)
      ? "timedOut" as const
      : "failed" as const,
    value: error,
  });
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
      if (timeout !== undefined) limit();
      const context = {
        signal: signal ?? new AbortController().signal,
        attempt: info.attempt,
        name: info.name,
        id,
      };
      value = fn(context, ...args);
    }
  } catch (error) {
    return failure(error);
  }
  if (!isThenable(value)) return { outcome: "succeeded", value };
  if (timeout !== undefined && timer === undefined) limit();
  // The timeout counts from the call: what the task did synchronously counts.
  const expire = timer === undefined ? undefined : setTimeout(
    () => abortTask(timer!, new TaskTimeoutError(info.name, timeout!), info),
    Math.max(0, timeout! - (performance.now() - startedAt)),
  );
  try {
    return {
      outcome: "succeeded",
      value: await (signal === undefined ? value : abortable(value, signal)),
    };
  } catch (error) {
    return failure(error);
  } finally {
    clearTimeout(expire);
  }
}

/**
 * Settles as `value` does, or rejects with `signal.reason` as soon as it
 * aborts, as std's abortable() does. `value` is handled either way, so that
 * a late rejection is never unhandled.
 */
function abortable(
  value: PromiseLike<unknown>,
  signal: AbortSignal,
): Promise<unknown> {
  const settled = toPromise(value);
  if (signal.aborted) {
    settled.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise((resolve, reject) => {
    const abort = () => reject(signal.reason);
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
