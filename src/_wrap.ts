// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { type Chain, internals } from "./_chain.ts";
import type { DrainOptions, DrainResult, Runner } from "./_runner.ts";
import { assertNumber } from "./_util.ts";
import { BackgroundTasks } from "./background_tasks.ts";
import type { TaskControls } from "./with_background_tasks.ts";

/** Creates a request's tasks, owned by `runner`. */
export function tasksFor(
  runner: Runner,
  request: Request,
): { tasks: BackgroundTasks; chain: Chain } {
  const tasks = new BackgroundTasks();
  const chain = internals.chainOf(tasks);
  chain.owner = runner;
  chain.facade = tasks;
  runner.opened(chain, request);
  internals.created?.(chain);
  return { tasks, chain };
}

/** The runner behind each handler or middleware given controls. */
export const runnerOf: WeakMap<object, Runner> = new WeakMap();

/** Gives a handler or middleware the runner's `drain()`, `pending` and `stats`. */
export function withControls<F extends object>(
  target: F,
  runner: Runner,
): F & TaskControls {
  function drain(options: DrainOptions = {}): Promise<DrainResult> {
    // Infinity, the default, waits as long as it takes.
    if (options.timeout !== undefined && options.timeout !== Infinity) {
      assertNumber(options.timeout, "timeout", "Cannot drain", 0);
    }
    return runner.drain(options);
  }
  runnerOf.set(target, runner);
  return Object.defineProperties(target, {
    drain: { value: drain },
    pending: { get: () => runner.pending, enumerable: true },
    stats: { get: () => runner.stats, enumerable: true },
  }) as F & TaskControls;
}
