// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { RequestSummary } from "./background_tasks.ts";
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
}

/**
 * Options for {@linkcode TaskBackend.enqueue}.
 *
 * @example Stop retrying when the wrapper gives up
 * ```ts
 * import type { EnqueueOptions } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * async function storeWithRetries(store: () => Promise<void>, options: EnqueueOptions = {}) {
 *   for (;;) {
 *     options.signal?.throwIfAborted();
 *     try {
 *       return await store();
 *     } catch {
 *       await new Promise((resolve) => setTimeout(resolve, 1));
 *     }
 *   }
 * }
 * let calls = 0;
 * await storeWithRetries(async () => {
 *   if (++calls < 3) throw new Error("connection lost");
 * });
 * assert.equal(calls, 3);
 * ```
 */
export interface EnqueueOptions {
  /** Aborted when the wrapper gives up on the chain: stop trying, and reject. */
  signal?: AbortSignal;
}
