// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV backend as its users meet it, and its wiring: the options, the
// producing side (accept() through each chain's message budget, enqueue()
// through a group commit), and handle() and close(), which hand each
// message to the consuming side (_consumer.ts); the listener's start and
// the wait at a close are _listener.ts's, failed() and retry() _failed.ts's.

import { LEASE } from "./_claim.ts";
import { batchWrites } from "./_batch_writes.ts";
import { type Consumer, runStep, type StepWatch } from "./_consumer.ts";
import { firstStep, isStep, isStepGroup, kvKeys } from "./_step.ts";
import { storeSteps } from "./_store.ts";
import { listFailed, retryFailed } from "./_failed.ts";
import { Lanes } from "./_keyed.ts";
import { isLaneMessage, runLaneMessage } from "./_lane.ts";
import { closeWithin, type Running, startListener } from "./_listener.ts";
import { ENVELOPE_BYTES, MessageBudget } from "./_message_budget.ts";
import { assertSerializable } from "../durable/_serializable.ts";
import { envelope } from "../durable/_envelope.ts";
import { executionConfig, givenExecutionOptions } from "../core/_config.ts";
import {
  assertBoolean,
  assertInteger,
  assertOptions,
  describe,
  optionKeys,
} from "../util/_assert.ts";
import { abortIsolated } from "../util/_promise.ts";
import { combineExecutionOptions, workerConfig } from "../durable/_worker.ts";
import type { ExecutionOptions, RequestSummary } from "../api/task_info.ts";
import type {
  BackendChain,
  BackendCloseOptions,
  BackendCloseResult,
  BackendTask,
  DurableBackend,
  EnqueueResult,
  WorkerOptions,
} from "../api/task_backend.ts";
import type { KvFailedTask } from "./kv_failed_task.ts";

export type { KvFailedTask } from "./kv_failed_task.ts";

/**
 * The most a Deno KV queue message may weigh.
 *
 * @example The limit
 * ```ts
 * import { KV_MAX_PAYLOAD } from "@afterward/background-tasks/kv";
 * import assert from "node:assert/strict";
 *
 * assert.equal(KV_MAX_PAYLOAD, 64 * 1024);
 * ```
 */
export const KV_MAX_PAYLOAD = 64 * 1024;
/** The claims and outcomes of deliveries per commit (one check each). */
const BATCH_LIMIT = 50;
/**
 * Milliseconds the claims and outcomes wait for more before they commit:
 * Deno KV delivers the next message meanwhile (a bare listener here took
 * half a millisecond a message, its acknowledgement included).
 */
const BATCH_IDLE = 5;
/**
 * The most milliseconds a claim or outcome waits for others: writes that
 * keep coming less than `BATCH_IDLE` apart would otherwise hold each until
 * `BATCH_LIMIT` had come (at 250 a second, 200 ms before a task starts).
 */
const BATCH_MAX_WAIT = 20;

/**
 * Options for {@linkcode kvBackend}.
 *
 * @example A process that only enqueues
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import { kvBackend, type KvBackendOptions } from "@afterward/background-tasks/kv";
 * import assert from "node:assert/strict";
 *
 * const sendEmail = defineTask(async () => {}, { name: "sendEmail" });
 * const kv = await Deno.openKv(":memory:");
 * const options: KvBackendOptions = {
 *   kv,
 *   tasks: [sendEmail],
 *   listen: false,
 *   prefix: ["app", "tasks"],
 *   redelivery: [1_000, 10_000],
 * };
 * const backend = kvBackend(options);
 * assert.deepEqual(await backend.failed(), []);
 * await backend.close();
 * kv.close();
 * ```
 */
export interface KvBackendOptions extends WorkerOptions {
  /**
   * The database, from `Deno.openKv(path)`; needs `--unstable-kv`. A file
   * on this host (or `":memory:"`): a remote database, reached through KV
   * Connect (Deno Deploy's KV is one), cannot queue messages, so each store
   * fails, saying so, and the backend does not listen.
   */
  kv: Deno.Kv;
  /**
   * Whether this process runs the queued tasks: it calls `kv.listenQueue()`.
   * Set it to `false` when the program listens to the queue itself, and pass
   * each message to {@linkcode KvBackend.handle}.
   *
   * @default {true}
   */
  listen?: boolean;
  /**
   * The first part of every key the backend writes.
   *
   * @default {["background-tasks"]}
   */
  prefix?: Deno.KvKey;
  /**
   * Milliseconds between deliveries of a message whose handler did not
   * finish, because the process crashed or was killed; Deno KV allows at most
   * five. After the last, its task is kept as failed (`"undelivered"`).
   *
   * @default {[1000, 5000, 10000, 30000, 60000]}
   */
  redelivery?: number[];
}

/**
 * What {@linkcode kvBackend} returns.
 *
 * @example Route your own queue messages
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import { kvBackend } from "@afterward/background-tasks/kv";
 * import assert from "node:assert/strict";
 *
 * const kv = await Deno.openKv(":memory:");
 * const backend = kvBackend({ kv, tasks: [defineTask(() => {}, { name: "noop" })], listen: false });
 * kv.listenQueue(async (message) => {
 *   if (await backend.handle(message)) return;
 *   // The program's own messages go on here.
 * });
 * assert.equal(await backend.handle({ kind: "mine" }), false);
 * await backend.close();
 * kv.close();
 * ```
 */
export interface KvBackend extends DurableBackend {
  /**
   * Runs one queue message (a step, or the steps of several chains), for a
   * program that listens to the queue itself (`listen: false`).
   *
   * @param message A value from `kv.listenQueue()`.
   * @returns Whether the message was one of this backend's.
   */
  handle(message: unknown): Promise<boolean>;
  /**
   * The tasks the database keeps as failed, with why, newest first (see
   * {@linkcode DurableBackend.failed}). Those Deno KV gave up delivering
   * are filed among them first, dated now.
   *
   * @returns Every failed task in the database.
   */
  failed(): Promise<KvFailedTask[]>;
  /**
   * Puts a failed task back on the queue, as a chain of its own, under the
   * same id and index, with a fresh attempt count, and removes it from the
   * failed tasks, in one atomic operation: of several calls at once, one
   * does it (see {@linkcode DurableBackend.retry}).
   *
   * @param id The failed task's `id`.
   * @returns Whether the database kept such a failed task.
   * @throws {TypeError} If `id` is not a string.
   */
  retry(id: string): Promise<boolean>;
  /**
   * Stops running tasks. A step delivered from now on is put back on the
   * queue unrun. The tasks running are given up on at `options.signal`, or
   * at once without one: their signals are aborted, their attempts end as
   * abandoned (told to `onTaskEnd` once), and their steps go back on the
   * queue, to run again with the same id (delayed by the first `redelivery`
   * step) wherever a backend listens. A step whose database closed first is
   * left unfinished instead, and Deno KV delivers it again once the database
   * is next opened, about a minute later, as after a crash. `serve()` calls
   * it at its shutdown, with its deadline; calling it again is harmless, and
   * a call without a signal then gives up on what still runs. Close the
   * database after.
   *
   * @param options When to give up on the tasks still running.
   * @returns What the tasks running at the close did: it resolves once each
   * has ended and its step's outcome is written, or, at `options.signal`,
   * once the tasks given up on have ended (at once) and their steps are put
   * back, waiting at most half a second for that write (another program may
   * hold the database's lock: if the process ends before the write, Deno KV
   * delivers the step again once the database is next opened, as after a
   * crash); it never rejects.
   * @throws {TypeError} If `options.signal` is not an `AbortSignal`.
   */
  close(options?: BackendCloseOptions): Promise<BackendCloseResult>;
}

/** The keys of `KvBackendOptions`. */
const KV_BACKEND_OPTIONS = optionKeys<KvBackendOptions>({
  onTaskError: true,
  timeout: true,
  onTaskStart: true,
  onTaskEnd: true,
  telemetry: true,
  tasks: true,
  kv: true,
  listen: true,
  prefix: true,
  redelivery: true,
});

/**
 * A durable backend on Deno KV, the embedded database of Deno (a local file,
 * no server): each request's chain is enqueued atomically before its response
 * is sent (see the wrapper's `handOver`), and its tasks run in order, each
 * attempt a step in a queue message (the steps of several chains may share
 * one), in this process (or whichever listens to the same database). A
 * crash loses nothing: a message whose handler did not finish is delivered
 * again (after about a minute), and the chain goes on where it stood.
 * Chains handed over while a commit is in flight share the next one (up to
 * 100 per commit), and their first steps share a message, so that under
 * load a commit and a message cost a fraction of a request;
 * a listener commits the claims and outcomes of the steps it runs at once
 * together too, and queues their next tasks together.
 *
 * Several processes may use one database file (a rolling restart's
 * overlap): they share its queue and chains, each step runs once while they
 * live (a delivery claims its step first, for 30 s renewed while it runs),
 * and a write that meets the other's lock ("database is locked") is tried
 * again, for up to 30 s.
 *
 * Delivery is at least once: a task that finished just before a crash may run
 * again. Its context's `id` is the same on every delivery; use it to make the
 * task's effect happen once. Retries are messages delayed by the task's
 * backoff, so they survive restarts too. A task that fails at its last
 * attempt is kept as failed (see {@linkcode KvBackend.failed}) and the chain
 * goes on.
 *
 * The attempts it runs in this process are told to its own hooks and to
 * those of each handler made with it (`withBackgroundTasks()`, `serve()`, the
 * Hono middleware), each in turn. A failure goes to every `onTaskError`
 * given, the backend's first, or to `logTaskError` when none was: never
 * twice by default. A task's own `timeout` applies, else the backend's, else
 * the handler's (handlers with different ones need the backend's own);
 * telemetry is on unless the backend or a handler turned it off.
 *
 * Keyed tasks (`defineTask()`'s `key`) keep their `onDuplicate` and
 * `delay` across the processes on one database: each task name and key has
 * a lane, of which only the head runs, the others waiting behind it in the
 * order they were stored; a chain with keyed tasks is stored in one atomic
 * operation checked against their lanes. A process killed while it runs a
 * keyed task holds its key until its claim lapses (30 s): the task then runs
 * again, before the tasks behind it. A request may add at most 32 keyed
 * tasks, fewer with long keys. See docs/durable.md, "Keyed tasks on Deno KV".
 *
 * Only tasks made by `defineTask` and listed in `tasks` can be added, with
 * arguments Deno KV can store (structured clone) as they are, and at most
 * 64 KiB per chain: anything else fails at `addTask()` with a `TypeError`
 * naming the argument's path, such as an `Error` subclass (it would arrive
 * as a plain `Error`), or a `Date` or an error with properties of its own
 * (they would be dropped).
 *
 * Needs `--unstable-kv`, and a database file on this host: Deno KV's queues
 * do not work through KV Connect, so on Deno Deploy, or with a remote
 * database, every store fails with an error that says so, and a backend that
 * was to listen writes a line that says so instead (use the BullMQ backend
 * there).
 *
 * @example Queue a chain and run it
 * ```ts
 * import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
 * import { kvBackend } from "@afterward/background-tasks/kv";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const sent = Promise.withResolvers<string>();
 * const sendEmail = defineTask(({ id }, to: string) => sent.resolve(`${id} to ${to}`), {
 *   name: "sendEmail",
 * });
 *
 * const kv = await Deno.openKv(":memory:");
 * const backend = kvBackend({ kv, tasks: [sendEmail] });
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(sendEmail, "a@example.com");
 *   return new Response("ok");
 * }, { backend });
 *
 * await (await callHandler(handler, "/")).tasks; // enqueued
 * assert.match(await sent.promise, /^[\w-]+:0 to a@example\.com$/);
 * await backend.close();
 * kv.close();
 * ```
 *
 * @param options The database and the tasks this process can run.
 * @returns The backend, for the `backend` option of a wrapped handler.
 * @throws {TypeError} If an option is unknown or has the wrong type.
 * @throws {RangeError} If `redelivery` has more than five steps, or a
 * negative or fractional one.
 */
export function kvBackend(options: KvBackendOptions): KvBackend {
  const action = "Cannot create KV backend";
  assertOptions(options, KV_BACKEND_OPTIONS, action);
  const {
    kv,
    listen = true,
    prefix = ["background-tasks"],
    redelivery = [1000, 5000, 10_000, 30_000, 60_000],
  } = options;
  if (typeof kv?.listenQueue !== "function") {
    throw new TypeError(
      `${action} as 'kv' must be a Deno.Kv: current value is ${describe(kv)}`,
    );
  }
  assertBoolean(listen, "listen", action);
  if (!Array.isArray(prefix)) {
    throw new TypeError(
      `${action} as 'prefix' must be an array, a Deno KV key: current value is ${
        describe(prefix)
      }`,
    );
  }
  if (!Array.isArray(redelivery)) {
    throw new TypeError(
      `${action} as 'redelivery' must be an array: current value is ${
        describe(redelivery)
      }`,
    );
  }
  if (redelivery.length > 5) {
    throw new RangeError(
      `${action} as 'redelivery' must have at most 5 steps, Deno KV's limit: current value is ${
        describe(redelivery)
      }`,
    );
  }
  redelivery.forEach((delay, index) =>
    assertInteger(delay, `redelivery[${index}]`, action, 0)
  );
  const config = workerConfig(options, action);
  // Its own task options, then those of each handler attached (attach()).
  const owners = [givenExecutionOptions(options)];
  const keys = kvKeys(prefix);
  const shutdown = new AbortController();
  const consumer: Consumer = {
    kv,
    keys,
    redelivery,
    config,
    shutdown,
    queueName: prefix.map(String).join("/"),
    closing: false,
    holder: crypto.randomUUID(),
    lease: LEASE,
    claimed: new Map(),
    batch: batchWrites({ kv, keys, redelivery }, {
      limit: BATCH_LIMIT,
      idle: BATCH_IDLE,
      maxWait: BATCH_MAX_WAIT,
      bytes: KV_MAX_PAYLOAD - ENVELOPE_BYTES,
    }),
  };
  const lanes = new Lanes(consumer);
  // The deliveries under way, each settling with how its attempt ended
  // once that is written: what a close waits for.
  const running = new Set<Running>();
  let closed: Promise<BackendCloseResult> | undefined;
  const giveUp = (reason: unknown) =>
    // An abort listener that throws must not end the process. A task's
    // listeners are on its attempt's signal, which reports them as its.
    abortIsolated(
      shutdown,
      reason,
      (error) => console.error("An abort listener threw at close:", error),
    );
  const budgets = new WeakMap<object, MessageBudget>();

  const store = storeSteps(
    consumer,
    config.registry,
    KV_MAX_PAYLOAD - ENVELOPE_BYTES,
  );

  const backend: KvBackend = {
    accept(
      task: BackendTask,
      chain: { readonly request?: RequestSummary | undefined },
    ): void {
      const addAction = `Cannot add task "${task.name}"`;
      if (config.registry.get(task.name) !== task.task) {
        throw new TypeError(
          `${addAction} as it is not among the KV backend's tasks: list it in 'tasks'`,
        );
      }
      task.args.forEach((arg, index) =>
        assertSerializable(arg, `args[${index}]`, "structured", addAction)
      );
      let budget = budgets.get(chain);
      if (budget === undefined) {
        budget = new MessageBudget(KV_MAX_PAYLOAD);
        budgets.set(chain, budget);
      }
      // The keyed checks first: a task they refuse is counted nowhere; one
      // the chain's message refuses takes no keyed room either.
      const keep = task.key === undefined
        ? undefined
        : lanes.accept(task, chain);
      budget.add(task, chain.request);
      keep?.();
    },

    enqueue(chain: BackendChain): Promise<void | EnqueueResult> {
      if (chain.tasks.some(({ key }) => key !== undefined)) {
        return lanes.enqueue(chain);
      }
      return store(firstStep(
        chain.id,
        chain.tasks.map(({ name, args }) => ({ name, args: [...args] })),
        envelope(chain),
      ));
    },

    attach(handlerOptions: ExecutionOptions): void {
      const given = givenExecutionOptions(handlerOptions);
      const attachAction = "Cannot use the KV backend with this handler";
      executionConfig(given, attachAction);
      const timeout = owners.find((owner) => owner.timeout !== undefined)
        ?.timeout;
      if (
        owners[0]!.timeout === undefined && timeout !== undefined &&
        given.timeout !== undefined && given.timeout !== timeout
      ) {
        throw new TypeError(
          `${attachAction} as its 'timeout' (${given.timeout}) differs from the one another handler gave it (${timeout}): give the backend a 'timeout' of its own`,
        );
      }
      owners.push(given);
      consumer.config = {
        ...executionConfig(combineExecutionOptions(owners), action),
        registry: config.registry,
      };
    },

    async handle(message: unknown): Promise<boolean> {
      if (isLaneMessage(message)) {
        await runLaneMessage(message, consumer);
        return true;
      }
      if (isStepGroup(message)) {
        // Each step as if it had come alone; the message is done once they
        // all are, and delivered again if any failed to be written.
        const settled = await Promise.allSettled(
          message.steps.map((step) => backend.handle(step)),
        );
        for (const result of settled) {
          if (result.status === "rejected") throw result.reason;
        }
        return true;
      }
      if (!isStep(message)) return false;
      const watch: StepWatch = {};
      const run = runStep(message, consumer, watch);
      const delivery = {
        watch,
        settled: run.then((end) => end, () => undefined),
      };
      running.add(delivery);
      try {
        await run;
      } finally {
        running.delete(delivery);
      }
      return true;
    },

    async failed(): Promise<KvFailedTask[]> {
      return (await listFailed(consumer)).map(({ value }) => value);
    },

    retry(id: string): Promise<boolean> {
      return retryFailed(consumer, id, lanes);
    },

    close(options: BackendCloseOptions = {}): Promise<BackendCloseResult> {
      const { signal } = options ?? {};
      if (signal !== undefined && !(signal instanceof AbortSignal)) {
        throw new TypeError(
          `Cannot close KV backend as 'signal' must be an AbortSignal: current value is ${
            describe(signal)
          }`,
        );
      }
      consumer.closing = true;
      consumer.batch.close();
      closed ??= closeWithin([...running], signal);
      if (signal === undefined || signal.aborted) {
        giveUp(
          signal?.reason ??
            new DOMException("The KV backend closed", "AbortError"),
        );
      } else {
        const onAbort = () => giveUp(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        closed.then(() => signal.removeEventListener("abort", onAbort));
      }
      return closed;
    },
  };
  if (listen) startListener(consumer, (message) => backend.handle(message));
  return backend;
}
