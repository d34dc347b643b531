// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A chain's loop: its tasks one after another, each isolated. Plain tasks
// (no definition, timeout or hook) are called as they are, and a chain of
// plain tasks that return at once runs without a promise of its own, which
// halves the cost of the common request (measured: 1.64 to 0.51 µs). The
// others go through the attempt engine.

import type { Settled } from "./_call.ts";
import type { Chain } from "./_chain.ts";
import { nameOf, type Task } from "./_task.ts";
import { runAttempts } from "./_attempt.ts";
import type { ExecutionConfig } from "./_config.ts";
import { report } from "./_report.ts";
import { isThenable, toPromise } from "../util/_promise.ts";
import type { TaskInfo, TaskResult } from "../api/task_info.ts";
import { uuidV7 } from "../util/_uuid_v7.ts";

/**
 * How many tasks a chain runs in a row before it lets the event loop turn:
 * tasks that return at once, or settle on microtasks only, would otherwise
 * hold it for as long as they keep adding tasks, and no request, timer or
 * drain could run meanwhile.
 */
const TASKS_PER_TURN = 64;

/** Promise's own `then`, read once. */
const then = Promise.prototype.then;

/** Resolves on a later turn of the event loop. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** How the head task's first call went, when `startChain()` began it. */
interface FirstCall {
  failed: boolean;
  value: unknown;
}

/**
 * Runs a chain of `new BackgroundTasks()`, resolving with one settled result
 * per task. The promise never rejects.
 */
export function runChain(
  chain: Chain,
  config: ExecutionConfig,
): Promise<TaskResult[]> {
  const results: TaskResult[] = chain.results = [];
  chain.moveTo("running");
  return execute(chain, config, undefined).then(() => results);
}

/**
 * Runs a runner's chain, which the runner has moved to `running`:
 * synchronously as long as its tasks are plain functions that return without
 * a promise, then in the asynchronous loop from the first that returns one
 * or throws. Never throws.
 */
export function startChain(chain: Chain, config: ExecutionConfig): void {
  if (chain.results !== undefined || !callsAsIs(config)) {
    void execute(chain, config, undefined);
    return;
  }
  runPlain(chain, config, 0);
}

/** startChain()'s loop, from the head, with `run` tasks run in this turn. */
function runPlain(chain: Chain, config: ExecutionConfig, run: number): void {
  const { owner } = chain;
  try {
    for (let task = chain.head; task !== undefined; task = chain.head) {
      if (task.defined !== undefined || ++run > TASKS_PER_TURN) {
        void execute(chain, config, undefined);
        return;
      }
      let value: unknown;
      try {
        // Called as a plain function, as FastAPI does: `this` is undefined.
        value = task.call();
      } catch (reason) {
        void execute(chain, config, { failed: true, value: reason });
        return;
      }
      if (isThenable(value)) {
        awaitPlain(chain, value, run);
        return;
      }
      // The task may have given up on its own chain (a drain it ended).
      if (chain.state !== "running") return;
      chain.advance();
      owner?.taskSettled(chain, "succeeded");
    }
    finish(chain);
  } catch (error) {
    internalError(chain, error);
  }
}

/**
 * Waits for a plain task's promise on two callbacks, not in execute()'s
 * async frame: thousands of chains waiting on long tasks each hold a
 * promise reaction and two closures instead of a suspended function, which
 * the collector feels (bench/latency.ts, "wrapped, 1 task of 100 ms").
 * A rejection goes on in execute(), which reports it.
 */
function awaitPlain(chain: Chain, value: unknown, run: number): void {
  chain.runInTurn = run;
  // Promise's own then, as await uses: a then of the promise's own (which
  // may call back twice, or throw) is not asked. Bound functions, not
  // closures: a chain waiting on a long task holds less.
  then.call(
    toPromise(value),
    plainSettled.bind(chain),
    plainFailed.bind(chain),
  );
}

/** A plain task's promise fulfilled: its chain (`this`) goes on. */
function plainSettled(this: Chain): void {
  if (this.state !== "running") return;
  try {
    this.advance();
    this.owner!.taskSettled(this, "succeeded");
  } catch (error) {
    internalError(this, error);
    return;
  }
  runPlain(this, this.owner!.config, this.runInTurn);
}

/** A plain task's promise rejected: its chain (`this`) goes on in execute(). */
function plainFailed(this: Chain, reason: unknown): void {
  if (this.state !== "running") return;
  void execute(this, this.owner!.config, { failed: true, value: reason });
}

/** The loop. Never rejects. */
async function execute(
  chain: Chain,
  config: ExecutionConfig,
  begun: FirstCall | undefined,
): Promise<void> {
  const { owner } = chain;
  let run = begun === undefined ? 0 : 1;
  try {
    // The head is read on every turn so that tasks added by running tasks
    // join this chain; the chain ends in the same synchronous step as the
    // last check, so no task can slip in between. After each wait, a chain
    // no longer running was given up on, and nothing more may run.
    for (let task = chain.head; task !== undefined; task = chain.head) {
      if (++run > TASKS_PER_TURN) {
        run = 1;
        await nextTurn();
        if (chain.state !== "running") return;
      }
      const index = chain.position;
      let outcome: Settled;
      let value: unknown;
      if (begun !== undefined || isPlain(task, config)) {
        let failed: boolean;
        ({ failed, value } = begun ?? call(task));
        begun = undefined;
        if (!failed && isThenable(value)) {
          try {
            value = await value;
          } catch (reason) {
            failed = true;
            value = reason;
          }
        }
        if (chain.state !== "running") return;
        if (failed) {
          const reporting = report(
            config.onTaskError,
            value,
            infoOf(chain, task, index, 1),
          );
          if (reporting !== undefined) await reporting;
          if (chain.state !== "running") return;
        }
        outcome = failed ? "failed" : "succeeded";
      } else {
        const result = await runAttempts(
          task,
          (attempt) => infoOf(chain, task, index, attempt),
          {
            id: task.defined === undefined
              ? ""
              : `${chain.id ??= uuidV7()}:${index}`,
            signal: chain.signal,
            timeout: task.defined?.timeout ?? config.timeout,
            maxAttempts: task.defined?.retry?.maxAttempts ?? 1,
            parent: chain.trace,
          },
          config,
          () => owner?.retried(chain),
        );
        if (result.outcome === "abandoned" || chain.state !== "running") {
          return;
        }
        outcome = result.outcome;
        value = result.value;
      }
      chain.advance();
      chain.results?.push(
        outcome === "succeeded"
          ? { status: "fulfilled", name: nameOf(task), index, value }
          : { status: "rejected", name: nameOf(task), index, reason: value },
      );
      owner?.taskSettled(chain, outcome);
    }
    finish(chain);
  } catch (error) {
    internalError(chain, error);
  }
}

/**
 * Whether `config` lets a task without a definition be called as it is: no
 * timeout, no hook, no telemetry.
 */
function callsAsIs(config: ExecutionConfig): boolean {
  return config.timeout === undefined && config.onTaskStart === undefined &&
    config.onTaskEnd === undefined && config.telemetry === undefined;
}

/** Whether a task is called as it is: no definition, and `callsAsIs()`. */
function isPlain(task: Task, config: ExecutionConfig): boolean {
  return task.defined === undefined && callsAsIs(config);
}

function call(task: Task): FirstCall {
  try {
    // Called as a plain function, as FastAPI does: `this` is undefined.
    return { failed: false, value: task.call() };
  } catch (reason) {
    return { failed: true, value: reason };
  }
}

/** Ends a chain that ran its last task: its runner's, through the runner. */
function finish(chain: Chain): void {
  const { owner } = chain;
  if (owner === undefined) chain.moveTo("finished");
  else owner.finished(chain);
}

/**
 * Every call into user code is caught where it is made, so only a bug of
 * ours can land here. The chain must still end and count as finished.
 */
function internalError(chain: Chain, error: unknown): void {
  try {
    console.error(
      "Internal error in @afterward/background-tasks, please report it:",
      error,
    );
    if (chain.state === "running") finish(chain);
  } catch {
    // Nobody is left to tell.
  }
}

function infoOf(
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
