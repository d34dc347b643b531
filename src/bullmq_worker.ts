// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { UnrecoverableError, Worker } from "npm:bullmq@^5";
import {
  assertConnection,
  assertQueueName,
  BACKOFF,
  type JobData,
} from "./_bullmq.ts";
import { errorText } from "./_error_text.ts";
import { RUN_OPTIONS } from "./_options.ts";
import { backoff } from "./_retry.ts";
import { assertInteger, assertOptions } from "./_util.ts";
import { runDelivery, workerConfig } from "./_worker.ts";
import type { RedisConnection } from "./bullmq_backend.ts";
import type { WorkerOptions } from "./worker_options.ts";

/**
 * Options for {@linkcode bullmqWorker}.
 *
 * @example A worker for slow tasks
 * ```ts
 * import { defineTask } from "@afterward/background-tasks";
 * import type { BullmqWorkerOptions } from "@afterward/background-tasks/bullmq";
 * import assert from "node:assert/strict";
 *
 * const render = defineTask(async () => {}, { name: "render", timeout: 120_000 });
 * const options: BullmqWorkerOptions = {
 *   connection: { port: 6379 },
 *   tasks: [render],
 *   concurrency: 2,
 *   lockDuration: 180_000,
 *   onTaskEnd: ({ name, duration }) => console.log(name, duration),
 * };
 * assert.equal(options.concurrency, 2);
 * ```
 */
export interface BullmqWorkerOptions extends WorkerOptions {
  /** Where Redis listens. */
  connection: RedisConnection;
  /**
   * The BullMQ queue's name.
   *
   * @default {"background-tasks"}
   */
  queue?: string;
  /**
   * How many tasks this worker runs at once.
   *
   * @default {1}
   */
  concurrency?: number;
  /**
   * Milliseconds a worker holds a task before others may take it back: a
   * worker that died is noticed after at most this long, plus
   * `stalledInterval`.
   *
   * @default {30000}
   */
  lockDuration?: number;
  /**
   * Milliseconds between checks for tasks whose worker died.
   *
   * @default {30000}
   */
  stalledInterval?: number;
}

/**
 * What {@linkcode bullmqWorker} returns.
 *
 * @example Stop on SIGTERM
 * ```ts
 * import type { BullmqWorker } from "@afterward/background-tasks/bullmq";
 * import assert from "node:assert/strict";
 *
 * function stopOnSigterm(worker: BullmqWorker): () => Promise<void> {
 *   const stop = async () => {
 *     await worker.close();
 *   };
 *   Deno.addSignalListener("SIGTERM", stop);
 *   return async () => {
 *     Deno.removeSignalListener("SIGTERM", stop);
 *     await worker.close();
 *   };
 * }
 * const closed: string[] = [];
 * const stop = stopOnSigterm({ close: async () => void closed.push("closed") });
 * await stop();
 * assert.deepEqual(closed, ["closed"]);
 * ```
 */
export interface BullmqWorker {
  /**
   * Stops taking tasks, lets the running ones finish, and closes the
   * connection: call it on SIGTERM.
   *
   * @returns A promise that resolves once the worker has stopped.
   */
  close(): Promise<void>;
}

/**
 * Starts a worker: a process that runs the tasks web processes enqueue
 * through {@linkcode bullmqBackend}, `concurrency` at a time, with the
 * tasks' timeouts and the hooks of its options. Start one or many, on one
 * or many machines, all with the same tasks.
 *
 * @example Run tasks until SIGTERM
 * ```ts ignore
 * import { bullmqWorker } from "@afterward/background-tasks/bullmq";
 * import { resizeImage, sendEmail } from "./tasks.ts";
 *
 * const worker = bullmqWorker({
 *   connection: { host: "127.0.0.1", port: 6379 },
 *   tasks: [sendEmail, resizeImage],
 *   concurrency: 8,
 *   onTaskEnd: ({ name, outcome, duration }) => console.log(name, outcome, duration),
 * });
 * Deno.addSignalListener("SIGTERM", () => worker.close());
 * ```
 *
 * @param options Where Redis listens, the tasks, and how to run them.
 * @returns The worker; `close()` stops it gracefully.
 * @throws {TypeError} If an option has the wrong type.
 * @throws {RangeError} If a number is out of range.
 */
export function bullmqWorker(options: BullmqWorkerOptions): BullmqWorker {
  const action = "Cannot start BullMQ worker";
  assertOptions(options, [
    ...RUN_OPTIONS,
    "tasks",
    "connection",
    "queue",
    "concurrency",
    "lockDuration",
    "stalledInterval",
  ], action);
  const {
    connection,
    queue: queueName = "background-tasks",
    concurrency = 1,
    lockDuration = 30_000,
    stalledInterval = 30_000,
  } = options;
  assertConnection(connection, action);
  assertQueueName(queueName, action);
  assertInteger(concurrency, "concurrency", action, 1);
  assertInteger(lockDuration, "lockDuration", action, 1);
  assertInteger(stalledInterval, "stalledInterval", action, 1);
  const config = workerConfig(options, action);
  const worker = new Worker(queueName, async (job) => {
    const task = config.registry.get(job.name);
    if (task === undefined) {
      throw new UnrecoverableError(
        `No task named "${job.name}" in this worker's 'tasks'`,
      );
    }
    const data = job.data as JobData;
    const result = await runDelivery({
      task,
      args: data.args,
      id: `${data.chain}:${data.index}`,
      index: data.index,
      attempt: job.attemptsMade + 1,
      request: data.request,
      delivered: data.delivered,
      maxAttempts: job.opts.attempts ?? 1,
    }, config);
    if (result.outcome === "succeeded") return null;
    // BullMQ reads the message and stack of what it is given, and a task
    // may throw anything (a revoked proxy, getters that throw): it gets an
    // error of ours, made of text that was read without throwing. Retry
    // only what the task's policy would: BullMQ counts the attempts.
    const error = result.willRetry
      ? new Error(errorText(result.value, "message"))
      : new UnrecoverableError(errorText(result.value, "message"));
    error.stack = errorText(result.value);
    throw error;
  }, {
    connection,
    concurrency,
    lockDuration,
    stalledInterval,
    settings: {
      backoffStrategy(attemptsMade, type, _error, job) {
        const policy = job && config.registry.get(job.name)?.retry;
        return type === BACKOFF && policy ? backoff(policy, attemptsMade) : 0;
      },
    },
  });
  worker.on("error", (error) => {
    console.error("The BullMQ worker lost its connection:", error);
  });
  return {
    close: () => worker.close(),
  };
}
