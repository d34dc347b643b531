// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One call of a task, raced as std's deadline() and abortable() race a
// promise against a signal: against its timeout, and against whoever holds
// it (its chain, a worker's shutdown) giving up on it. A defined task gets
// a context whose signal is its attempt's own, made when first read.

import { abortTask } from "./_report.ts";
import {
  type DefinedTask,
  type TaskContext,
  TaskTimeoutError,
} from "../api/define_task.ts";
import { MAX_TIMER_DELAY } from "../util/_assert.ts";
import { isInstance, isThenable, toPromise } from "../util/_promise.ts";
import type { TaskInfo } from "../api/task_info.ts";

/** What an attempt calls: a function, or a defined task's, which takes a context first. */
export interface Runnable {
  readonly fn: (...args: never[]) => unknown;
  readonly args: readonly unknown[];
  readonly defined: DefinedTask | undefined;
}

/** How an attempt ended. */
export type Outcome = "succeeded" | "failed" | "timedOut" | "abandoned";

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

/** What a call needs besides the task. */
export interface CallOptions {
  /** The task's stable id, for the context of a defined task. */
  readonly id: string;
  /** Who may give up on the task: it then ends as abandoned. */
  readonly holder: Holder | undefined;
  /** Milliseconds the call may take. */
  readonly timeout: number | undefined;
}

/** How a call ended. */
export interface Called {
  outcome: Outcome;
  value: unknown;
}

/**
 * Calls the task once. If it returns a promise, races it against its
 * timeout and, if the holder says so, its holder giving up; `abandoned`,
 * if given, is told at once when the holder gives up meanwhile. Settles at
 * once when the task did. The timeout counts from `clock`, when the caller
 * read `performance.now()` already, else from the call.
 */
export function call(
  task: Runnable,
  info: TaskInfo,
  options: CallOptions,
  abandoned: ((reason: unknown) => void) | undefined,
  clock?: number,
): Called | Promise<Called> {
  const { holder } = options;
  // A limit no timer can express is no limit.
  const timeout = options.timeout !== undefined &&
      options.timeout <= MAX_TIMER_DELAY
    ? options.timeout
    : undefined;
  const startedAt = timeout === undefined ? 0 : clock ?? performance.now();
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
    // microtasks (the first timer of a `deno test` process does, Deno
    // 2.9.6: tests/suites/deno_behaviours_test.ts), the task's settling among
    // them, which must find the timer to clear.
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
