// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { Chain } from "./_chain.ts";
import { type Task, taskOf, waitUntil } from "./_task.ts";
import { runChain } from "./_execute.ts";
import { KeyedTask } from "./_keyed_task.ts";
import { escapeControls } from "../api/_describe_task.ts";
import { EXECUTION_OPTIONS, executionConfig } from "./_config.ts";
import { assertOptions, describe } from "../util/_assert.ts";
import { isInstance, isThenable, toPromise } from "../util/_promise.ts";
import { DefinedTask } from "../api/define_task.ts";
import type { ExecutionOptions, TaskResult } from "../api/task_info.ts";

const NO_PROPS: Readonly<Record<string, never>> = Object.freeze({});

function ignore(): void {}

/**
 * The tasks one request wants done after its response, in the order they were
 * added: the counterpart of FastAPI's `BackgroundTasks`.
 *
 * {@linkcode withBackgroundTasks} creates one per request and passes it to the
 * handler as its third argument; hand the same object to any helper that
 * should add work, and every task joins one chain. Once the response has been
 * sent, the tasks run one after another, each awaited; one that throws or
 * rejects is reported and the next one runs.
 *
 * On its own, with {@linkcode BackgroundTasks.prototype.run}, it runs tasks
 * anywhere: in a unit test, or under another framework.
 *
 * @example Add tasks and run them
 * ```ts
 * import { BackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const sent: string[] = [];
 * async function sendEmail(to: string, subject = "") {
 *   await Promise.resolve();
 *   sent.push(`${to}: ${subject}`);
 * }
 *
 * const tasks = new BackgroundTasks();
 * tasks.addTask(sendEmail, "a@example.com", "Welcome");
 * tasks.addTask(sendEmail, "b@example.com");
 *
 * const results = await tasks.run();
 * assert.deepEqual(sent, ["a@example.com: Welcome", "b@example.com: "]);
 * assert.deepEqual(results.map((result) => result.status), [
 *   "fulfilled",
 *   "fulfilled",
 * ]);
 * ```
 */
export class BackgroundTasks {
  /**
   * Creates an empty list of tasks, to fill with `addTask()` and execute with `run()`.
   *
   * @throws {TypeError} If called for a subclass: a `BackgroundTasks` is
   * the chain the runner follows (one object per request), which a
   * subclass's instance would not be.
   */
  constructor() {
    if (new.target !== BackgroundTasks) {
      throw new TypeError(
        "Cannot construct a subclass of BackgroundTasks: wrap one instead",
      );
    }
    // The request's tasks are one object: the chain, which has this class's
    // prototype below its own (see below the class).
    return new Chain() as unknown as BackgroundTasks;
  }

  /**
   * Adds a task: `fn` will be called with `args` after the response has been
   * sent, once the tasks added before it have finished. `fn` may be
   * synchronous or return a promise; `args` are checked against its
   * parameters at compile time.
   *
   * Tasks are called with `this` undefined, as FastAPI calls them, so a
   * method loses its object when passed on its own: add
   * `mailer.send.bind(mailer)` or `(to) => mailer.send(to)`. A method that
   * declares its `this` type is refused at compile time.
   *
   * @example Arguments are type-checked
   * ```ts
   * import { BackgroundTasks } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * function writeNotification(email: string, message = "") {
   *   return `notification for ${email}: ${message}`;
   * }
   *
   * const tasks = new BackgroundTasks();
   * tasks.addTask(writeNotification, "a@example.com", "some notification");
   * // @ts-expect-error: a number is not an email address
   * tasks.addTask(writeNotification, 42);
   * assert.equal(tasks.size, 2);
   * ```
   *
   * @typeParam A The parameters of `fn`, which `args` must match.
   * @param fn The function to call.
   * @param args The arguments to call it with.
   * @throws {TypeError} If `fn` is not a function, or, in a handler's
   * tasks, if an argument is a `Request` or a `ReadableStream`, which cannot
   * be read once the response is sent (read what the task needs in the
   * handler and pass that).
   * @throws {QueueFullError} If the handler's runner already holds
   * `maxPending` tasks.
   * @throws {Error} If the tasks were made with `new BackgroundTasks()` and
   * `run()` has finished them. (A handler's tasks never refuse a late task:
   * once the request's chain has finished, the task runs as a chain of its
   * own.)
   */
  addTask<A extends unknown[]>(
    fn: (this: void, ...args: A) => unknown,
    ...args: NoInfer<A>
  ): void;
  /**
   * Adds a task made by {@linkcode defineTask}: its function will be called
   * with a {@linkcode TaskContext} and then `args`, with the task's timeout
   * and retry policy. `args` are checked against the parameters after the
   * context.
   *
   * @example Add a defined task
   * ```ts
   * import { BackgroundTasks, defineTask } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * const greet = defineTask(({ attempt }, name: string) => `${attempt}: hi ${name}`);
   * const tasks = new BackgroundTasks();
   * tasks.addTask(greet, "Ada");
   * // @ts-expect-error: the context is passed by the runner, not by you
   * tasks.addTask(greet, { attempt: 1 }, "Ada");
   * const [result] = await tasks.run();
   * assert.deepEqual(result, {
   *   status: "fulfilled",
   *   name: "anonymous",
   *   index: 0,
   *   value: "1: hi Ada",
   * });
   * ```
   *
   * @typeParam A The task's parameters after its context.
   * @param task The task to run.
   * @param args The arguments to call it with.
   * @throws {TypeError} In a handler's tasks, if an argument is a `Request`
   * or a `ReadableStream`.
   * @throws {QueueFullError} If the handler's runner already holds
   * `maxPending` tasks.
   * @throws {Error} If the tasks were made with `new BackgroundTasks()` and
   * `run()` has finished them.
   */
  addTask<A extends unknown[]>(
    task: DefinedTask<A>,
    ...args: NoInfer<A>
  ): void;
  addTask(
    fn: ((...args: unknown[]) => unknown) | DefinedTask,
    ...args: unknown[]
  ): void {
    if (isInstance(fn, DefinedTask)) {
      addTo(
        this,
        fn.key === undefined
          ? taskOf(fn.fn as (...args: unknown[]) => unknown, args, fn)
          : keyedTask(this, fn, args),
      );
      return;
    }
    if (typeof fn !== "function") {
      throw new TypeError(
        isThenable(fn)
          ? "Cannot add task as 'fn' is a promise, which has started already: pass the function and its arguments, or use waitUntil() for a promise"
          : `Cannot add task as 'fn' must be a function or a defined task: current value is ${
            describe(fn)
          }`,
      );
    }
    addTo(this, taskOf(fn, args));
  }

  /**
   * Keeps a promise that has already started in this request's chain, the
   * way Workers' `ctx.waitUntil()` does: the chain (and `drain()`) waits for
   * it in turn, and a rejection is reported like a failed task, named
   * `"waitUntil"`. It is handled at once, so an early rejection never goes
   * unhandled. With this method and {@linkcode passThroughOnException},
   * `tasks` is an `ExecutionContext` for Hono and other Workers-style code.
   *
   * @example Track work that already started
   * ```ts
   * import { BackgroundTasks } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * const tasks = new BackgroundTasks();
   * const saved: string[] = [];
   * const write = Promise.resolve().then(() => saved.push("cache entry"));
   * tasks.waitUntil(write);
   * tasks.waitUntil(Promise.reject(new Error("cache is down")));
   *
   * const reported: string[] = [];
   * await tasks.run({ onTaskError: (_error, info) => void reported.push(info.name) });
   * assert.deepEqual(saved, ["cache entry"]);
   * assert.deepEqual(reported, ["waitUntil"]);
   * ```
   *
   * @param promise The promise to wait for.
   * @throws {TypeError} If `promise` is not a promise or other thenable.
   * @throws {Error} If the tasks were made with `new BackgroundTasks()` and
   * `run()` has finished them.
   */
  waitUntil(promise: Promise<unknown>): void {
    if (!isThenable(promise)) {
      throw new TypeError(
        `Cannot wait until as 'promise' must be a promise: current value is ${
          describe(promise)
        }`,
      );
    }
    const tracked = toPromise(promise);
    tracked.then(undefined, ignore);
    // A promise of this process: with a backend, the request's in-process
    // chain waits for it.
    this.inProcess.addTask(waitUntil, tracked);
  }

  /**
   * The request's tasks that run in this process. In a handler with a
   * `backend`, whose `addTask()` takes only the tasks the backend runs
   * (made by {@linkcode defineTask} and listed in it), these are a chain of
   * their own, made on first use: its tasks run in order after the response
   * has been sent, with the handler's limits, hooks, timeouts and retries,
   * and its drains and shutdown count them, as without a backend; neither
   * chain waits for the other. A handler that fails discards both. Anywhere
   * else (no backend, or `new BackgroundTasks()`), they are these tasks
   * themselves.
   *
   * @example Keep a task in process beside durable ones
   * ```ts
   * import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
   * import { kvBackend } from "@afterward/background-tasks/kv";
   * import { callHandler } from "@afterward/background-tasks/testing";
   * import assert from "node:assert/strict";
   *
   * const chargeCard = defineTask((_context, _order: string) => {}, { name: "chargeCard" });
   * const kv = await Deno.openKv(":memory:");
   * const backend = kvBackend({ kv, tasks: [chargeCard], listen: false });
   * const log: string[] = [];
   * const handler = withBackgroundTasks((_request, _info, tasks) => {
   *   tasks.addTask(chargeCard, "42"); // stored in Deno KV before the response
   *   tasks.inProcess.addTask((line: string) => log.push(line), "order 42 seen");
   *   // @ts-expect-error: a plain function cannot go to the backend
   *   const _wrong = () => tasks.addTask((line: string) => log.push(line), "lost");
   *   return new Response("Accepted", { status: 202 });
   * }, { backend });
   * await (await callHandler(handler, "/orders/42")).tasks;
   * assert.deepEqual(log, ["order 42 seen"]);
   * assert.deepEqual([handler.stats.succeeded, handler.stats.handedOver], [1, 1]);
   * await backend.close();
   * kv.close();
   * ```
   *
   * @returns The request's in-process tasks.
   */
  get inProcess(): BackgroundTasks {
    const chain = chainOf(this).current;
    return (chain.owner?.inProcess(chain) as BackgroundTasks | undefined) ??
      this;
  }

  /**
   * Does nothing: Workers use it to fall through to the origin on an
   * exception, which has no meaning here. It exists so that `tasks` has the
   * shape of an `ExecutionContext`.
   *
   * @example Usage
   * ```ts
   * import { BackgroundTasks } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * const tasks = new BackgroundTasks();
   * tasks.passThroughOnException();
   * assert.equal(tasks.size, 0);
   * ```
   */
  passThroughOnException(): void {}

  /**
   * Workers' `ctx.props`, for the shape of an `ExecutionContext`: always an
   * empty, frozen object.
   *
   * @example Usage
   * ```ts
   * import { BackgroundTasks } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * assert.deepEqual(new BackgroundTasks().props, {});
   * ```
   *
   * @returns An empty, frozen object.
   */
  get props(): Readonly<Record<string, never>> {
    return NO_PROPS;
  }

  /**
   * How many tasks have been added, including those that have already run,
   * and keyed tasks, which left for their keys' lanes.
   *
   * @example Usage
   * ```ts
   * import { BackgroundTasks } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * const tasks = new BackgroundTasks();
   * tasks.addTask(() => {});
   * assert.equal(tasks.size, 1);
   * ```
   *
   * @returns The number of tasks added.
   */
  get size(): number {
    const chain = chainOf(this);
    return chain.current.added + (chain.keyed?.added ?? 0);
  }

  /**
   * Runs the tasks in the order they were added, each awaited, and resolves
   * with one settled result per task. A task that throws or rejects is
   * reported through `onTaskError` and the next one runs; the promise never
   * rejects. Tasks added while it runs join the end.
   *
   * The tasks run once: calling `run()` again returns the same promise.
   *
   * @example Failures are reported and do not stop the chain
   * ```ts
   * import { BackgroundTasks } from "@afterward/background-tasks";
   * import assert from "node:assert/strict";
   *
   * const tasks = new BackgroundTasks();
   * tasks.addTask(function failing() {
   *   throw new Error("boom");
   * });
   * tasks.addTask(() => "still runs");
   *
   * const failed: string[] = [];
   * const results = await tasks.run({
   *   onTaskError: (_error, info) => {
   *     failed.push(info.name);
   *   },
   * });
   * assert.deepEqual(failed, ["failing"]);
   * assert.equal(results[1]?.status, "fulfilled");
   * ```
   *
   * @param options How to report failures, time out attempts and observe them.
   * @returns The settled results, one per task, in order.
   * @throws {TypeError} If an option has the wrong type.
   * @throws {RangeError} If `timeout` is not a positive number.
   * @throws {Error} If the tasks belong to a handler made by
   * `withBackgroundTasks`, which runs them after its response.
   */
  run(options: ExecutionOptions = {}): Promise<TaskResult[]> {
    const action = "Cannot run tasks";
    assertOptions(options, EXECUTION_OPTIONS, action);
    const config = executionConfig(options, action);
    const chain = chainOf(this);
    if (chain.owner !== undefined) {
      throw new Error(
        "Cannot run tasks as they belong to a handler, which runs them after its response",
      );
    }
    return chain.running ??= runChain(chain, config);
  }

  /**
   * Shows the number of tasks and their names, never their arguments.
   *
   * @param inspect Deno's inspect function.
   * @returns A one-line description.
   */
  [Symbol.for("Deno.customInspect")](
    inspect: (value: unknown) => string,
  ): string {
    const chain = chainOf(this).current;
    // Three states to the outside: tasks can join and none has started;
    // they run (or a backend stores them); it is over.
    const state = chain.accepting
      ? (chain.state === "running" ? "running" : "open")
      : (chain.state === "storing" ? "running" : "closed");
    return `BackgroundTasks ${inspect({ size: this.size, state })}`;
  }
}

// A Chain is the BackgroundTasks its handler is given: the public methods
// are found below the chain's own on its prototype chain, so that a
// request's tasks cost one object (not a chain and a face of it), and a
// chain is made without a superclass's constructor to call.
Object.setPrototypeOf(Chain.prototype, BackgroundTasks.prototype);

/** The chain a `BackgroundTasks` is. */
function chainOf(tasks: BackgroundTasks): Chain {
  return tasks as unknown as Chain;
}

/**
 * Adds a task to the request's tasks: to its chain, or, once that has
 * ended (run, handed over, discarded), to a chain of its own rather than
 * throwing where nobody may catch it (a timer the handler left behind).
 */
function addTo(tasks: BackgroundTasks, task: Task): void {
  const first = chainOf(tasks);
  let chain = first.current;
  if (!chain.accepting && chain.owner !== undefined) {
    chain = first.current = chain.owner.successor(chain);
  }
  chain.add(task);
}

/**
 * A keyed task for `tasks`, which must be a handler's: keyed tasks join
 * their key's lane, which its runner keeps.
 */
function keyedTask(
  tasks: BackgroundTasks,
  defined: DefinedTask,
  args: readonly unknown[],
): KeyedTask {
  if (chainOf(tasks).owner === undefined) {
    throw new TypeError(
      `Cannot add task "${
        escapeControls(defined.name)
      }" as a keyed task needs a handler's runner, which keeps the lanes of its keys (withBackgroundTasks(), serve(), the Hono middleware; callHandler() in a test): new BackgroundTasks() has none`,
    );
  }
  return new KeyedTask(defined, args);
}

/**
 * A request's tasks in a handler whose options name a `backend`: the type
 * its third argument has, so that `deno check` refuses what the backend
 * would refuse at run time. `addTask()` takes only tasks made by
 * {@linkcode defineTask}, which go to the backend (it must list them in its
 * `tasks`, or `addTask()` throws a `TypeError`: nothing falls back to this
 * process); `inProcess` holds the tasks that run in this process. At run
 * time it is the request's {@linkcode BackgroundTasks}, which has this shape.
 *
 * @example A handler with a backend, and a helper it calls
 * ```ts
 * import { defineTask, type DurableTasks, withBackgroundTasks } from "@afterward/background-tasks";
 * import { kvBackend } from "@afterward/background-tasks/kv";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const shipOrder = defineTask((_context, _order: string) => {}, { name: "shipOrder" });
 * const seen: string[] = [];
 * function acceptOrder(tasks: DurableTasks, order: string): void {
 *   tasks.addTask(shipOrder, order);
 *   tasks.inProcess.addTask((id: string) => seen.push(id), order);
 * }
 *
 * const kv = await Deno.openKv(":memory:");
 * const backend = kvBackend({ kv, tasks: [shipOrder], listen: false });
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   acceptOrder(tasks, "42");
 *   return new Response("Accepted", { status: 202 });
 * }, { backend });
 * await (await callHandler(handler, "/orders/42")).tasks;
 * assert.deepEqual(seen, ["42"]);
 * await backend.close();
 * kv.close();
 * ```
 */
export interface DurableTasks {
  /**
   * Adds a task for the backend: made by {@linkcode defineTask}, listed in
   * the backend's `tasks`, with arguments the backend can store. It is
   * checked at once (a `TypeError` names what the backend refuses), and
   * handed to the backend with the request's other such tasks, before the
   * response by default.
   *
   * @typeParam A The task's parameters after its context.
   * @param task The task to run.
   * @param args The arguments to call it with.
   * @throws {TypeError} If the backend refuses the task or an argument.
   * @throws {QueueFullError} If the handler's runner already holds
   * `maxPending` tasks.
   */
  addTask<A extends unknown[]>(task: DefinedTask<A>, ...args: NoInfer<A>): void;
  /**
   * The request's tasks that run in this process, after the response: see
   * {@linkcode BackgroundTasks.prototype.inProcess}.
   */
  readonly inProcess: BackgroundTasks;
  /**
   * Keeps a promise of this process in the request's in-process tasks, as
   * {@linkcode BackgroundTasks.prototype.waitUntil} does.
   *
   * @param promise The promise to wait for.
   * @throws {TypeError} If `promise` is not a promise or other thenable.
   */
  waitUntil(promise: Promise<unknown>): void;
  /** Does nothing, as {@linkcode BackgroundTasks.prototype.passThroughOnException}. */
  passThroughOnException(): void;
  /** An empty, frozen object, as {@linkcode BackgroundTasks.prototype.props}. */
  readonly props: Readonly<Record<string, never>>;
  /** How many tasks have been added for the backend, including those handed over. */
  readonly size: number;
}
