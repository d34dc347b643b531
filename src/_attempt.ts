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
import {
  type DefinedTask,
  type TaskContext,
  TaskTimeoutError,
} from "./define_task.ts";
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
  /**
   * Whether an attempt it gives up on ends at once, as a worker's must (its
   * delivery then puts the message back), rather than when its task
   * settles, as a chain's does: its loop is all that waits on the attempt,
   * and not racing the task saves a promise and a listener per attempt.
   * An attempt with a timeout is raced either way.
   */
  readonly endsAttemptsAtOnce?: boolean;
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
  const startedAt = clock(config);
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
    const called = call(
      task,
      info,
      options,
      config.onTaskEnd === undefined ? undefined : abandoned,
    );
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
  options: AttemptOptions & { readonly holder: Holder },
  config: ExecutionConfig,
  retried: () => void,
): Promise<AttemptResult> {
  for (let attempt = 1;; attempt++) {
    const info = infoOf(attempt);
    const startedAt = clock(config);
    const result = await runAttempt(task, info, options, config);
    if (!result.willRetry) return result;
    retried();
    // Given up on while it waits: the attempt's end is told once more, at
    // once, now that no other follows.
    const { signal } = options.holder;
    const abandon = () =>
      tell(info, startedAt, config, "abandoned", signal.reason, false);
    let waited = false;
    // A hook may have given up on it already (a drain it ended).
    if (signal.aborted) abandon();
    else {
      signal.addEventListener("abort", abandon, { once: true });
      waited = await delay(result.delay, signal);
      signal.removeEventListener("abort", abandon);
    }
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

/** When an attempt starts, if anyone is told how long it took. */
function clock(config: ExecutionConfig): number {
  return config.onTaskEnd === undefined ? 0 : performance.now();
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
  if (config.onTaskEnd === undefined) return;
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
 * timeout and, if the holder says so, its holder giving up; `abandoned`,
 * if given, is told at once when the holder gives up meanwhile. Settles at
 * once when the task did.
 */
function call(
  task: Runnable,
  info: TaskInfo,
  options: AttemptOptions,
  abandoned: ((reason: unknown) => void) | undefined,
): Called | Promise<Called> {
  const { holder } = options;
  // A limit no timer can express is no limit.
  const timeout = options.timeout !== undefined &&
      options.timeout <= MAX_TIMER_DELAY
    ? options.timeout
    : undefined;
  const startedAt = timeout === undefined ? 0 : performance.now();
  // Made for a defined task, whose context reads it, or for a race.
  let made = task.defined === undefined
    ? undefined
    : new Interrupts(holder, info);
  let value: unknown;
  try {
    const { fn, args } = task as unknown as {
      fn: (...args: unknown[]) => unknown;
      args: unknown[];
    };
    value = made === undefined
      // Called as a plain function, as FastAPI does: `this` is undefined.
      ? fn(...args)
      : fn(new Context(made, info, options.id), ...args);
  } catch (error) {
    made?.end();
    return failure(error, holder);
  }
  if (!isThenable(value)) {
    made?.end();
    return success(value, holder);
  }
  const settled = toPromise(value);
  if (timeout === undefined && !holder?.endsAttemptsAtOnce) {
    if (abandoned !== undefined) {
      made ??= new Interrupts(holder, info);
      made.onInterrupt = abandoned;
      made.follow();
    }
    const following = made;
    if (following === undefined) {
      return settled.then(
        (result) => success(result, holder),
        (error) => failure(error, holder),
      );
    }
    return settled.then((result): Called => {
      following.end();
      return success(result, holder);
    }, (error) => {
      following.end();
      return failure(error, holder);
    });
  }
  const racing = made ?? new Interrupts(holder, info);
  return new Promise<Called>((resolve) => {
    let expire: ReturnType<typeof setTimeout> | undefined;
    const finish = (called: Called) => {
      clearTimeout(expire);
      racing.end();
      resolve(called);
    };
    racing.onInterrupt = (reason) => {
      if (holder?.controller?.signal.aborted) abandoned?.(reason);
      finish(failure(reason, holder));
    };
    // The timeout counts from the call: what the task did synchronously
    // counts. The timer is set first: setTimeout may run pending
    // microtasks (it does under `deno test`, Deno 2.9.6), the task's
    // settling among them, which must find the timer to clear.
    if (timeout !== undefined) {
      expire = setTimeout(
        () => racing.interrupt(new TaskTimeoutError(info.name, timeout)),
        Math.max(0, timeout - (performance.now() - startedAt)),
      );
    }
    // Handled even once interrupted, so that a late rejection is never
    // unhandled.
    settled.then(
      (result) => finish(success(result, holder)),
      (error) => finish(failure(error, holder)),
    );
    racing.follow();
  });
}

/** A defined task's context; its signal is made when first read. */
class Context implements TaskContext {
  readonly #interrupts: Interrupts;
  readonly attempt: number;
  readonly name: string;
  readonly id: string;

  constructor(interrupts: Interrupts, info: TaskInfo, id: string) {
    this.#interrupts = interrupts;
    this.attempt = info.attempt;
    this.name = info.name;
    this.id = id;
  }

  get signal(): AbortSignal {
    return this.#interrupts.signal;
  }
}

/**
 * What may end an attempt early, as std's deadline() and abortable() race
 * a promise against a signal: its timeout, and its holder giving up. A
 * defined task's signal is made when it first reads it, and aborted then.
 * The holder is followed through one listener, only while the attempt
 * lasts, so that a worker's shutdown signal, which its attempts share,
 * gathers none.
 */
class Interrupts {
  readonly #holder: Holder | undefined;
  readonly #info: TaskInfo;
  #controller: AbortController | undefined;
  #following: (() => void) | undefined;
  #ended = false;
  /** Told once, when the attempt is interrupted before it settles. */
  onInterrupt: ((reason: unknown) => void) | undefined;

  constructor(holder: Holder | undefined, info: TaskInfo) {
    this.#holder = holder;
    this.#info = info;
  }

  /** The attempt's signal: aborted when it is interrupted. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      this.follow();
    }
    return this.#controller.signal;
  }

  /** Interrupts the attempt when the holder gives up, until it ends. */
  follow(): void {
    if (
      this.#holder === undefined || this.#following !== undefined ||
      this.#ended
    ) return;
    const given = this.#holder.signal;
    if (given.aborted) return this.interrupt(given.reason);
    this.#following = () => {
      this.#following = undefined;
      this.interrupt(given.reason);
    };
    given.addEventListener("abort", this.#following, { once: true });
  }

  /**
   * Aborts the signal (a listener's throw reported as the task's), then
   * tells `onInterrupt`. Does nothing once the attempt has ended.
   */
  interrupt(reason: unknown): void {
    if (this.#ended) return;
    if (this.#controller !== undefined) {
      abortTask(this.#controller, reason, this.#info);
    }
    const told = this.onInterrupt;
    this.onInterrupt = undefined;
    told?.(reason);
  }

  /** The attempt is over: the holder is no longer followed. */
  end(): void {
    this.#ended = true;
    if (this.#following !== undefined) {
      this.#holder!.signal.removeEventListener("abort", this.#following);
      this.#following = undefined;
    }
  }
}

/**
 * How a call that returned ended: succeeded, unless the holder gave up on
 * it meanwhile (a drain it ended, say), when it counts as abandoned.
 */
function success(value: unknown, holder: Holder | undefined): Called {
  const given = holder?.controller?.signal;
  return given?.aborted
    ? { outcome: "abandoned", value: given.reason }
    : { outcome: "succeeded", value };
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
