// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { type Chain, nameOf, type Task } from "./_chain.ts";
import type { ExecutionConfig } from "./_options.ts";
import type { TaskErrorHandler, TaskInfo, TaskResult } from "./task_info.ts";
import {
  type RetryPolicy,
  type TaskContext,
  TaskTimeoutError,
} from "./define_task.ts";
import { describeTask } from "./_describe_task.ts";
import { logTaskError } from "./log_task_error.ts";
import {
  abortIsolated,
  isInstance,
  isThenable,
  MAX_TIMER_DELAY,
  toPromise,
} from "./_util.ts";

/**
 * How many tasks a chain runs in a row before it lets the event loop turn:
 * tasks that return at once, or settle on microtasks only, would otherwise
 * hold it for as long as they keep adding tasks, and no request, timer or
 * drain could run meanwhile.
 */
const TASKS_PER_TURN = 64;

/** Resolves on a later turn of the event loop. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Runs a chain's tasks one after another, each isolated, and resolves with one
 * settled result per task. Tasks added while it runs join the end of the
 * chain. Running the same chain twice returns the first run's promise.
 *
 * The returned promise never rejects: every call into user code (tasks,
 * `onTaskError`, hooks) is caught.
 */
export function runChain(
  chain: Chain,
  config: ExecutionConfig,
): Promise<TaskResult[]> {
  return chain.results ??= execute(chain, config, undefined);
}

/** How the head task's first call went, when `startChain` began it. */
interface Begun {
  failed: boolean;
  value: unknown;
}

/**
 * Starts a runner's chain: runs it synchronously as long as its tasks are
 * plain functions that return without a promise, and hands over to the
 * asynchronous loop at the first that returns one or throws. Most chains
 * never need a promise of their own. Never throws.
 */
export function startChain(chain: Chain, config: ExecutionConfig): void {
  if (
    chain.collect || config.timeout !== undefined ||
    config.onTaskStart !== undefined || config.onTaskEnd !== undefined
  ) {
    runChain(chain, config);
    return;
  }
  chain.started = true;
  const { owner } = chain;
  let run = 0;
  try {
    for (let task = chain.head; task !== undefined; task = chain.head) {
      if (task.defined !== undefined || ++run > TASKS_PER_TURN) {
        chain.results = execute(chain, config, undefined);
        return;
      }
      owner?.taskStarted(chain);
      let value: unknown;
      try {
        // Called as a plain function, as FastAPI does: `this` is undefined.
        const { fn, args } = task;
        value = fn(...args);
      } catch (reason) {
        chain.results = execute(chain, config, { failed: true, value: reason });
        return;
      }
      if (isThenable(value)) {
        chain.results = execute(chain, config, { failed: false, value });
        return;
      }
      // The task may have abandoned its own chain (a drain it ended).
      if (chain.abandoned) return;
      chain.advance();
      owner?.taskSettled(chain, true, false);
    }
    chain.close("the request's tasks have already run");
    owner?.finished(chain);
  } catch (error) {
    internalError(chain, error);
  }
}

async function execute(
  chain: Chain,
  config: ExecutionConfig,
  begun: Begun | undefined,
): Promise<TaskResult[]> {
  chain.started = true;
  const { owner } = chain;
  // Nobody reads the results of a runner's chain unless it asked for them.
  const results: TaskResult[] | undefined = chain.collect || owner === undefined
    ? []
    : undefined;
  // Plain functions with no timeout and no hooks take a path with no timer,
  // no clock reading and no await when they return synchronously.
  const plain = config.timeout === undefined &&
    config.onTaskStart === undefined && config.onTaskEnd === undefined;
  // A chain that startChain began has run tasks in this turn already.
  let run = begun === undefined ? 0 : 1;
  try {
    // The head is read on every turn so that tasks added by running tasks
    // join this chain; the chain closes in the same synchronous step as the
    // last check, so no task can slip in between.
    for (let task = chain.head; task !== undefined; task = chain.head) {
      if (++run > TASKS_PER_TURN) {
        run = 1;
        await nextTurn();
        if (chain.abandoned) return results ?? [];
      }
      const index = chain.position;
      let failed = false;
      let value: unknown;
      let timedOut = false;
      let attempt = 1;
      if (begun !== undefined) {
        // startChain already called it: finish what it began.
        ({ failed, value } = begun);
        begun = undefined;
        if (!failed) {
          try {
            value = await value;
          } catch (reason) {
            failed = true;
            value = reason;
          }
        }
      } else if (plain && task.defined === undefined) {
        owner?.taskStarted(chain);
        try {
          // Called as a plain function, as FastAPI does: `this` is undefined.
          const { fn, args } = task;
          value = fn(...args);
          if (isThenable(value)) value = await value;
        } catch (reason) {
          failed = true;
          value = reason;
        }
      } else {
        owner?.taskStarted(chain);
        ({ failed, value, timedOut, attempt } = await attempts(
          chain,
          task,
          index,
          config,
        ));
      }
      // Abandoned at a deadline while it ran: the runner has counted and
      // reported what was left, and nothing more may run.
      if (chain.abandoned) return results ?? [];
      if (failed) {
        const reporting = report(
          config.onTaskError,
          value,
          info(chain, task, index, attempt),
        );
        if (reporting !== undefined) await reporting;
        if (chain.abandoned) return results ?? [];
      }
      chain.advance();
      if (results !== undefined) {
        results.push(
          failed
            ? { status: "rejected", name: nameOf(task), index, reason: value }
            : { status: "fulfilled", name: nameOf(task), index, value },
        );
      }
      owner?.taskSettled(chain, !failed, timedOut);
    }
    chain.close("the request's tasks have already run");
    owner?.finished(chain);
  } catch (error) {
    internalError(chain, error);
  }
  return results ?? [];
}

/**
 * Every call into user code is caught where it is made, so only a bug of
 * ours can land here. The runner drops the chain's promise: it must not
 * reject, and the chain must still count as finished.
 */
function internalError(chain: Chain, error: unknown): void {
  try {
    console.error(
      "Internal error in @afterward/background-tasks, please report it:",
      error,
    );
    chain.close("the request's tasks have already run");
    chain.owner?.finished(chain);
  } catch {
    // Nobody is left to tell.
  }
}

function info(
  chain: Chain,
  task: Task,
  index: number,
  attempt: number,
): TaskInfo {
  return {
    name: nameOf(task),
    index,
    attempt,
    request: chain.request,
    delivered: chain.delivered,
  };
}

interface Outcome {
  /** Whether the last attempt failed; `value` is then its reason. */
  failed: boolean;
  value: unknown;
  timedOut: boolean;
  attempt: number;
}

/** Runs a task's attempts, with its timeout, retries and hooks. */
async function attempts(
  chain: Chain,
  task: Task,
  index: number,
  config: ExecutionConfig,
): Promise<Outcome> {
  try {
    return await attemptsUntilSettled(chain, task, index, config);
  } finally {
    chain.attempt = 0;
  }
}

async function attemptsUntilSettled(
  chain: Chain,
  task: Task,
  index: number,
  config: ExecutionConfig,
): Promise<Outcome> {
  const timeout = task.defined?.timeout ?? config.timeout;
  const retry = task.defined?.retry;
  for (let attempt = 1;; attempt++) {
    const started = info(chain, task, index, attempt);
    const startedAt = performance.now();
    chain.attempt = attempt;
    chain.attemptStartedAt = startedAt;
    hook("onTaskStart", config.onTaskStart, started);
    // The hook may have abandoned the chain (a drain it ended), which told
    // onTaskEnd so.
    if (chain.abandoned) {
      return { failed: true, value: undefined, timedOut: false, attempt };
    }
    let value: unknown;
    let error: unknown;
    let failed = false;
    try {
      value = await once(chain, task, attempt, timeout);
    } catch (reason) {
      error = reason;
      failed = true;
    }
    chain.interrupt = undefined;
    if (chain.abandoned) {
      return { failed: true, value: error, timedOut: false, attempt };
    }
    const timedOut = failed && isInstance(error, TaskTimeoutError);
    const willRetry = failed && retry !== undefined &&
      attempt < retry.maxAttempts && isRetriable(retry, error, started);
    hook("onTaskEnd", config.onTaskEnd, {
      ...started,
      duration: performance.now() - startedAt,
      outcome: failed ? (timedOut ? "timedOut" : "failed") : "succeeded",
      error,
      willRetry,
    });
    if (!failed) return { failed, value, timedOut, attempt };
    if (!willRetry) return { failed, value: error, timedOut, attempt };
    chain.owner?.retried(chain);
    await sleep(chain, backoff(retry, attempt));
    if (chain.abandoned) {
      return { failed: true, value: error, timedOut: false, attempt };
    }
  }
}

/**
 * One attempt: calls the task (with a context when it was defined) and, when
 * it returns a promise and has a timeout, races it against a timer. The race
 * and the attempt's signal are what a deadline interrupts.
 */
function once(
  chain: Chain,
  task: Task,
  attempt: number,
  timeout: number | undefined,
): unknown {
  const startedAt = performance.now();
  const { fn, args } = task;
  const name = nameOf(task);
  let controller: AbortController | undefined;
  let value: unknown;
  if (task.defined === undefined) {
    value = fn(...args);
  } else {
    controller = new AbortController();
    const id = `${chain.id ??= crypto.randomUUID()}:${chain.position}`;
    const context: TaskContext = {
      signal: controller.signal,
      attempt,
      name,
      id,
    };
    chain.interrupt = (reason) => abort(controller!, reason, chain, task);
    value = fn(context, ...args);
  }
  if (!isThenable(value)) return value;
  if (timeout === undefined || timeout > MAX_TIMER_DELAY) return value;
  return new Promise((resolve, reject) => {
    const expire = () => {
      const error = new TaskTimeoutError(name, timeout);
      if (controller !== undefined) abort(controller, error, chain, task);
      reject(error);
    };
    const timer = setTimeout(
      expire,
      Math.max(0, timeout - (performance.now() - startedAt)),
    );
    chain.interrupt = (reason) => {
      clearTimeout(timer);
      if (controller !== undefined) abort(controller, reason, chain, task);
      reject(reason);
    };
    // Handles the task's promise even when the timer wins, so a late
    // rejection is never unhandled.
    toPromise(value).then((settled) => {
      clearTimeout(timer);
      resolve(settled);
    }, (reason) => {
      clearTimeout(timer);
      reject(reason);
    });
  });
}

/**
 * Aborts a task's signal; a listener of the task's that throws is written by
 * the default reporter instead of ending the process.
 */
function abort(
  controller: AbortController,
  reason: unknown,
  chain: Chain,
  task: Task,
): void {
  abortIsolated(controller, reason, (error) => {
    try {
      console.error(
        `An abort listener of background task ${
          describeTask(info(chain, task, chain.position, chain.attempt))
        } threw:`,
        error,
      );
    } catch {
      // console.error itself throws: nobody is left to tell.
    }
  });
}

function sleep(chain: Chain, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    chain.interrupt = () => {
      clearTimeout(timer);
      resolve();
    };
  }).finally(() => {
    chain.interrupt = undefined;
  });
}

/**
 * Milliseconds to wait before retry number `retry` (from 1): the full delay
 * grows by `multiplier` per retry up to `maxDelay`, less a random share of up
 * to `jitter` of itself.
 */
export function backoff(
  policy: RetryPolicy,
  retry: number,
  random: number = Math.random(),
): number {
  const full = Math.min(
    policy.maxDelay,
    policy.minDelay * policy.multiplier ** (retry - 1),
  );
  return full * (1 - policy.jitter * random);
}

function isRetriable(
  policy: RetryPolicy,
  error: unknown,
  info: TaskInfo,
): boolean {
  try {
    return policy.isRetriable(error) === true;
  } catch (hookError) {
    reportHookFailure("isRetriable", info, hookError);
    return false;
  }
}

/**
 * Calls an observer hook without letting it disturb the chain: it is not
 * awaited, and a throw or rejection from it is written by the default
 * reporter.
 */
function hook<E extends TaskInfo>(
  name: string,
  fn: ((event: E) => unknown) | undefined,
  event: E,
): void {
  if (fn === undefined) return;
  try {
    const result = fn(event);
    if (isThenable(result)) {
      Promise.resolve(result).then(
        undefined,
        (hookError) => reportHookFailure(name, event, hookError),
      );
    }
  } catch (hookError) {
    reportHookFailure(name, event, hookError);
  }
}

/**
 * Calls `onTaskError` without letting it disturb the chain: a throw or rejection
 * from it is written by the default reporter, after the original error.
 * Returns a promise only when `onTaskError` returned one; that promise never
 * rejects.
 */
export { hook as callHook, isRetriable, report as reportFailure };

function report(
  onTaskError: TaskErrorHandler,
  error: unknown,
  info: TaskInfo,
): Promise<void> | undefined {
  let result: unknown;
  try {
    result = onTaskError(error, info);
  } catch (hookError) {
    reportErrorHandlerFailure(error, info, hookError);
    return;
  }
  if (isThenable(result)) {
    return toPromise(result).then(
      () => {},
      (hookError) => reportErrorHandlerFailure(error, info, hookError),
    );
  }
  return undefined;
}

function reportErrorHandlerFailure(
  error: unknown,
  info: TaskInfo,
  hookError: unknown,
): void {
  try {
    logTaskError(error, info);
  } catch {
    // console.error itself throws; see reportHookFailure.
  }
  reportHookFailure("onTaskError", info, hookError);
}

/** Writes a failing hook's error, naming the hook and the task. */
export function reportHookFailure(
  name: string,
  info: TaskInfo,
  hookError: unknown,
): void {
  try {
    console.error(
      `The '${name}' handler threw while reporting background task ${
        describeTask(info)
      }:`,
      hookError,
    );
  } catch {
    // Even console.error was replaced by something that throws; there is no
    // one left to tell, and the chain must go on.
  }
}

/**
 * Gives up on a chain at a deadline: aborts its running attempt, ends any
 * wait, tells `onTaskEnd` that the running task was abandoned, and returns
 * the names of every task it will not finish. Its loop stops at its next step.
 */
export function abandonChain(
  chain: Chain,
  config: ExecutionConfig,
  reason: unknown,
): string[] {
  const names = chain.unfinished();
  chain.abandoned = true;
  chain.close("its tasks were abandoned at a shutdown deadline");
  chain.interrupt?.(reason);
  chain.interrupt = undefined;
  // The running task's last end event is still owed, unless it already
  // said it would not be retried and only `onTaskError` is left.
  if (chain.attempt > 0) {
    const task = chain.head!;
    hook("onTaskEnd", config.onTaskEnd, {
      ...info(chain, task, chain.position, chain.attempt),
      duration: performance.now() - chain.attemptStartedAt,
      outcome: "abandoned",
      error: reason,
      willRetry: false,
    });
  }
  return names;
}
