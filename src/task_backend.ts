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
 * One request's chain, as a backend receives it once the response has been sent.
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
  /** Whether its response reached the client. */
  readonly delivered: boolean | undefined;
}

/**
 * Where a wrapped handler sends its chains instead of running them in this
 * process: a durable queue (`@afterward/background-tasks/kv`) or workers in
 * other processes (`@afterward/background-tasks/bullmq`). A backend checks
 * each task when it is added, so that a task it could not run fails in the
 * handler, and takes over each chain once its response has been sent.
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
   * Takes over a chain whose response has been sent. The promise resolves
   * once the chain is safe (stored, or running), and rejects if it could not
   * be taken over: its tasks are then reported as failed. A backend that
   * stores chains elsewhere keeps trying through connection errors until
   * the chain is stored or `options.signal` aborts; it then rejects with the
   * signal's reason.
   *
   * @param chain The request's tasks.
   * @param options A signal that gives up on the chain.
   * @returns A promise that settles once the chain is safe or lost.
   */
  enqueue(chain: HandedChain, options?: EnqueueOptions): Promise<void>;
}

/**
 * Options for {@linkcode TaskBackend.enqueue}: when to stop trying to store a
 * chain, such as when a drain deadline abandons it.
 *
 * @example A backend that retries until the signal gives up
 * ```ts
 * import type { EnqueueOptions, HandedChain, TaskBackend } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * let reachable = false;
 * async function write(_chain: HandedChain): Promise<void> {
 *   if (!reachable) throw new Error("Connection refused");
 * }
 *
 * const backend: TaskBackend = {
 *   accept() {},
 *   async enqueue(chain: HandedChain, { signal }: EnqueueOptions = {}) {
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
 * const chain: HandedChain = { id: "c1", tasks: [], request: undefined, delivered: true };
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
 *   onError: (error, info) => console.error(info.name, error),
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
