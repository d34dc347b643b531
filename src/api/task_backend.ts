// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The backend contract, all of it: what a backend receives from the runner
// (a chain and its tasks), what it must do with them, what the workers
// that run them take, and the admin shape every durable backend shares. What
// `@afterward/background-tasks/backend` exports.

import type {
  ExecutionOptions,
  RequestSummary,
  TaskInfo,
} from "./task_info.ts";
import type { DefinedTask, OnDuplicate, RetryPolicy } from "./define_task.ts";
import { escapeControls } from "./_describe_task.ts";

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
 *   type TaskBackend,
 *   withBackgroundTasks,
 * } from "@afterward/background-tasks";
 * import type { BackendChain } from "@afterward/background-tasks/backend";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const received: BackendChain[] = [];
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
   * itself when a backend is set. A keyed task (its `key` set) must be
   * kept as its `onDuplicate` and `delay` say, or refused: best when the
   * backend is created, with {@linkcode assertKeyedTasksKept}.
   *
   * @param task The task being added.
   * @param chain The chain it joins: its `id`, made when its first task was
   * added, the `id` that {@linkcode TaskBackend.enqueue} will carry, and the
   * `request` it will carry. A task added once a request's chain was handed
   * over starts a chain of its own, with an id of its own. The object is
   * the same for every task of the chain: state kept per chain until it is
   * enqueued (such as its size) belongs in a `WeakMap` keyed by it, which
   * lets it go with a chain that is never enqueued (its handler threw);
   * `enqueue()` receives another object, with the same `id`.
   */
  accept(task: BackendTask, chain: Pick<BackendChain, "id" | "request">): void;
  /**
   * Takes over a chain: before its response is sent, or after with
   * `handOver: "after-response"`. The promise resolves once the chain is
   * safe (stored, or running), and rejects if it could not be taken over.
   * A backend should keep trying through passing faults (a lost
   * connection) until the chain is stored or `options.signal` aborts, when
   * the wrapper has given up on the chain (a shutdown deadline). A backend
   * that keeps keyed tasks resolves with an {@linkcode EnqueueResult} that
   * names those it did not store because a duplicate was waiting, and the
   * tasks stored earlier that a task of the chain replaced.
   *
   * @param chain The request's tasks.
   * @param options The signal that says when to stop trying.
   * @returns A promise that settles once the chain is safe or lost.
   */
  enqueue(
    chain: BackendChain,
    options?: EnqueueOptions,
  ): Promise<void | EnqueueResult>;
  /**
   * Whether the backend can store chains now, for the wrapper's
   * `stats.backend` (a health check can answer 503 while it is down) and
   * for a shutdown's report. A backend that cannot tell leaves it out.
   */
  readonly status?: BackendStatus;
  /**
   * For a backend that runs tasks in this process (Deno KV's listener): the
   * task options of a handler that uses it, as given (`onTaskStart`,
   * `onTaskEnd`, `onTaskError`, `timeout`, `telemetry`; those left out are
   * absent), so that the handler's hooks are told of every attempt the
   * backend runs here. The wrapper calls it once, when the handler (or
   * `serve()`, or the Hono middleware) is made with the backend. A backend
   * whose tasks run in other processes leaves it out: their hooks are those
   * processes' own (a BullMQ worker's options).
   *
   * @param options The handler's task options, as given.
   * @throws {TypeError} If they cannot be combined with those of the
   * backend or of another handler: the handler is then not made.
   */
  attach?(options: ExecutionOptions): void;
  /**
   * Stops, for a shutdown: `serve()` calls it once its handler's chains are
   * stored, with the deadline's signal. A backend that runs tasks in this
   * process stops taking new ones, lets those running finish, and at the
   * signal gives up on them and hands them back to its store, to run again;
   * it resolves with what they did. Without a signal, it gives up on them
   * at once. A backend whose tasks run elsewhere closes its connections
   * (and resolves with nothing). A second call must be harmless: whoever
   * made the backend may close it too.
   *
   * @param options The deadline: at its signal, what is still running is
   * handed back.
   * @returns What the tasks running in this process did meanwhile, if any
   * ran here; the promise should never reject.
   */
  close?(options?: BackendCloseOptions): Promise<BackendCloseResult | void>;
}

/**
 * A backend that keeps the request's tasks in a store (Deno KV, Redis) with
 * one admin shape: the tasks it keeps because they failed, a way to run one
 * again, and a close. The backends of `@afterward/background-tasks/kv` and
 * `/bullmq` implement it, so that an admin page, a script or a test can
 * treat them alike, and a backend of your own has this shape to follow.
 *
 * @example An admin endpoint for any durable backend
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import type { DurableBackend } from "@afterward/background-tasks/backend";
 * import { kvBackend } from "@afterward/background-tasks/kv";
 * import assert from "node:assert/strict";
 *
 * function failedTasks(backend: DurableBackend) {
 *   return async function failedTasks(request: Request): Promise<Response> {
 *     if (request.method === "POST") {
 *       const id = new URL(request.url).searchParams.get("id") ?? "";
 *       return new Response(null, { status: await backend.retry(id) ? 204 : 404 });
 *     }
 *     const tasks = await backend.failed();
 *     return Response.json(tasks.map(({ id, name, attempts, error, at }) => ({
 *       id,
 *       name,
 *       attempts,
 *       error: error.split("\n")[0],
 *       at,
 *     })));
 *   };
 * }
 *
 * const kv = await Deno.openKv(":memory:");
 * const backend = kvBackend({ kv, tasks: [defineTask(() => {}, { name: "noop" })], listen: false });
 * const admin = failedTasks(backend);
 * assert.deepEqual(await (await admin(new Request("http://localhost/failed"))).json(), []);
 * const retry = new Request("http://localhost/failed?id=c1:0", { method: "POST" });
 * assert.equal((await admin(retry)).status, 404);
 * await backend.close();
 * kv.close();
 * ```
 */
export interface DurableBackend extends TaskBackend {
  /**
   * The tasks the backend keeps because they will not run again unless
   * retried (see {@linkcode FailedTask}), newest first: the one whose `at`
   * is latest comes first (tasks that failed within the same millisecond
   * may come in either order).
   *
   * @returns Every failed task the store keeps.
   */
  failed(): Promise<FailedTask[]>;
  /**
   * Runs a failed task again, under the same `id` and `index`, with a fresh
   * attempt count, and removes it from {@linkcode DurableBackend.failed}.
   * Its chain's later tasks went on without it, and a retry does not run
   * them again. Of several calls at once for one task, one runs it and
   * resolves `true`.
   *
   * @param id The failed task's `id`.
   * @returns Whether it was a failed task: `false` for an id the backend
   * does not know, or a task that is no longer failed.
   * @throws {TypeError} If `id` is not a string.
   */
  retry(id: string): Promise<boolean>;
  /**
   * Stops the backend, for a shutdown or at the end of a script, as
   * {@linkcode TaskBackend.close} says: one that runs tasks in this process
   * stops taking new ones and gives up on those still running at
   * `options.signal` (at once without one); one whose store is a server
   * closes its connections once the chains handed over so far are stored.
   * What the caller made and passed in (a `Deno.Kv`, an ioredis instance)
   * stays open. A second call is harmless.
   *
   * @param options When to give up on the tasks running in this process.
   * @returns What those tasks did meanwhile, if any ran here; the promise
   * never rejects.
   */
  close(options?: BackendCloseOptions): Promise<BackendCloseResult | void>;
}

/**
 * A task that a {@linkcode DurableBackend} keeps because it will not run
 * again unless retried: it failed at its last attempt (a timeout included),
 * no worker knew its name, or its store gave up delivering it. The same
 * shape on every backend; a backend may add fields of its own (Deno KV's
 * `reason`, BullMQ's `jobId`). Its chain's later tasks ran, or run, without
 * it.
 *
 * @example A line per failed task
 * ```ts
 * import type { FailedTask } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * const line = (task: FailedTask) =>
 *   `${task.at.toISOString()} ${task.name} (${task.id}) after ${task.attempts} attempts: ${
 *     task.error.split("\n")[0]
 *   }`;
 * const task: FailedTask = {
 *   id: "c1:1",
 *   name: "charge",
 *   args: ["order-7"],
 *   index: 1,
 *   attempts: 5,
 *   error: "Error: card declined\n    at charge (file:///app/tasks.ts:3:9)",
 *   request: { method: "POST", url: "https://shop.example/checkout" },
 *   at: new Date(0),
 * };
 * assert.equal(line(task), "1970-01-01T00:00:00.000Z charge (c1:1) after 5 attempts: Error: card declined");
 * ```
 */
export interface FailedTask {
  /**
   * The task's stable id: the `id` its context and `TaskInfo` showed on
   * every attempt, which it keeps when retried, and which
   * {@linkcode DurableBackend.retry} takes. Compare it; do not parse it.
   */
  readonly id: string;
  /** The task's name. */
  readonly name: string;
  /**
   * The arguments it was added with (empty when a backend could not keep
   * them, and `error` then says so).
   */
  readonly args: readonly unknown[];
  /** Its index in its request's chain, from 0. */
  readonly index: number;
  /** The attempts made since it was added, or last retried. */
  readonly attempts: number;
  /**
   * The last error, as text: its stack when it had one (the error's name
   * and message first), a thrown string as it is, any other value as it
   * can be shown.
   */
  readonly error: string;
  /** The request whose handler added it. */
  readonly request: RequestSummary | undefined;
  /** When it failed for good. */
  readonly at: Date;
}

/**
 * Options for {@linkcode TaskBackend.close}.
 *
 * @example Close within a deadline
 * ```ts
 * import type { BackendCloseOptions } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * const options: BackendCloseOptions = { signal: AbortSignal.timeout(5_000) };
 * assert.ok(options.signal instanceof AbortSignal);
 * ```
 */
export interface BackendCloseOptions {
  /**
   * When to stop waiting for the tasks running in this process: they are
   * then given up on (their signals aborted, their attempts told as
   * abandoned) and handed back to the store. Without it, at once.
   */
  signal?: AbortSignal;
}

/**
 * What {@linkcode TaskBackend.close} saw of the tasks it was running in this
 * process. An attempt that failed and will be retried counts in none: its
 * retry is stored.
 *
 * @example Count what was cut off
 * ```ts
 * import type { BackendCloseResult } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * const result: BackendCloseResult = {
 *   succeeded: 2,
 *   failed: 0,
 *   handedBack: 1,
 *   handedBackTasks: { resize: 1 },
 * };
 * assert.equal(result.handedBack === 0 ? 0 : 1, 1);
 * ```
 */
export interface BackendCloseResult {
  /** Tasks that succeeded while it waited. */
  readonly succeeded: number;
  /** Tasks that failed at their last attempt (timeouts included) while it waited. */
  readonly failed: number;
  /**
   * Tasks still running at the signal, given up on and handed back to the
   * store, to run again with the same id (here or in another process).
   */
  readonly handedBack: number;
  /** The handed-back tasks by name, with how many of each. */
  readonly handedBackTasks: Readonly<Record<string, number>>;
}

/**
 * Whether a backend can store chains now, and since when.
 *
 * @example A health check
 * ```ts
 * import type { BackendStatus } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const health = (status: BackendStatus | undefined) =>
 *   new Response(status?.state === "down" ? "down" : "ok", {
 *     status: status?.state === "down" ? 503 : 200,
 *   });
 * const down: BackendStatus = { state: "down", since: new Date(), error: "connect ECONNREFUSED" };
 * assert.equal(health(down).status, 503);
 * assert.equal(health(undefined).status, 200);
 * ```
 */
export interface BackendStatus {
  /** `"down"` while its store is unreachable, refuses, or does not answer. */
  readonly state: "up" | "down";
  /** When it entered this state. */
  readonly since: Date;
  /** While down, why: the message of the error that brought it down. */
  readonly error?: string;
}

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
 * backend.accept({ name: resize.name, args: ["a.png"], timeout: undefined, retry: resize.retry, task: resize as never }, { id: "c1", request: undefined });
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
  /**
   * A keyed task's key, worked out when it was added (see `key` in
   * {@linkcode DefineTaskOptions}); `undefined` for a task without one. Two
   * tasks of the same name and the same key are duplicates: a backend that
   * stores keyed tasks keeps their `onDuplicate` and `delay`, or refuses
   * their definitions when it is created, with
   * {@linkcode assertKeyedTasksKept}.
   */
  readonly key?: string | undefined;
  /** What a keyed task does with a waiting duplicate; `undefined` unless keyed. */
  readonly onDuplicate?: OnDuplicate | undefined;
  /** Milliseconds a keyed task waits, from when it was added, before it may start; `undefined` unless keyed. */
  readonly delay?: number | undefined;
  /** The defined task itself, for a backend that runs in this process. */
  readonly task: DefinedTask;
}

/**
 * What a backend keeps of keyed tasks (those defined with a `key`), for
 * {@linkcode assertKeyedTasksKept}: never a mode silently weakened.
 *
 * @example A backend that keeps no keyed task yet
 * ```ts
 * import type { KeyedTasksKept } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * const kept: KeyedTasksKept = {
 *   onDuplicate: [],
 *   delay: false,
 *   reason: "keyed tasks are not supported on this backend yet",
 * };
 * assert.equal(kept.onDuplicate.length, 0);
 * ```
 */
export interface KeyedTasksKept {
  /**
   * The `onDuplicate` modes the backend keeps; a keyed task with another is
   * refused. None: every keyed task is refused.
   */
  readonly onDuplicate: readonly OnDuplicate[];
  /** Whether it keeps `delay`: a keyed task with a delay above 0 is refused otherwise. */
  readonly delay: boolean;
  /** Why it does not keep the rest: the end of the refusal's message. */
  readonly reason: string;
}

/**
 * Refuses, as a backend is created, a task of its `tasks` whose key modes
 * the backend cannot keep (`onDuplicate`, `delay`): the program fails at
 * its start, with a message that says why, rather than running the task
 * with a weaker guarantee than its definition promises. Tasks without a
 * key pass.
 *
 * @example Refuse keyed tasks at creation
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import { assertKeyedTasksKept } from "@afterward/background-tasks/backend";
 * import assert from "node:assert/strict";
 *
 * const reindex = defineTask((_context, userId: string) => {}, {
 *   name: "reindex",
 *   key: (userId) => userId,
 *   onDuplicate: "replace",
 * });
 * const kept = { onDuplicate: ["queue"] as const, delay: false, reason: "it has no way to replace a stored task" };
 * assert.throws(() => assertKeyedTasksKept([reindex], kept, "Cannot create my backend"), {
 *   name: "TypeError",
 *   message: `Cannot create my backend as task "reindex" is keyed with onDuplicate "replace", which this backend cannot keep: it has no way to replace a stored task`,
 * });
 * assertKeyedTasksKept([defineTask(() => {}, { name: "ping" })], kept, "Cannot create my backend");
 * ```
 *
 * @param tasks The tasks the backend is created with.
 * @param kept What it keeps of keyed tasks, and why not the rest.
 * @param action The start of the message: `"Cannot create my backend"`.
 * @throws {TypeError} If a task's `onDuplicate` or `delay` is not kept.
 */
export function assertKeyedTasksKept(
  tasks: readonly DefinedTask<never[]>[],
  kept: KeyedTasksKept,
  action: string,
): void {
  for (const task of tasks) {
    const { onDuplicate, delay } = task;
    if (task.key === undefined || onDuplicate === undefined) continue;
    const name = escapeControls(task.name);
    if (!kept.onDuplicate.includes(onDuplicate)) {
      throw new TypeError(
        `${action} as task "${name}" is keyed with onDuplicate "${onDuplicate}", which this backend cannot keep: ${kept.reason}`,
      );
    }
    if (!kept.delay && delay !== undefined && delay > 0) {
      throw new TypeError(
        `${action} as task "${name}" has a 'delay' of ${delay} ms, which this backend cannot keep: ${kept.reason}`,
      );
    }
  }
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
  /**
   * A unique id, made when the chain's first task was added (the `id` its
   * {@linkcode TaskBackend.accept} calls saw): with a task's index, it makes
   * the task's stable id.
   */
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

/**
 * What {@linkcode TaskBackend.enqueue} may resolve with, when it stored
 * fewer tasks than the chain held: the keyed tasks it deduplicated as it
 * stored them. Resolving with nothing means every task was stored.
 *
 * @example A backend that keeps one waiting task per key ("skip")
 * ```ts
 * import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
 * import type { BackendChain, EnqueueResult, TaskBackend } from "@afterward/background-tasks/backend";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const waiting = new Set<string>();
 * const backend: TaskBackend = {
 *   accept() {},
 *   enqueue(chain: BackendChain): Promise<EnqueueResult> {
 *     const deduplicated: number[] = [];
 *     chain.tasks.forEach((task, index) => {
 *       if (task.key === undefined) return;
 *       if (waiting.has(task.key)) deduplicated.push(index);
 *       else waiting.add(task.key);
 *     });
 *     return Promise.resolve({ deduplicated });
 *   },
 * };
 * const warm = defineTask((_context, _page: string) => {}, {
 *   name: "warm",
 *   key: (page) => page,
 *   onDuplicate: "skip",
 * });
 * const ends: string[] = [];
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(warm, "/home");
 *   tasks.addTask(warm, "/home");
 *   return new Response("ok");
 * }, { backend, onTaskEnd: (event) => void ends.push(`${event.index} ${event.outcome}`) });
 * await (await callHandler(handler, "/")).tasks;
 * assert.deepEqual(ends, ["1 deduplicated"]);
 * assert.deepEqual([handler.stats.handedOver, handler.stats.deduplicated], [1, 1]);
 * ```
 */
export interface EnqueueResult {
  /**
   * The positions in the chain's `tasks` of the keyed tasks the backend did
   * not store because a duplicate was waiting (`onDuplicate: "skip"`, or
   * `"replace"` by a later task of the same chain). Each ends as
   * `"deduplicated"`: it counts in `stats.deduplicated`, not in
   * `handedOver`, and `onTaskEnd` is told once (attempt 0, duration 0).
   */
  readonly deduplicated?: readonly number[];
  /**
   * Tasks of other chains, stored earlier by this process or another, that
   * a keyed task of the chain took the place of while they waited
   * (`onDuplicate: "replace"`): they will not run. `onTaskEnd` is told each
   * once, as `"deduplicated"` (its `attempt` 0); `stats` do not count them
   * again, as they were counted as handed over where they were stored.
   */
  readonly replaced?: readonly TaskInfo[];
}

/**
 * Options shared by the backends' workers, the processes that run the tasks:
 * which tasks they know, and how to report and bound them.
 *
 * @example The same tasks in the web process and the workers
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import type { WorkerOptions } from "@afterward/background-tasks/backend";
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
export interface WorkerOptions extends ExecutionOptions {
  /**
   * The tasks this process can run, found by name: the same `defineTask`
   * results the web process adds. A name may appear once. A task handed to
   * this process under another name fails at once, reported through
   * `onTaskError` with where it is kept (among the backend's `failed()`); the
   * worker says at start which names the web processes store that it lacks.
   */
  tasks: readonly DefinedTask<never[]>[];
}
