// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The options of the wrapper, serve() and the workers, checked once where
// they enter and turned into the configs the inside reads: what runs an
// attempt (ExecutionConfig: hooks, timeout, reporting) and what the runner
// adds (RunnerConfig: limits, the backend, the hand-over). The inside
// never sees an unchecked option.

import { type AmbientContext, ambientContext } from "./_ambient.ts";
import type {
  ExecutionOptions,
  TaskEndEvent,
  TaskErrorHandler,
  TaskInfo,
} from "../api/task_info.ts";
import { logTaskError } from "../api/log_task_error.ts";
import { denoTelemetry, type Telemetry } from "./_telemetry.ts";
import type { TaskBackend } from "../api/task_backend.ts";
import {
  assertBoolean,
  assertFunction,
  assertInteger,
  assertOptions,
  assertTimeout,
  describe,
  MAX_TIMER_DELAY,
  optionKeys,
} from "../util/_assert.ts";
import type { WithBackgroundTasksOptions } from "../api/options.ts";

/** How tasks are executed and reported: the same for a runner and for `run()`. */
export interface ExecutionConfig {
  readonly onTaskError: TaskErrorHandler;
  readonly onTaskStart: ((event: TaskInfo) => unknown) | undefined;
  readonly onTaskEnd: ((event: TaskEndEvent) => unknown) | undefined;
  /** Milliseconds an attempt may take when its task sets no timeout of its own. */
  readonly timeout: number | undefined;
  /** Deno's telemetry, when it is on and not turned off: a span per attempt. */
  readonly telemetry: Telemetry | undefined;
}

/** A runner's options, validated and with defaults applied. */
export interface RunnerConfig extends ExecutionConfig {
  readonly skipUndelivered: boolean;
  /** How many chains may run at once; `Infinity` for no limit. */
  readonly concurrency: number;
  /** How many tasks may be pending; `Infinity` for no limit. */
  readonly maxPending: number;
  /** Set with `ambient: true`: chains run in their request's context. */
  readonly ambient: AmbientContext | undefined;
  /** Where chains go instead of running here, if anywhere. */
  readonly backend: TaskBackend | undefined;
  /** Whether the backend stores a chain before its response goes out. */
  readonly storeFirst: boolean;
}

/** The keys of `ExecutionOptions`. */
export const EXECUTION_OPTIONS: readonly string[] = optionKeys<
  ExecutionOptions
>({
  onTaskError: true,
  timeout: true,
  onTaskStart: true,
  onTaskEnd: true,
  telemetry: true,
});

/** The keys of `WithBackgroundTasksOptions`. */
export const WITH_BACKGROUND_TASKS_OPTIONS: readonly string[] = optionKeys<
  WithBackgroundTasksOptions
>({
  onTaskError: true,
  timeout: true,
  onTaskStart: true,
  onTaskEnd: true,
  telemetry: true,
  skipUndelivered: true,
  concurrency: true,
  maxPending: true,
  ambient: true,
  backend: true,
  handOver: true,
});

/** The execution options among `options` that were given, without the rest. */
export function givenExecutionOptions(
  options: ExecutionOptions,
): ExecutionOptions {
  const given: Record<string, unknown> = {};
  for (const key of EXECUTION_OPTIONS) {
    const value = (options as Record<string, unknown>)[key];
    if (value !== undefined) given[key] = value;
  }
  return given as ExecutionOptions;
}

/** Validates the options that say how tasks run, and applies their defaults. */
export function executionConfig(
  options: ExecutionOptions,
  action: string,
): ExecutionConfig {
  const { onTaskError = logTaskError, timeout, onTaskStart, onTaskEnd } =
    options;
  assertFunction(onTaskError, "onTaskError", action);
  if (timeout !== undefined) assertTimeout(timeout, "timeout", action);
  if (onTaskStart !== undefined) {
    assertFunction(onTaskStart, "onTaskStart", action);
  }
  if (onTaskEnd !== undefined) assertFunction(onTaskEnd, "onTaskEnd", action);
  const { telemetry = true } = options;
  assertBoolean(telemetry, "telemetry", action);
  return {
    onTaskError,
    // A limit no timer can express is no limit; leaving it out keeps plain
    // tasks on the path without timers.
    timeout: timeout === undefined || timeout > MAX_TIMER_DELAY
      ? undefined
      : timeout,
    onTaskStart,
    onTaskEnd,
    telemetry: telemetry ? denoTelemetry() : undefined,
  };
}

/** Validates the options of a wrapped handler, and applies their defaults. */
export function runnerConfig(
  options: WithBackgroundTasksOptions,
  action: string,
): RunnerConfig {
  assertOptions(options, WITH_BACKGROUND_TASKS_OPTIONS, action);
  const {
    skipUndelivered = false,
    concurrency = Infinity,
    maxPending = Infinity,
    ambient = false,
  } = options;
  assertBoolean(skipUndelivered, "skipUndelivered", action);
  assertBoolean(ambient, "ambient", action);
  assertInteger(concurrency, "concurrency", action, 1, true);
  assertInteger(maxPending, "maxPending", action, 1, true);
  const backend = backendOption(options.backend, action);
  const { handOver = "before-response" } = options;
  if (handOver !== "before-response" && handOver !== "after-response") {
    throw new TypeError(
      `${action} as 'handOver' must be "before-response" or "after-response": current value is ${
        describe(handOver)
      }`,
    );
  }
  if (backend === undefined && options.handOver !== undefined) {
    throw new TypeError(
      `${action} as 'handOver' needs a 'backend': without one, tasks run in this process`,
    );
  }
  const storeFirst = backend !== undefined && handOver === "before-response";
  if (storeFirst && skipUndelivered) {
    throw new TypeError(
      `${action} as 'skipUndelivered' needs 'handOver: "after-response"' with a backend: chains are stored before their response is sent`,
    );
  }
  const execution = executionConfig(options, action);
  // A backend that runs tasks here tells the handler's hooks of them.
  backend?.attach?.(givenExecutionOptions(options));
  return {
    ...execution,
    skipUndelivered,
    concurrency,
    maxPending,
    ambient: ambient ? ambientContext(action) : undefined,
    backend,
    storeFirst,
  };
}

function backendOption(
  backend: TaskBackend | undefined,
  action: string,
): TaskBackend | undefined {
  if (backend === undefined) return undefined;
  if (
    typeof backend !== "object" || backend === null ||
    typeof backend.accept !== "function" ||
    typeof backend.enqueue !== "function"
  ) {
    throw new TypeError(
      `${action} as 'backend' must have accept() and enqueue() methods: current value is ${
        describe(backend)
      }`,
    );
  }
  return backend;
}
