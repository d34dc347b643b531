// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { type FlowJob, FlowProducer, Queue } from "npm:bullmq@^5";
import {
  assertConnection,
  assertQueueName,
  BACKOFF,
  type JobData,
} from "./_bullmq.ts";
import { groupCommit } from "./_group_commit.ts";
import { assertSerializable } from "./_serializable.ts";
import { assertOptions, describe } from "./_util.ts";
import { workerConfig } from "./_worker.ts";
import type { RequestSummary } from "./task_info.ts";
import type {
  BackendChain,
  BackendTask,
  EnqueueOptions,
} from "./backend_chain.ts";
import type { TaskBackend } from "./task_backend.ts";
import type { WorkerOptions } from "./worker_options.ts";

/**
 * Where Redis listens, passed on to BullMQ (ioredis).
 *
 * @example From the environment
 * ```ts
 * import type { RedisConnection } from "@afterward/background-tasks/bullmq";
 * import assert from "node:assert/strict";
 *
 * function connectionFrom(env: Record<string, string | undefined>): RedisConnection {
 *   return { host: env["REDIS_HOST"] ?? "127.0.0.1", port: Number(env["REDIS_PORT"] ?? 6379) };
 * }
 * assert.deepEqual(connectionFrom({ REDIS_PORT: "6380" }), { host: "127.0.0.1", port: 6380 });
 * ```
 */
export interface RedisConnection {
  /**
   * The host.
   *
   * @default {"127.0.0.1"}
   */
  host?: string;
  /**
   * The port.
   *
   * @default {6379}
   */
  port?: number;
  /** The user, with Redis ACLs. */
  username?: string;
  /** The password. */
  password?: string;
  /**
   * The database number.
   *
   * @default {0}
   */
  db?: number;
}

/**
 * Options for {@linkcode bullmqBackend}.
 *
 * @example The web side's options
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import type { BullmqBackendOptions } from "@afterward/background-tasks/bullmq";
 * import assert from "node:assert/strict";
 *
 * const sendEmail = defineTask(async () => {}, { name: "sendEmail" });
 * const options: BullmqBackendOptions = {
 *   connection: { host: "127.0.0.1", port: 6379 },
 *   tasks: [sendEmail],
 *   queue: "emails",
 * };
 * assert.equal(options.queue, "emails");
 * ```
 */
export interface BullmqBackendOptions {
  /** Where Redis listens. */
  connection: RedisConnection;
  /** The tasks the workers can run, so that others are refused at `addTask()`. */
  tasks: WorkerOptions["tasks"];
  /**
   * The BullMQ queue's name, the same for the web processes and the workers.
   *
   * @default {"background-tasks"}
   */
  queue?: string;
}

/**
 * A task that failed at its last attempt, kept by BullMQ for inspection.
 *
 * @example A line per failed task
 * ```ts
 * import type { FailedTask } from "@afterward/background-tasks/bullmq";
 * import assert from "node:assert/strict";
 *
 * const line = (task: FailedTask) => `${task.name} (${task.id}): ${task.error}`;
 * assert.equal(
 *   line({ id: "c1:1", jobId: "c1.1", name: "charge", args: [], attempts: 5, error: "declined", request: undefined }),
 *   "charge (c1:1): declined",
 * );
 * ```
 */
export interface FailedTask {
  /** The task's stable id, `chain:index`, as its context showed it. */
  readonly id: string;
  /** The BullMQ job's id. */
  readonly jobId: string;
  /** The task's name. */
  readonly name: string;
  /** Its arguments. */
  readonly args: readonly unknown[];
  /** The attempts made. */
  readonly attempts: number;
  /** BullMQ's `failedReason`: the last error's message. */
  readonly error: string;
  /** The request whose handler added it. */
  readonly request: RequestSummary | undefined;
}

/**
 * What {@linkcode bullmqBackend} returns.
 *
 * @example Retry every failed task
 * ```ts
 * import type { BullmqBackend } from "@afterward/background-tasks/bullmq";
 * import assert from "node:assert/strict";
 *
 * async function retryAll(backend: BullmqBackend): Promise<number> {
 *   let retried = 0;
 *   for (const task of await backend.failed()) {
 *     if (await backend.retry(task.jobId)) retried++;
 *   }
 *   return retried;
 * }
 * assert.equal(typeof retryAll, "function");
 * ```
 */
export interface BullmqBackend extends TaskBackend {
  /**
   * The tasks that failed at their last attempt, newest first.
   *
   * @returns Every failed task the queue keeps.
   */
  failed(): Promise<FailedTask[]>;
  /**
   * Runs a failed task again, with a fresh attempt count.
   *
   * @param jobId The failed job's id.
   * @returns Whether there was such a failed job.
   */
  retry(jobId: string): Promise<boolean>;
  /**
   * Stores the chains handed over so far, then closes the connections to
   * Redis. Chains handed over after it are refused: before their response,
   * the handler fails (its tasks discarded); after it, their tasks are
   * reported through `onTaskError`.
   * While Redis is unreachable, it waits until each chain is stored or given
   * up by the signal its `enqueue()` was given: a chain handed over without
   * one waits for Redis to come back.
   *
   * @returns A promise that resolves once the connections are closed.
   */
  close(): Promise<void>;
}

/** Chains per transaction. */
const GROUP_SIZE = 100;

/**
 * A backend on Redis through BullMQ, for work that should outgrow one
 * process: web processes enqueue each request's chain before its response is
 * sent (see the wrapper's `handOver`), and worker processes started with {@linkcode bullmqWorker}, on
 * this machine or others, run the tasks.
 *
 * A chain becomes a BullMQ flow, added atomically (the chains handed over
 * together share one transaction), whose jobs depend on one another so that
 * they run in order; a task that fails at its last attempt
 * leaves the next one running. Retries and backoff are BullMQ's, computed as
 * the task's retry policy says. If a worker dies mid-task, BullMQ gives the
 * task to another once its lock expires (stalled-job recovery): delivery is
 * at least once, and the context's `id` is the same on every delivery.
 *
 * A chain handed over is never failed for a connection error. While Redis
 * is unreachable, ioredis holds the transaction until it reconnects; if the
 * connection drops in the middle of one, the backend stores its chains
 * again, 100 ms later, doubling up to 5 s between tries, until they are
 * stored or the signal `enqueue()` was given aborts (the chain then rejects
 * with the signal's reason). A chain of that transaction with a job already
 * in Redis was stored (EXEC ran, its answer was lost) and is not added
 * twice.
 *
 * Only tasks made by `defineTask` and listed in `tasks` can be added, with
 * arguments that survive JSON: anything else fails at `addTask()` with a
 * `TypeError`.
 *
 * @example Web process and worker
 * ```ts ignore
 * import { defineTask, serve } from "@afterward/background-tasks";
 * import { bullmqBackend, bullmqWorker } from "@afterward/background-tasks/bullmq";
 *
 * const sendEmail = defineTask(async ({ id }, to: string) => {
 *   await mailer.send({ to, idempotencyKey: id });
 * }, { name: "sendEmail", retry: { maxAttempts: 5 } });
 * const connection = { host: "127.0.0.1", port: 6379 };
 *
 * // In the web process:
 * serve({ backend: bullmqBackend({ connection, tasks: [sendEmail] }) }, (_request, _info, tasks) => {
 *   tasks.addTask(sendEmail, "a@example.com");
 *   return new Response("Accepted", { status: 202 });
 * });
 *
 * // In each worker process:
 * const worker = bullmqWorker({ connection, tasks: [sendEmail], concurrency: 8 });
 * Deno.addSignalListener("SIGTERM", () => worker.close());
 * ```
 *
 * @param options Where Redis listens, and the tasks the workers know.
 * @returns The backend, for the `backend` option of a wrapped handler.
 * @throws {TypeError} If an option has the wrong type.
 */
export function bullmqBackend(options: BullmqBackendOptions): BullmqBackend {
  const action = "Cannot create BullMQ backend";
  assertOptions(options, ["connection", "tasks", "queue"], action);
  const { connection, queue: queueName = "background-tasks" } = options;
  assertConnection(connection, action);
  assertQueueName(queueName, action);
  const { registry } = workerConfig({ tasks: options.tasks }, action);
  const flows = new Flows({ connection });
  const queue = new Queue(queueName, { connection });
  // Errors on the connections reach the caller through enqueue(); without a
  // listener, ioredis would print each one.
  flows.on("error", () => {});
  queue.on("error", () => {});
  // Chains handed over together go in one transaction: ioredis builds a
  // pipeline per call, which cost more than the chain itself.
  // A group is split only for what one chain's data can cause (JSON.stringify
  // throws a TypeError or a RangeError). Anything else, such as a connection
  // cut between MULTI and EXEC (ioredis's AbortError), is not the chains'
  // fault: the transaction stored nothing (Redis discards one it did not
  // execute) or, if the connection was lost after EXEC ran, all of it. So the
  // group is stored again, less the chains whose jobs are in Redis.
  const store = groupCommit<FlowJob>(
    async (group, retrying) => {
      const flowsToAdd = retrying ? await unstored(group) : group;
      if (flowsToAdd.length === 0) return;
      const added = await flows.addBulk(flowsToAdd);
      // A closing FlowProducer returns without storing anything.
      if (added?.length !== flowsToAdd.length) throw new ClosingError();
    },
    GROUP_SIZE,
    {
      split: (error) =>
        error instanceof TypeError || error instanceof RangeError,
      retry: (error, failures) =>
        error instanceof ClosingError ? undefined : retryDelay(failures),
    },
  );
  let closed = false;

  /**
   * The flows of `group` none of whose jobs is in Redis. A transaction whose
   * connection was lost after its EXEC ran stored its chains, and workers
   * may have run and removed their first tasks since: adding such a chain
   * again would add those tasks anew, to run twice and hold back the next
   * one. So a chain is added again only if none of its jobs is there (or,
   * if it already ran to its end, it runs again: delivery is at least once).
   */
  async function unstored(group: FlowJob[]): Promise<FlowJob[]> {
    const client = await flows.client;
    const found = await Promise.all(group.map((flow) => {
      const keys: string[] = [];
      for (let job: FlowJob | undefined = flow; job; job = job.children?.[0]) {
        keys.push(queue.toKey(job.opts!.jobId!));
      }
      return Promise.all(keys.map((key) => client.hexists(key, "name")));
    }));
    return group.filter((_, index) => found[index]!.every((n) => n === 0));
  }

  return {
    accept(task: BackendTask): void {
      const addAction = `Cannot add task "${task.name}"`;
      if (registry.get(task.name) !== task.task) {
        throw new TypeError(
          `${addAction} as it is not among the BullMQ backend's tasks: list it in 'tasks'`,
        );
      }
      task.args.forEach((arg, index) =>
        assertSerializable(arg, `args[${index}]`, "json", addAction)
      );
    },

    enqueue(chain: BackendChain, options: EnqueueOptions = {}): Promise<void> {
      const { signal } = options;
      if (signal !== undefined && !(signal instanceof AbortSignal)) {
        return Promise.reject(
          new TypeError(
            `Cannot enqueue chain as 'signal' must be an AbortSignal: current value is ${
              describe(signal)
            }`,
          ),
        );
      }
      if (closed) {
        return Promise.reject(
          new Error("Cannot enqueue chain as the BullMQ backend is closed"),
        );
      }
      let flow: FlowJob | undefined;
      chain.tasks.forEach((task, index) => {
        const data: JobData = {
          chain: chain.id,
          index,
          args: [...task.args],
          ...(chain.request === undefined ? {} : { request: chain.request }),
          ...(chain.delivered === undefined
            ? {}
            : { delivered: chain.delivered }),
        };
        flow = {
          name: task.name,
          queueName,
          data,
          opts: {
            jobId: `${chain.id}.${index}`,
            attempts: task.retry?.maxAttempts ?? 1,
            backoff: { type: BACKOFF },
            removeOnComplete: true,
            removeOnFail: false,
            // The next task runs even when this one failed.
            ignoreDependencyOnFailure: true,
          },
          // The task added before this one runs first.
          ...(flow === undefined ? {} : { children: [flow] }),
        };
      });
      return flow === undefined ? Promise.resolve() : store(flow, signal);
    },

    async failed(): Promise<FailedTask[]> {
      const jobs = await queue.getFailed();
      return jobs.map((job) => {
        const data = job.data as JobData;
        return {
          id: `${data.chain}:${data.index}`,
          jobId: job.id!,
          name: job.name,
          args: data.args,
          attempts: job.attemptsMade,
          error: job.failedReason,
          request: data.request,
        };
      });
    },

    async retry(jobId: string): Promise<boolean> {
      const job = await queue.getJob(jobId);
      if (job === undefined || !(await job.isFailed())) return false;
      await job.retry("failed", { resetAttemptsMade: true });
      return true;
    },

    async close(): Promise<void> {
      // The chains handed over so far are stored (or given up by their
      // signal) first; later ones fail.
      closed = true;
      await store.idle();
      await Promise.all([flows.closeNow(), queue.close()]);
    },
  };
}

/** A FlowProducer that can close while Redis is unreachable. */
class Flows extends FlowProducer {
  /**
   * Closes the connection without QUIT, which ioredis would queue behind a
   * transaction still waiting for Redis, one whose chains were all given up
   * by their signals. Nothing else is in flight once the store is idle.
   */
  closeNow(): Promise<void> {
    this.closing ??= this.connection.close(true);
    return this.closing;
  }
}

/** A FlowProducer closed by `close()` stored nothing. */
class ClosingError extends Error {
  constructor() {
    super("BullMQ stored no chain: its connection is closing");
  }
}

/**
 * Milliseconds before storing a group again after `failures` failed attempts
 * in a row: 100 ms doubling up to 5 s, less up to half of it at random, so
 * that the web processes a Redis restart cut off do not all come back at
 * once.
 */
function retryDelay(failures: number): number {
  return Math.min(5_000, 100 * 2 ** (failures - 1)) * (1 - Math.random() / 2);
}
