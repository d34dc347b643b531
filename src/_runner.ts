// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { Chain, ChainOwner } from "./_chain.ts";
import type {
  TaskErrorHandler,
  TaskInfo,
  TaskResult,
} from "./background_tasks.ts";
import { describeTask, logTaskError } from "./log_task_error.ts";
import { isThenable } from "./_util.ts";

/**
 * Runs a chain's tasks one after another, each isolated, and resolves with one
 * settled result per task. Tasks added while it runs join the end of the
 * chain. Running the same chain twice returns the first run's promise.
 *
 * The returned promise never rejects: every call into user code (tasks and
 * `onError`) is caught.
 */
export function runChain(
  chain: Chain,
  onError: TaskErrorHandler,
): Promise<TaskResult[]> {
  return chain.results ??= execute(chain, onError);
}

async function execute(
  chain: Chain,
  onError: TaskErrorHandler,
): Promise<TaskResult[]> {
  chain.started = true;
  const results: TaskResult[] = [];
  const { tasks, owner } = chain;
  // The length is read on every turn so that tasks added by running tasks
  // join this chain; the chain closes in the same synchronous step as the
  // last check, so no task can slip in between.
  for (let index = 0; index < tasks.length; index++) {
    const { fn, args, name } = tasks[index]!;
    // Let the arguments be collected as soon as the task has run.
    tasks[index] = undefined;
    try {
      // Called as a plain function, as FastAPI does: `this` is undefined.
      let value = fn(...args);
      if (isThenable(value)) value = await value;
      results.push({ status: "fulfilled", name, index, value });
    } catch (reason) {
      const info: TaskInfo = {
        name,
        index,
        request: chain.request,
        delivered: chain.delivered,
      };
      const reporting = report(onError, reason, info);
      if (reporting !== undefined) await reporting;
      results.push({ status: "rejected", name, index, reason });
    }
    owner?.release(1);
  }
  chain.close("the request's tasks have already run");
  owner?.finished(chain);
  return results;
}

/**
 * Calls `onError` without letting it disturb the chain: a throw or rejection
 * from it is written by the default reporter, next to the original error.
 * Returns a promise only when `onError` returned one; that promise never
 * rejects.
 */
function report(
  onError: TaskErrorHandler,
  error: unknown,
  info: TaskInfo,
): Promise<void> | undefined {
  let result: unknown;
  try {
    result = onError(error, info);
  } catch (hookError) {
    reportHookFailure(error, info, hookError);
    return;
  }
  if (isThenable(result)) {
    return Promise.resolve(result).then(
      () => {},
      (hookError) => reportHookFailure(error, info, hookError),
    );
  }
}

function reportHookFailure(
  error: unknown,
  info: TaskInfo,
  hookError: unknown,
): void {
  try {
    logTaskError(error, info);
    console.error(
      `The 'onError' handler threw while reporting background task ${
        describeTask(info)
      }:`,
      hookError,
    );
  } catch {
    // Even console.error was replaced by something that throws; there is no
    // one left to tell, and the chain must go on.
  }
}

/** Options of a {@linkcode Runner}, validated and with defaults applied. */
export interface RunnerOptions {
  onError: TaskErrorHandler;
  skipUndelivered: boolean;
}

interface DrainWaiter {
  /** Chains up to this sequence number are waited for. */
  last: number;
  /** How many of them are still running. */
  remaining: number;
  resolve: () => void;
}

/**
 * Executes the chains of one wrapped handler: it waits until each response
 * has been sent, starts the chains on a timer shared by every request of the
 * same event-loop turn, and keeps the counts that `pending` and `drain()` read.
 */
export class Runner implements ChainOwner {
  readonly #onError: TaskErrorHandler;
  readonly #skipUndelivered: boolean;
  #pending = 0;
  #scheduled = 0;
  #live = 0;
  #waiters: DrainWaiter[] = [];
  #ready: Chain[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: RunnerOptions) {
    this.#onError = options.onError;
    this.#skipUndelivered = options.skipUndelivered;
  }

  /** Tasks accepted and not yet finished, including those still waiting for their response. */
  get pending(): number {
    return this.#pending;
  }

  accept(): void {
    this.#pending++;
  }

  release(count: number): void {
    this.#pending -= count;
  }

  /**
   * Takes over a chain whose handler has returned its response. The request is
   * read now, while it is still open: once the response completes, Deno closes
   * it and its URL can no longer be read.
   */
  schedule(
    chain: Chain,
    request: Request,
    info: Deno.ServeHandlerInfo | undefined,
  ): void {
    if (!chain.idle) return;
    if (chain.tasks.length === 0) {
      chain.close("the handler returned its response without adding any");
      return;
    }
    chain.request = { method: request.method, url: request.url };
    chain.sequence = ++this.#scheduled;
    this.#live++;
    // `completed` is created lazily by Deno, so it is only touched for
    // requests that have tasks. Both handlers are attached at once: a
    // rejection (HTTP/2 client gone) left unhandled would end the process.
    const completed: unknown = info?.completed;
    if (isThenable(completed)) {
      completed.then(
        () => this.#sent(chain, true),
        () => this.#sent(chain, false),
      );
    } else {
      this.#sent(chain, undefined);
    }
  }

  #sent(chain: Chain, delivered: boolean | undefined): void {
    chain.delivered = delivered;
    if (delivered === false && this.#skipUndelivered) {
      chain.close("the response was not delivered and its tasks were skipped");
      this.finished(chain);
      return;
    }
    this.#ready.push(chain);
    // `completed` resolves before a static body reaches the socket, so tasks
    // wait one macrotask more. One timer serves every chain that becomes
    // ready in the same turn: a timer per request costs a quarter of the CPU.
    this.#timer ??= setTimeout(this.#startReady, 0);
  }

  #startReady = (): void => {
    this.#timer = undefined;
    const ready = this.#ready;
    this.#ready = [];
    for (const chain of ready) runChain(chain, this.#onError);
  };

  finished(chain: Chain): void {
    // A chain its handler ran by hand, before returning, was never scheduled.
    if (chain.sequence === 0) return;
    this.#live--;
    if (this.#waiters.length === 0) return;
    this.#waiters = this.#waiters.filter((waiter) => {
      if (chain.sequence > waiter.last || --waiter.remaining > 0) return true;
      waiter.resolve();
      return false;
    });
  }

  /** Resolves once every chain scheduled so far has finished. */
  drain(): Promise<void> {
    if (this.#live === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#waiters.push({
        last: this.#scheduled,
        remaining: this.#live,
        resolve,
      });
    });
  }
}
