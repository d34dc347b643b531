// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { RequestSummary } from "./task_info.ts";
import type { DefinedTask, RetryPolicy } from "./define_task.ts";

/**
 * One task of a chain, as a backend receives it.
 *
 * @example What a backend sees of a task
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import type { BackendTask, TaskBackend } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * const names: string[] = [];
 * const backend: TaskBackend = {
 *   accept(task: BackendTask) {
 *     names.push(`${task.name}(${task.args.length}) retry=${task.retry?.maxAttempts ?? 1}`);
 *   },
 *   enqueue: () => Promise.resolve(),
 * };
 * const resize = defineTask((_context, _path: string) => {}, { name: "resize", retry: {} });
 * backend.accept({ name: resize.name, args: ["a.png"], timeout: undefined, retry: resize.retry, task: resize as never }, {});
 * assert.deepEqual(names, ["resize(1) retry=3"]);
 * ```
 */
export interface BackendTask {
  /** The task's name, under which the workers find its function. */
  readonly name: string;
  /** The arguments it was added with, after its context. */
  readonly args: readonly unknown[];
  /** Milliseconds an attempt may take, if the task sets a limit. */
  readonly timeout: number | undefined;
  /** The retry policy, if the task has one. */
  readonly retry: RetryPolicy | undefined;
  /** The defined task itself, for a backend that runs in this process. */
  readonly task: DefinedTask;
}

/**
 * One request's chain, as a backend receives it.
 *
 * @example Log each chain a backend takes over
 * ```ts
 * import type { BackendChain } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * function describeChain(chain: BackendChain): string {
 *   const from = chain.request ? ` from ${chain.request.method} ${chain.request.url}` : "";
 *   return `${chain.id}: ${chain.tasks.map((task) => task.name).join(" → ")}${from}`;
 * }
 * assert.equal(
 *   describeChain({ id: "c1", tasks: [], request: { method: "POST", url: "http://localhost/x" }, delivered: true }),
 *   "c1:  from POST http://localhost/x",
 * );
 * ```
 */
export interface BackendChain {
  /** A unique id: with a task's index, it makes the task's stable id. */
  readonly id: string;
  /** The tasks, in the order they were added. */
  readonly tasks: readonly BackendTask[];
  /** The request whose handler added them. */
  readonly request: RequestSummary | undefined;
  /**
   * Whether its response reached the client; `undefined` when the chain is
   * handed over before the response is sent.
   */
  readonly delivered: boolean | undefined;
  /**
   * The W3C `traceparent` of the request's span, when Deno's telemetry is
   * on and the handler's `telemetry` option is not `false`: a backend
   * carries it with the chain, and its worker starts the tasks' spans under
   * it, so that they join the request's trace, even in another process or
   * after a crash.
   */
  readonly traceparent?: string | undefined;
}

/**
 * Options for {@linkcode TaskBackend.enqueue}: when to stop trying to store a
 * chain, such as when a drain deadline abandons it.
 *
 * @example A backend that retries until the signal gives up
 * ```ts
 * import type { BackendChain, EnqueueOptions, TaskBackend } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * let reachable = false;
 * async function write(_chain: BackendChain): Promise<void> {
 *   if (!reachable) throw new Error("Connection refused");
 * }
 *
 * const backend: TaskBackend = {
 *   accept() {},
 *   async enqueue(chain: BackendChain, { signal }: EnqueueOptions = {}) {
 *     while (true) {
 *       signal?.throwIfAborted();
 *       try {
 *         return await write(chain);
 *       } catch {
 *         await new Promise((resolve) => setTimeout(resolve, 10));
 *       }
 *     }
 *   },
 * };
 *
 * const chain: BackendChain = { id: "c1", tasks: [], request: undefined, delivered: true };
 * const deadline = new AbortController();
 * const lost = backend.enqueue(chain, { signal: deadline.signal });
 * deadline.abort(new Error("Abandoned at the drain deadline"));
 * await assert.rejects(lost, { message: "Abandoned at the drain deadline" });
 *
 * reachable = true;
 * await backend.enqueue(chain, { signal: new AbortController().signal });
 * ```
 */
export interface EnqueueOptions {
  /**
   * Gives up on the chain: a backend still trying to store it stops and
   * rejects with `signal.reason`. A chain whose write was in flight when the
   * signal aborted may still have been stored.
   */
  signal?: AbortSignal;
}
