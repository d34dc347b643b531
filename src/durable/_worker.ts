// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The side of a backend that runs what another process stored: a worker's
// options checked once (its tasks indexed by name), and one attempt of a
// queued task run through the same attempt engine as the in-process runner, so
// that hooks, timeouts, outcomes and retry decisions mean the same
// wherever a task runs.

import { type AttemptResult, runAttempt } from "../core/_attempt.ts";
import { type ExecutionConfig, executionConfig } from "../core/_config.ts";
import { hook, report } from "../core/_report.ts";
import type { MessagingAttributes } from "../core/_telemetry.ts";
import { describe } from "../util/_assert.ts";
import { DefinedTask } from "../api/define_task.ts";
import type {
  ExecutionOptions,
  RequestSummary,
  TaskEndEvent,
  TaskErrorHandler,
  TaskInfo,
} from "../api/task_info.ts";
import type { WorkerOptions } from "../api/task_backend.ts";

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

/**
 * The execution options of a worker that runs tasks for several owners (a
 * backend's own options, then those of each handler using it) as one: every
 * hook given is called, each isolated from the others; a failure goes to
 * every `onTaskError` given, or to the default reporter when none was, so
 * that it is never reported twice by default; the first `timeout` given
 * applies; telemetry is on unless one of them turned it off.
 */
export function combineExecutionOptions(
  owners: readonly ExecutionOptions[],
): ExecutionOptions {
  const combined: ExecutionOptions = {};
  const reporters = owners.flatMap(({ onTaskError }) =>
    onTaskError === undefined ? [] : [onTaskError]
  );
  if (reporters.length > 0) {
    combined.onTaskError = reporters.length === 1
      ? reporters[0]!
      : everyReporter(reporters);
  }
  const starts = owners.flatMap(({ onTaskStart }) =>
    onTaskStart === undefined ? [] : [onTaskStart]
  );
  if (starts.length > 0) {
    combined.onTaskStart = (event: TaskInfo) => {
      for (const fn of starts) hook("onTaskStart", fn, event);
    };
  }
  const ends = owners.flatMap(({ onTaskEnd }) =>
    onTaskEnd === undefined ? [] : [onTaskEnd]
  );
  if (ends.length > 0) {
    combined.onTaskEnd = (event: TaskEndEvent) => {
      for (const fn of ends) hook("onTaskEnd", fn, event);
    };
  }
  const timeout = owners.find((owner) => owner.timeout !== undefined)?.timeout;
  if (timeout !== undefined) combined.timeout = timeout;
  if (owners.some((owner) => owner.telemetry === false)) {
    combined.telemetry = false;
  }
  return combined;
}

/** Reports a failure to each of `reporters`, each isolated from the others. */
function everyReporter(reporters: TaskErrorHandler[]): TaskErrorHandler {
  return (error: unknown, info: TaskInfo) => {
    const pending = reporters.flatMap((onTaskError) => {
      const reporting = report(onTaskError, error, info);
      return reporting === undefined ? [] : [reporting];
    });
    return pending.length === 0 ? undefined : Promise.all(pending);
  };
}

/**
 * One attempt of a queued task, as a worker took it from its queue (a
 * message, a job).
 */
export interface QueuedAttempt {
  task: DefinedTask;
  args: readonly unknown[];
  /** The task's stable id. */
  id: string;
  index: number;
  attempt: number;
  request: RequestSummary | undefined;
  delivered: boolean | undefined;
  /** Aborted at the worker's shutdown, which gives up on the task. */
  signal?: AbortSignal | undefined;
  /**
   * The attempts the queue will make, when it fixed them at enqueue time
   * (BullMQ): they win over this process's policy, which a deploy may
   * have changed since.
   */
  maxAttempts?: number | undefined;
  /** The `traceparent` the chain carried from its request, if any. */
  trace?: string | undefined;
  /** The queue it came from and its message, for its span. */
  messaging?: MessagingAttributes | undefined;
}

/**
 * Runs one queued attempt of a task, through the same engine as the
 * in-process runner (hooks, timeout, outcome, retry decision, and the report
 * of a failure that will not be retried). Never rejects.
 */
export function runQueued(
  queued: QueuedAttempt,
  config: WorkerConfig,
): Promise<AttemptResult> {
  const { task, args, id, index, attempt, request, delivered, signal } = queued;
  return runAttempt(
    { fn: task.fn, args, defined: task },
    { name: task.name, index, attempt, id, request, delivered },
    {
      id,
      signal,
      timeout: task.timeout ?? config.timeout,
      maxAttempts: queued.maxAttempts ?? task.retry?.maxAttempts ?? 1,
      parent: config.telemetry?.remote(queued.trace),
      messaging: queued.messaging,
    },
    config,
  );
}
