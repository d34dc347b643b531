// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Retry arithmetic shared by the in-process runner and the backends: the
// delay before the next attempt, whether a failure is worth one, and a wait
// that a signal ends, as std's retry() and delay() do.

import type { RetryPolicy } from "../api/define_task.ts";
import { reportHookFailure } from "./_report.ts";
import type { TaskInfo } from "../api/task_info.ts";

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

/**
 * Asks the policy whether `error` is worth another attempt; an
 * `isRetriable` that throws is reported and answers no.
 */
export function isRetriable(
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
 * Resolves after `ms` milliseconds with `true`, or as soon as `signal`
 * aborts with `false`. Never rejects.
 */
export function delay(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve(!signal.aborted);
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}
