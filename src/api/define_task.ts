// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { escapeControls } from "./_describe_task.ts";
import {
  assertFunction,
  assertInteger,
  assertNumber,
  assertOptions,
  assertTimeout,
  describe,
  MAX_TIMER_DELAY,
  optionKeys,
} from "../util/_assert.ts";
import { functionName } from "../util/_promise.ts";

/**
 * What a task made with {@linkcode defineTask} receives as its first argument.
 *
 * @example Honour the signal
 * ```ts
 * import { BackgroundTasks, defineTask } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const seen: string[] = [];
 * const wait = defineTask(({ signal, attempt, name }) =>
 *   new Promise<void>((resolve, reject) => {
 *     seen.push(`${name} attempt ${attempt}`);
 *     signal.addEventListener("abort", () => reject(signal.reason));
 *   }), { name: "wait", timeout: 10 });
 *
 * const tasks = new BackgroundTasks();
 * tasks.addTask(wait);
 * const [result] = await tasks.run({ onTaskError: () => {} });
 * assert.deepEqual(seen, ["wait attempt 1"]);
 * assert.equal(result?.status, "rejected");
 * ```
 */
export interface TaskContext {
  /**
   * This attempt's own signal: aborted when it times out (its reason is
   * then a {@linkcode TaskTimeoutError}) or when the task is abandoned (at
   * a drain or shutdown deadline, or when a worker closes). Pass it to
   * `fetch` and other cancellable calls.
   */
  readonly signal: AbortSignal;
  /** Which attempt this is, from 1. */
  readonly attempt: number;
  /**
   * A stable id for this task of this request: the same on every attempt,
   * and on every delivery when a backend delivers it again after a crash.
   * Tasks run at least once; use it to make their effects happen once.
   */
  readonly id: string;
  /** The task's name. */
  readonly name: string;
}

/**
 * When and how often to try a failed task again. The delay before retry `n`
 * (from 1) is `minDelay * multiplier ** (n - 1)`, capped at `maxDelay`, then
 * reduced by a random share of up to `jitter` of itself.
 *
 * @example Retry only server errors
 * ```ts
 * import { BackgroundTasks, defineTask } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * class HttpError extends Error {
 *   constructor(readonly status: number) {
 *     super(`HTTP ${status}`);
 *   }
 * }
 * let calls = 0;
 * const notify = defineTask(() => {
 *   calls++;
 *   throw new HttpError(calls === 1 ? 503 : 400);
 * }, {
 *   retry: { maxAttempts: 5, minDelay: 1, isRetriable: (error) => error instanceof HttpError && error.status >= 500 },
 * });
 * const tasks = new BackgroundTasks();
 * tasks.addTask(notify);
 * await tasks.run({ onTaskError: () => {} });
 * assert.equal(calls, 2);
 * ```
 */
export interface RetryOptions {
  /**
   * How many attempts in all, the first included.
   *
   * @default {3}
   */
  maxAttempts?: number;
  /**
   * Milliseconds before the first retry.
   *
   * @default {1000}
   */
  minDelay?: number;
  /**
   * The longest wait between two attempts, in milliseconds: at most
   * 2147483647, the longest timer.
   *
   * @default {60000}
   */
  maxDelay?: number;
  /**
   * How much each wait grows over the previous one.
   *
   * @default {2}
   */
  multiplier?: number;
  /**
   * The share of each wait that is randomised, from 0 (none) to 1 (anywhere
   * between 0 and the full wait), so that failing tasks do not retry in step.
   *
   * @default {1}
   */
  jitter?: number;
  /**
   * Whether a failure is worth another attempt. Timeouts are passed in as a
   * {@linkcode TaskTimeoutError}.
   *
   * @default {() => true}
   */
  isRetriable?: (error: unknown) => boolean;
}

/**
 * What a keyed task does when a duplicate of it (a task of the same name and
 * the same key) is waiting to start, once the task's handler has answered:
 *
 * - `"queue"`: it waits behind it; duplicates run one at a time, in the
 *   order they were added, across requests;
 * - `"skip"`: it is not run, and ends as `"deduplicated"`;
 * - `"replace"`: it takes the waiting one's place (its arguments win, and
 *   the one it replaced ends as `"deduplicated"`).
 *
 * Under every mode, a task waits while a duplicate runs.
 *
 * @example A mode per task
 * ```ts
 * import { defineTask, type OnDuplicate } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const mode: OnDuplicate = "skip";
 * const warmCache = defineTask((_context, _page: string) => {}, {
 *   name: "warmCache",
 *   key: (page) => page,
 *   onDuplicate: mode,
 * });
 * assert.equal(warmCache.onDuplicate, "skip");
 * ```
 */
export type OnDuplicate = "queue" | "skip" | "replace";

/**
 * Options for {@linkcode defineTask}.
 *
 * @typeParam A The task's parameters after its context, which `key` takes.
 *
 * @example Name, bound and retry a task
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const task = defineTask(async () => {}, {
 *   name: "syncCrm",
 *   timeout: 30_000,
 *   retry: { maxAttempts: 4, minDelay: 500 },
 * });
 * assert.equal(task.name, "syncCrm");
 * assert.equal(task.timeout, 30_000);
 * assert.equal(task.retry?.maxAttempts, 4);
 * ```
 */
export interface DefineTaskOptions<A extends unknown[] = unknown[]> {
  /**
   * The name reports, hooks and statistics use for the task.
   *
   * @default {fn.name, else "anonymous"}
   */
  name?: string;
  /**
   * Milliseconds an attempt may take before it is abandoned and reported as a
   * {@linkcode TaskTimeoutError}. Overrides the runner's default `timeout`.
   *
   * @default {the runner's `timeout`, which defaults to none}
   */
  timeout?: number;
  /**
   * Retry the task when it fails; the failures before the last are passed to
   * `onTaskEnd` only, the last one to `onTaskError` too.
   *
   * @default {no retry}
   */
  retry?: RetryOptions;
  /**
   * Makes the task keyed: the entity it acts on, from its own arguments,
   * called at `addTask()`. Two tasks of the same name and the same key are
   * duplicates, which `onDuplicate` says what to do with. A keyed task
   * leaves its request's chain for its key's lane: the request's other
   * tasks do not wait for it, nor it for them. It still starts only once
   * its request's response has been sent.
   *
   * It must return a non-empty string of at most 256 characters: otherwise,
   * or if it throws, `addTask()` throws a `TypeError` that names `key`. A
   * keyed task needs a `name` (or a named function): without one, it would
   * be `"anonymous"`, a duplicate of every other such task of the same key.
   *
   * @default {none: the task runs in its request's chain}
   *
   * @example One reindex per user at a time, in order, across requests
   * ```ts
   * import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
   * import { callHandler } from "@afterward/background-tasks/testing";
   * import assert from "node:assert/strict";
   *
   * const log: string[] = [];
   * const reindex = defineTask(async (_context, userId: string, version: number) => {
   *   log.push(`start ${userId}@${version}`);
   *   await new Promise((resolve) => setTimeout(resolve, 10));
   *   log.push(`end ${userId}@${version}`);
   * }, { name: "reindex", key: (userId) => userId });
   * const handler = withBackgroundTasks((request, _info, tasks) => {
   *   tasks.addTask(reindex, "u42", Number(new URL(request.url).searchParams.get("v")));
   *   return new Response("saved");
   * });
   * await callHandler(handler, "/profile?v=1");
   * await callHandler(handler, "/profile?v=2");
   * await handler.drain();
   * assert.deepEqual(log, ["start u42@1", "end u42@1", "start u42@2", "end u42@2"]);
   * ```
   */
  key?: (...args: A) => string;
  /**
   * What a keyed task does when a duplicate is waiting: see
   * {@linkcode OnDuplicate}. Needs `key`. The decision is taken once the
   * task's handler has answered (a task added later, at once): a task whose
   * handler fails is discarded without having taken a duplicate's place.
   * Until then, the task counts as pending, under `maxPending` too.
   *
   * @default {"queue"}
   *
   * @example Warm each page once, however often it is asked for
   * ```ts
   * import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
   * import { callHandler } from "@afterward/background-tasks/testing";
   * import assert from "node:assert/strict";
   *
   * const warmed: string[] = [];
   * const warm = defineTask((_context, page: string) => void warmed.push(page), {
   *   name: "warm",
   *   key: (page) => page,
   *   onDuplicate: "skip",
   * });
   * const handler = withBackgroundTasks((_request, _info, tasks) => {
   *   tasks.addTask(warm, "/home");
   *   tasks.addTask(warm, "/home");
   *   tasks.addTask(warm, "/about");
   *   return new Response("ok");
   * });
   * await (await callHandler(handler, "/")).tasks;
   * assert.deepEqual(warmed.toSorted(), ["/about", "/home"]);
   * assert.equal(handler.stats.deduplicated, 1);
   * ```
   */
  onDuplicate?: OnDuplicate;
  /**
   * Milliseconds a keyed task waits, from when it was added, before it may
   * start: an integer from 0 to 2147483647, the longest timer. With
   * `onDuplicate: "replace"`, each replacement starts the wait again, so
   * that a burst runs once, after it stops (debounce). Needs `key`.
   *
   * @default {0}
   *
   * @example Debounce: the last of a burst, once it is over
   * ```ts
   * import { defineTask } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * const reindex = defineTask(async (_context, userId: string) => {}, {
   *   name: "reindex",
   *   key: (userId) => userId,
   *   onDuplicate: "replace",
   *   delay: 2_000,
   * });
   * assert.deepEqual([reindex.onDuplicate, reindex.delay], ["replace", 2_000]);
   * ```
   */
  delay?: number;
}

/**
 * {@linkcode RetryOptions} with their defaults applied.
 *
 * @example The defaults
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const { retry } = defineTask(() => {}, { retry: {} });
 * assert.deepEqual(
 *   [retry?.maxAttempts, retry?.minDelay, retry?.maxDelay, retry?.multiplier, retry?.jitter],
 *   [3, 1000, 60000, 2, 1],
 * );
 * ```
 */
export type RetryPolicy = Readonly<Required<RetryOptions>>;

/**
 * A task with a name, a timeout or a retry policy, made by
 * {@linkcode defineTask}. Add it like a function:
 * `tasks.addTask(definedTask, ...args)`.
 *
 * @typeParam A The task's parameters after its {@linkcode TaskContext}.
 *
 * @example Construct one directly
 * ```ts
 * import { BackgroundTasks, DefinedTask } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const greet = new DefinedTask(({ name }, who: string) => `${name} greets ${who}`, { name: "greet" });
 * const tasks = new BackgroundTasks();
 * tasks.addTask(greet, "Ada");
 * const [result] = await tasks.run();
 * assert.ok(result?.status === "fulfilled");
 * assert.equal(result.value, "greet greets Ada");
 * ```
 */
export class DefinedTask<A extends unknown[] = unknown[]> {
  /** The task's name. */
  readonly name: string;
  /** Milliseconds an attempt may take, or `undefined` for the runner's default. */
  readonly timeout: number | undefined;
  /** The retry policy, or `undefined` for a single attempt. */
  readonly retry: RetryPolicy | undefined;
  /** The function, which receives a {@linkcode TaskContext} before its arguments. */
  readonly fn: (this: void, context: TaskContext, ...args: A) => unknown;
  /** The key function of a keyed task, else `undefined`. */
  readonly key: ((this: void, ...args: A) => string) | undefined;
  /** What a keyed task does with a waiting duplicate; `undefined` unless keyed. */
  readonly onDuplicate: OnDuplicate | undefined;
  /** Milliseconds a keyed task waits before it may start; `undefined` unless keyed. */
  readonly delay: number | undefined;

  /**
   * Same as {@linkcode defineTask}.
   *
   * @param fn The function to run; it may return a promise.
   * @param options The task's name, timeout, retry policy and key.
   */
  constructor(
    fn: (this: void, context: TaskContext, ...args: A) => unknown,
    options: DefineTaskOptions<A> = {},
  ) {
    const action = "Cannot define task";
    assertFunction(fn, "fn", action);
    assertOptions(options, DEFINE_TASK_OPTIONS, action);
    const { name = functionName(fn), timeout, retry, key } = options;
    if (typeof name !== "string" || name === "") {
      throw new TypeError(
        `${action} as 'name' must be a non-empty string: current value is ${
          describe(name)
        }`,
      );
    }
    if (timeout !== undefined) assertTimeout(timeout, "timeout", action);
    this.fn = fn;
    this.name = name;
    this.timeout = timeout;
    this.retry = retry === undefined ? undefined : retryPolicy(retry, action);
    this.key = key;
    ({ onDuplicate: this.onDuplicate, delay: this.delay } = keying(
      options,
      name,
      action,
    ));
  }
}

/** The options of a keyed task, checked; both `undefined` for a task without `key`. */
function keying<A extends unknown[]>(
  options: DefineTaskOptions<A>,
  name: string,
  action: string,
): { onDuplicate: OnDuplicate | undefined; delay: number | undefined } {
  const { key, onDuplicate, delay } = options;
  if (key === undefined) {
    for (
      const [name, value] of [["onDuplicate", onDuplicate], ["delay", delay]]
    ) {
      if (value === undefined) continue;
      throw new TypeError(
        `${action} as '${name}' needs a 'key': without one, a task has no duplicate and starts once its response is sent`,
      );
    }
    return { onDuplicate: undefined, delay: undefined };
  }
  assertFunction(key, "key", action);
  // A name made up for it would make it a duplicate of every other such
  // task of the same key: a "skip" would drop a task of another function.
  if (options.name === undefined && name === "anonymous") {
    throw new TypeError(
      `${action} as a keyed task needs a 'name' (or a named function): its duplicates are the tasks of the same name and key, and a function without a name would be "anonymous", as every other`,
    );
  }
  if (onDuplicate !== undefined && !DUPLICATE_MODES.includes(onDuplicate)) {
    throw new TypeError(
      `${action} as 'onDuplicate' must be "queue", "skip" or "replace": current value is ${
        describe(onDuplicate)
      }`,
    );
  }
  if (delay !== undefined) {
    assertInteger(delay, "delay", action, 0);
    if (delay > MAX_TIMER_DELAY) {
      throw new RangeError(
        `${action} as 'delay' must be <= ${MAX_TIMER_DELAY}, the longest timer: current value is ${delay}`,
      );
    }
  }
  return { onDuplicate: onDuplicate ?? "queue", delay: delay ?? 0 };
}

const DUPLICATE_MODES: readonly unknown[] = ["queue", "skip", "replace"];

/**
 * Defines a task that receives a {@linkcode TaskContext} (its abort `signal`,
 * `attempt` and `name`) before its own arguments, with an optional name,
 * timeout and retry policy. `addTask(definedTask, ...args)` checks `args`
 * against the parameters after the context.
 *
 * Plain functions stay the simplest way to add work, with FastAPI's call
 * shape; define a task when it should be cancellable, bounded in time or
 * retried.
 *
 * @example A cancellable, retried task
 * ```ts
 * import { BackgroundTasks, defineTask } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * let calls = 0;
 * const sendEmail = defineTask(async ({ signal, attempt }, to: string) => {
 *   calls++;
 *   if (attempt < 2) throw new Error("mail server busy");
 *   signal.throwIfAborted();
 *   return `sent to ${to}`;
 * }, { name: "sendEmail", timeout: 5_000, retry: { maxAttempts: 3, minDelay: 1 } });
 *
 * const tasks = new BackgroundTasks();
 * tasks.addTask(sendEmail, "a@example.com");
 * const [result] = await tasks.run();
 * assert.equal(calls, 2);
 * assert.deepEqual(result?.status, "fulfilled");
 * ```
 *
 * @typeParam A The task's parameters after its context.
 * @param fn The function to run; it may return a promise.
 * @param options The task's name, timeout, retry policy and key.
 * @returns A task to pass to `addTask`.
 * @throws {TypeError} If `fn` is not a function, an option has the wrong
 * type, `onDuplicate` or `delay` is given without `key`, or `key` without
 * a name (neither `name` nor a named function).
 * @throws {RangeError} If a number is out of range.
 */
export function defineTask<A extends unknown[]>(
  fn: (this: void, context: TaskContext, ...args: A) => unknown,
  options: DefineTaskOptions<A> = {},
): DefinedTask<A> {
  return new DefinedTask(fn, options);
}

const DEFINE_TASK_OPTIONS = optionKeys<DefineTaskOptions>({
  name: true,
  timeout: true,
  retry: true,
  key: true,
  onDuplicate: true,
  delay: true,
});

const RETRY_OPTIONS = optionKeys<RetryOptions>({
  maxAttempts: true,
  minDelay: true,
  maxDelay: true,
  multiplier: true,
  jitter: true,
  isRetriable: true,
});

function retryPolicy(options: RetryOptions, action: string): RetryPolicy {
  assertOptions(options, RETRY_OPTIONS, action, "retry");
  const {
    maxAttempts = 3,
    minDelay = 1000,
    maxDelay = 60_000,
    multiplier = 2,
    jitter = 1,
    isRetriable = () => true,
  } = options;
  assertInteger(maxAttempts, "retry.maxAttempts", action, 1);
  assertNumber(minDelay, "retry.minDelay", action, 0);
  assertNumber(maxDelay, "retry.maxDelay", action, 0);
  if (maxDelay > MAX_TIMER_DELAY) {
    throw new RangeError(
      `${action} as 'retry.maxDelay' must be <= ${MAX_TIMER_DELAY}, the longest timer: current value is ${maxDelay}`,
    );
  }
  if (minDelay > maxDelay) {
    throw new RangeError(
      `${action} as 'retry.minDelay' must be <= 'retry.maxDelay': current values are ${minDelay} and ${maxDelay}`,
    );
  }
  assertNumber(multiplier, "retry.multiplier", action, 1);
  if (typeof jitter !== "number") {
    throw new TypeError(
      `${action} as 'retry.jitter' must be a number: current value is ${
        describe(jitter)
      }`,
    );
  }
  if (!(jitter >= 0 && jitter <= 1)) {
    throw new RangeError(
      `${action} as 'retry.jitter' must be between 0 and 1: current value is ${
        describe(jitter)
      }`,
    );
  }
  assertFunction(isRetriable, "retry.isRetriable", action);
  return { maxAttempts, minDelay, maxDelay, multiplier, jitter, isRetriable };
}

/**
 * The reason a task attempt failed when it ran longer than its timeout. The
 * attempt's `signal` is aborted with it, and it reaches `onTaskError` (and
 * `isRetriable`) like any other failure.
 *
 * @example Recognise a timeout in onTaskError
 * ```ts
 * import {
 *   BackgroundTasks,
 *   defineTask,
 *   TaskTimeoutError,
 * } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const hang = defineTask(({ signal }) =>
 *   new Promise((_resolve, reject) => {
 *     signal.addEventListener("abort", () => reject(signal.reason));
 *   }), { name: "hang", timeout: 10 });
 *
 * const tasks = new BackgroundTasks();
 * tasks.addTask(hang);
 * const timeouts: number[] = [];
 * await tasks.run({
 *   onTaskError(error) {
 *     if (error instanceof TaskTimeoutError) timeouts.push(error.timeout);
 *   },
 * });
 * assert.deepEqual(timeouts, [10]);
 * ```
 */
export class TaskTimeoutError extends Error {
  /** The name of the task that timed out. */
  readonly task: string;
  /** The limit it exceeded, in milliseconds. */
  readonly timeout: number;

  /**
   * Constructs a new {@linkcode TaskTimeoutError}.
   *
   * @param task The task's name.
   * @param timeout The limit in milliseconds.
   */
  constructor(task: string, timeout: number) {
    super(
      `Background task "${escapeControls(task)}" timed out after ${timeout} ms`,
    );
    this.name = "TaskTimeoutError";
    this.task = task;
    this.timeout = timeout;
  }
}
