// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { RequestSummary, RunOptions } from "./background_tasks.ts";
import type { DefinedTask, RetryPolicy } from "./define_task.ts";

/**
 * One task of a chain, as a backend receives it.
 *
 * @example What a backend sees of a task
 * ```ts
 * import { defineTask, type HandedTask, type TaskBackend } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const names: string[] = [];
 * const backend: TaskBackend = {
 *   accept(task: HandedTask) {
 *     names.push(`${task.name}(${task.args.length}) retry=${task.retry?.maxAttempts ?? 1}`);
 *   },
 *   enqueue: () => Promise.resolve(),
 * };
 * const resize = defineTask((_context, _path: string) => {}, { name: "resize", retry: {} });
 * backend.accept({ name: resize.name, args: ["a.png"], timeout: undefined, retry: resize.retry, task: resize as never }, {});
 * assert.deepEqual(names, ["resize(1) retry=3"]);
 * ```
 */
export interface HandedTask {
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
 * import type { HandedChain } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * function describeChain(chain: HandedChain): string {
 *   const from = chain.request ? ` from ${chain.request.method} ${chain.request.url}` : "";
 *   return `${chain.id}: ${chain.tasks.map((task) => task.name).join(" → ")}${from}`;
 * }
 * assert.equal(
 *   describeChain({ id: "c1", tasks: [], request: { method: "POST", url: "http://localhost/x" }, delivered: true }),
 *   "c1:  from POST http://localhost/x",
 * );
 * ```
 */
export interface HandedChain {
  /** A unique id: with a task's index, it makes the task's stable id. */
  readonly id: string;
  /** The tasks, in the order they were added. */
  readonly tasks: readonly HandedTask[];
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
 * import type { EnqueueOptions } from "@afterward/background-tasks";
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

/**
 * Where a wrapped handler sends its chains instead of running them in this
 * process: a durable queue (`@afterward/background-tasks/kv`) or workers in
 * other processes (`@afterward/background-tasks/bullmq`). A backend checks
 * each task when it is added, so that a task it could not run fails in the
 * handler, and takes over each chain when its handler returns (before the
 * response goes out, by default).
 *
 * @example A backend that records what it receives
 * ```ts
 * import {
 *   defineTask,
 *   type HandedChain,
 *   type TaskBackend,
 *   withBackgroundTasks,
 * } from "@afterward/background-tasks";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const received: HandedChain[] = [];
 * const recorder: TaskBackend = {
 *   accept(task) {
 *     if (task.args.some((arg) => typeof arg === "function")) {
 *       throw new TypeError(`Cannot add task "${task.name}" as functions cannot be queued`);
 *     }
 *   },
 *   enqueue(chain) {
 *     received.push(chain);
 *     return Promise.resolve();
 *   },
 * };
 *
 * const sendEmail = defineTask((_context, to: string) => to, { name: "sendEmail" });
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(sendEmail, "a@example.com");
 *   return new Response("ok");
 * }, { backend: recorder });
 * await (await callHandler(handler, "/")).tasks;
 * assert.deepEqual(received[0]?.tasks.map((task) => [task.name, task.args]), [
 *   ["sendEmail", ["a@example.com"]],
 * ]);
 * ```
 */
export interface TaskBackend {
  /**
   * Checks a task as it is added; throws a `TypeError` to refuse it. Only
   * tasks made by `defineTask` reach it: the wrapper refuses plain functions
   * itself when a backend is set.
   *
   * @param task The task being added.
   * @param chain The chain it joins: the same object for every task of one
   * request, a key for state kept per chain (such as its size), with the
   * `request` the chain will carry.
   */
  accept(
    task: HandedTask,
    chain: { readonly request?: RequestSummary | undefined },
  ): void;
  /**
   * Takes over a chain: before its response is sent, or after with
   * `handOver: "after-response"`. The promise resolves once the chain is
   * safe (stored, or running), and rejects if it could not be taken over.
   * A backend should keep trying through passing faults (a lost
   * connection) until the chain is stored or `options.signal` aborts, when
   * the wrapper has given up on the chain (a shutdown deadline).
   *
   * @param chain The request's tasks.
   * @param options The signal that says when to stop trying.
   * @returns A promise that settles once the chain is safe or lost.
   */
  enqueue(chain: HandedChain, options?: EnqueueOptions): Promise<void>;
}

/**
 * Options shared by the backends' workers, the processes that run the tasks:
 * which tasks they know, and how to report and bound them.
 *
 * @example The same tasks in the web process and the workers
 * ```ts
 * import { defineTask, type WorkerOptions } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const sendEmail = defineTask(async () => {}, { name: "sendEmail" });
 * const resize = defineTask(async () => {}, { name: "resize", timeout: 60_000 });
 * const options: WorkerOptions = {
 *   tasks: [sendEmail, resize],
 *   onTaskError: (error, info) => console.error(info.name, error),
 * };
 * assert.equal(options.tasks.length, 2);
 * ```
 */
export interface WorkerOptions extends RunOptions {
  /**
   * The tasks this process can run, found by name: the same `defineTask`
   * results the web process adds. A name may appear once.
   */
  tasks: readonly DefinedTask<never[]>[];
}
