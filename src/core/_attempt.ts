// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One attempt of one task, the same wherever it runs: in this process, in a
// Deno KV listener or in a BullMQ worker. Around one call (see _call.ts):
// the hooks, the outcome, the retry decision, and the report of a last
// failure; in this process, the attempts that follow, each after its
// backoff.

import {
  type AttemptOutcome,
  call,
  type CallOptions,
  type Runnable,
} from "./_call.ts";
import { hook, report } from "./_report.ts";
import { backoff, delay, isRetriable } from "./_retry.ts";
import type { ExecutionConfig } from "./_config.ts";
import type { MessagingAttributes, OtelContext } from "./_telemetry.ts";
import type { TaskInfo, TaskOutcome } from "../api/task_info.ts";

/** How an attempt ended, and what follows it. */
export interface AttemptResult {
  readonly outcome: AttemptOutcome;
  /** What the task returned, or what it threw. */
  readonly value: unknown;
  /** Whether another attempt follows, after `delay` milliseconds. */
  readonly willRetry: boolean;
  readonly delay: number;
  /** When the attempt started, if anyone needed to know: else 0. */
  readonly startedAt: number;
}

/** What an attempt needs besides the task. */
export interface AttemptOptions extends CallOptions {
  /** How many attempts there may be in all. */
  readonly maxAttempts: number;
  /**
   * With telemetry on, the context the attempt's span is the child of: the
   * one captured when its request added the task, or made from the
   * `traceparent` a chain carried from another process.
   */
  readonly parent?: OtelContext | undefined;
  /**
   * With telemetry on, for an attempt a worker took from a queue: the
   * queue's and the message's attributes.
   */
  readonly messaging?: MessagingAttributes | undefined;
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
  const span = config.telemetry?.start(info, options);
  const startedAt = clock(config, options);
  // The end of an attempt given up on is told at once, as the drain that
  // gave up on it ends, not once the attempt notices: call() tells it here.
  const abandoned = config.onTaskEnd === undefined && span === undefined
    ? undefined
    : (reason: unknown) => {
      // Its span too: a task that never settles would leave it open, and
      // unexported, at the shutdown that gave up on it.
      span?.end("abandoned", reason, false);
      tell(info, startedAt, config, "abandoned", reason, false);
    };
  const { signal: given } = options;
  let outcome: AttemptOutcome;
  let value: unknown;
  if (given?.aborted) {
    // The hook gave up on the task (a drain it ended): it does not run.
    abandoned?.(given.reason);
    outcome = "abandoned";
    value = given.reason;
  } else {
    // With telemetry on, the task runs in its span: its own spans and
    // `fetch` calls nest under it.
    const called = span === undefined
      ? call(task, info, options, abandoned, startedAt)
      : span.run(() => call(task, info, options, abandoned, startedAt));
    // A task that returned at once costs no wait.
    ({ outcome, value } = called instanceof Promise ? await called : called);
  }
  const failed = outcome === "failed" || outcome === "timedOut";
  const policy = task.defined?.retry;
  const willRetry = failed && info.attempt < options.maxAttempts &&
    (policy === undefined || isRetriable(policy, value, info));
  // An abandoned attempt's end was told as it was given up on.
  if (outcome !== "abandoned") {
    span?.end(outcome, value, willRetry);
    tell(info, startedAt, config, outcome, value, willRetry);
  }
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
    startedAt,
  };
}

/**
 * Runs a task's attempts in this process, each after the backoff of the one
 * before, until one succeeds or is the last, or `options.signal` aborts.
 * Never rejects.
 */
export async function runAttempts(
  task: Runnable,
  infoOf: (attempt: number) => TaskInfo,
  options: AttemptOptions & { readonly signal: AbortSignal },
  config: ExecutionConfig,
  retried: () => void,
): Promise<AttemptResult> {
  for (let attempt = 1;; attempt++) {
    const info = infoOf(attempt);
    const result = await runAttempt(task, info, options, config);
    if (!result.willRetry) return result;
    retried();
    // Given up on while it waits: the attempt's end is told once more, at
    // once, now that no other follows.
    const { signal } = options;
    const abandon = () =>
      tell(info, result.startedAt, config, "abandoned", signal.reason, false);
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
        startedAt: result.startedAt,
      };
    }
  }
}

/**
 * When an attempt starts, if anyone needs to know: `onTaskEnd`, told how
 * long it took, or the call's timeout, which counts from then. The clock is
 * read once for both (each reading is a call into Deno).
 */
function clock(config: ExecutionConfig, options: CallOptions): number {
  return config.onTaskEnd === undefined && options.timeout === undefined
    ? 0
    : performance.now();
}

/** Tells `onTaskEnd` how an attempt ended. */
function tell(
  info: TaskInfo,
  startedAt: number,
  config: ExecutionConfig,
  outcome: TaskOutcome,
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
