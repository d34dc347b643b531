// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { backoff, callHook, isRetriable, reportFailure } from "./_execute.ts";
import { type ExecutionConfig, executionConfig } from "./_options.ts";
import {
  abortIsolated,
  describe,
  isInstance,
  isThenable,
  MAX_TIMER_DELAY,
  toPromise,
} from "./_util.ts";
import { describeTask } from "./_describe_task.ts";
import type { RequestSummary, TaskInfo } from "./task_info.ts";
import type { WorkerOptions } from "./worker_options.ts";
import {
  DefinedTask,
  type TaskContext,
  TaskTimeoutError,
} from "./define_task.ts";

/** {@linkcode WorkerOptions}, validated. */
export interface WorkerConfig extends ExecutionConfig {
  readonly registry: ReadonlyMap<string, DefinedTask>;
}

/** Validates a worker's options and indexes its tasks by name. */
export function workerConfig(
  options: WorkerOptions,
  action: string,
): WorkerConfig {
  const { tasks } = options;
  if (!Array.isArray(tasks)) {
    throw new TypeError(
      `${action} as 'tasks' must be an array of defined tasks: current value is ${
        describe(tasks)
      }`,
    );
  }
  const registry = new Map<string, DefinedTask>();
  for (const [index, task] of tasks.entries()) {
    if (!(task instanceof DefinedTask)) {
      throw new TypeError(
        `${action} as 'tasks[${index}]' must be made by defineTask: current value is ${
          describe(task)
        }`,
      );
    }
    if (registry.has(task.name)) {
      throw new TypeError(
        `${action} as two tasks are named "${task.name}": names must be unique`,
      );
    }
    registry.set(task.name, task as DefinedTask);
  }
  return { ...executionConfig(options, action), registry };
}

/** One delivery of one task to a worker. */
export interface Delivery {
  task: DefinedTask;
  args: readonly unknown[];
  /** The task's stable id. */
  id: string;
  index: number;
  attempt: number;
  request: RequestSummary | undefined;
  delivered: boolean | undefined;
  /** Aborted when the worker shuts down. */
  signal?: AbortSignal | undefined;
  /**
   * The attempts the queue will make, when it fixed them at enqueue time
   * (BullMQ): they win over this process's policy, which a deploy may
   * have changed since.
   */
  maxAttempts?: number | undefined;
}

/** How a delivery went, and what should happen next. */
export interface AttemptResult {
  ok: boolean;
  value: unknown;
  /** Whether to try again, after `delay` milliseconds. */
  retry: boolean;
  delay: number;
}

/**
 * Runs one attempt of a task, isolated like the in-process runner does: the
 * hooks see it, a timeout aborts its signal, and a failure that will not be
 * retried reaches `onTaskError`. Never rejects.
 */
export async function runAttempt(
  delivery: Delivery,
  config: WorkerConfig,
): Promise<AttemptResult> {
  const { task, args, id, index, attempt, request, delivered, signal } =
    delivery;
  const info: TaskInfo = {
    name: task.name,
    index,
    attempt,
    id,
    request,
    delivered,
  };
  callHook("onTaskStart", config.onTaskStart, info);
  const startedAt = performance.now();
  const controller = new AbortController();
  const abort = (reason: unknown) =>
    abortIsolated(controller, reason, (error) => {
      try {
        console.error(
          `An abort listener of background task ${describeTask(info)} threw:`,
          error,
        );
      } catch {
        // console.error itself throws: nobody is left to tell.
      }
    });
  const stop = () => abort(signal?.reason);
  signal?.addEventListener("abort", stop, { once: true });
  const context: TaskContext = {
    signal: controller.signal,
    attempt,
    name: task.name,
    id,
  };
  let ok = true;
  let value: unknown;
  try {
    value = await withTimeout(
      () => task.fn(context, ...args),
      task.timeout ?? config.timeout,
      task.name,
      abort,
    );
  } catch (error) {
    ok = false;
    value = error;
  } finally {
    signal?.removeEventListener("abort", stop);
  }
  const policy = task.retry;
  const maxAttempts = delivery.maxAttempts ?? policy?.maxAttempts ?? 1;
  const retry = !ok && attempt < maxAttempts &&
    (policy === undefined || isRetriable(policy, value, info));
  callHook("onTaskEnd", config.onTaskEnd, {
    ...info,
    duration: performance.now() - startedAt,
    // A task may reject with a revoked proxy, which `instanceof` throws on.
    outcome: ok
      ? "succeeded"
      : isInstance(value, TaskTimeoutError)
      ? "timedOut"
      : "failed",
    error: ok ? undefined : value,
    willRetry: retry,
  });
  if (!ok && !retry) {
    const reporting = reportFailure(config.onTaskError, value, info);
    if (reporting !== undefined) await reporting;
  }
  return {
    ok,
    value,
    retry,
    delay: retry && policy !== undefined ? backoff(policy, attempt) : 0,
  };
}

function withTimeout(
  call: () => unknown,
  timeout: number | undefined,
  name: string,
  abort: (reason: unknown) => void,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let value: unknown;
    try {
      value = call();
    } catch (error) {
      return reject(error);
    }
    if (!isThenable(value)) return resolve(value);
    const timer = timeout === undefined || timeout > MAX_TIMER_DELAY
      ? undefined
      : setTimeout(() => {
        const error = new TaskTimeoutError(name, timeout);
        abort(error);
        reject(error);
      }, timeout);
    toPromise(value).then((settled) => {
      clearTimeout(timer);
      resolve(settled);
    }, (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}
