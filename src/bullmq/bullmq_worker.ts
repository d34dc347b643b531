// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { type Job, UnrecoverableError } from "npm:bullmq@^6";
import {
  assertPrefix,
  assertQueueName,
  BACKOFF,
  type JobData,
  shardPrefixes,
} from "./_shared.ts";
import {
  assertRedisOnly,
  type Connection,
  openDatastore,
  parseConnection,
} from "./_datastore.ts";
import { escapeControls } from "../api/_describe_task.ts";
import { errorText } from "../util/_error_text.ts";
import {
  ConnectionWatch,
  elapsed,
  isConnectionError,
  isRefusal,
} from "./_connection_watch.ts";
import { backoff } from "../core/_retry.ts";
import { assertInteger, assertOptions, optionKeys } from "../util/_assert.ts";
import { reportUnknownTask } from "../durable/_unknown_tasks.ts";
import {
  runQueued,
  type WorkerConfig,
  workerConfig,
} from "../durable/_worker.ts";
import type { BullmqConnection } from "./bullmq_backend.ts";
import {
  checkShards,
  checkTasks,
  prepared,
  WatchedWorker,
} from "./_watched_worker.ts";
import type { WorkerOptions } from "../api/task_backend.ts";
import { LaneGate } from "./_lane_gate.ts";

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
  /**
   * Where BullMQ keeps the queues, as the web processes have it: a Redis
   * URL, ioredis options or an ioredis instance; or a PostgreSQL URL or a
   * pg.Pool (which needs at least two connections: BullMQ keeps one for
   * LISTEN; a pool of one is refused).
   */
  connection: BullmqConnection;
  /**
   * The BullMQ queue's name.
   *
   * @default {"background-tasks"}
   */
  queue?: string;
  /**
   * The start of the hash tag of every key, as the web processes have it.
   * Redis only.
   *
   * @default {"bull"}
   */
  prefix?: string;
  /**
   * How many shards to consume: the same number the web processes store
   * chains in, since each shard's hash tag depends on it (a worker that
   * finds another number in Redis says so at start). Redis only.
   *
   * @default {1}
   */
  shards?: number;
  /**
   * How many tasks this worker runs at once from each shard.
   *
   * @default {1}
   */
  concurrency?: number;
  /**
   * Milliseconds a worker holds a task before others may take it back: a
   * worker that died is noticed after at most this long, plus
   * `stalledInterval`. A keyed task fetched while a duplicate runs waits at
   * most this long before it asks again, should nobody wake it.
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

/** The keys of `BullmqWorkerOptions`. */
const BULLMQ_WORKER_OPTIONS = optionKeys<BullmqWorkerOptions>({
  onTaskError: true,
  timeout: true,
  onTaskStart: true,
  onTaskEnd: true,
  telemetry: true,
  tasks: true,
  connection: true,
  queue: true,
  prefix: true,
  shards: true,
  concurrency: true,
  lockDuration: true,
  stalledInterval: true,
});

/**
 * Starts a worker: a process that runs the tasks web processes enqueue
 * through {@linkcode bullmqBackend}, `concurrency` at a time, with the
 * tasks' timeouts and the hooks of its options. Start one or many, on one
 * or many machines, all with the same tasks.
 *
 * It says one line on `console.error` when Redis or PostgreSQL cannot be
 * reached and one when it is back. While the datastore refuses writes (a
 * read-only replica during a failover, memory or disk full), it pauses, says
 * so in one line, tries a write at the pace of reconnections (1 s, up to 20 s
 * apart), and resumes once one is taken, saying so. At start, it says in one
 * line if the web processes store chains in other shards, or tasks it does
 * not know; such a task, should one arrive, fails and is reported through
 * `onTaskError`. On PostgreSQL, it first makes BullMQ's tables if no web
 * process or worker made them yet, and waits for PostgreSQL while it cannot
 * be reached. A keyed task runs only at the head of its key's lane, one at
 * a time across all workers, in the order stored; a keyed task fetched out
 * of turn goes back to BullMQ's delayed set, with no attempt counted, until
 * its turn comes.
 *
 * @example Run tasks until SIGTERM
 * ```ts ignore
 * import { bullmqWorker } from "@afterward/background-tasks/bullmq";
 * import { resizeImage, sendEmail } from "./tasks.ts";
 *
 * const worker = bullmqWorker({
 *   connection: Deno.env.get("DATABASE_URL") ?? "redis://127.0.0.1:6379",
 *   tasks: [sendEmail, resizeImage],
 *   concurrency: 8,
 *   onTaskEnd: ({ name, outcome, duration }) => console.log(name, outcome, duration),
 * });
 * Deno.addSignalListener("SIGTERM", () => worker.close());
 * ```
 *
 * @param options Where Redis or PostgreSQL listens, the tasks, and how to
 * run them.
 * @returns The worker; `close()` stops it gracefully.
 * @throws {TypeError} If an option has the wrong type, or means nothing on
 * PostgreSQL (`prefix`, `shards`).
 * @throws {RangeError} If a number is out of range, or a pg.Pool allows
 * only one connection.
 */
export function bullmqWorker(options: BullmqWorkerOptions): BullmqWorker {
  const action = "Cannot start BullMQ worker";
  assertOptions(options, BULLMQ_WORKER_OPTIONS, action);
  const connection: Connection = parseConnection(
    options.connection,
    action,
    true,
  );
  assertRedisOnly(connection, options, action);
  const {
    queue: queueName = "background-tasks",
    prefix = "bull",
    shards = 1,
    concurrency = 1,
    lockDuration = 30_000,
    stalledInterval = 30_000,
  } = options;
  assertQueueName(queueName, action);
  assertPrefix(prefix, action);
  assertInteger(shards, "shards", action, 1);
  assertInteger(concurrency, "concurrency", action, 1);
  assertInteger(lockDuration, "lockDuration", action, 1);
  assertInteger(stalledInterval, "stalledInterval", action, 1);
  const config = workerConfig(options, action);
  const place = connection.datastore;
  let closed = false;
  const watch = new ConnectionWatch((status, previous) => {
    if (closed) return;
    if (status.state === "down") {
      const error = escapeControls(String(status.error));
      console.error(
        isRefusal(status.error)
          ? `The BullMQ worker pauses: ${place} refuses its writes (${error}); it tries again until ${place} accepts them`
          : `The BullMQ worker cannot reach ${place} (${error}); it tries again until ${place} is back`,
      );
    } else {
      console.error(
        isRefusal(previous.error)
          ? `The BullMQ worker resumes: ${place} accepts its writes again, after ${
            elapsed(previous.since)
          }`
          : `The BullMQ worker reaches ${place} again, after ${
            elapsed(previous.since)
          } without it`,
      );
    }
  }, connection.datastore === "PostgreSQL" ? connection.password : undefined);
  const datastore = openDatastore(
    connection,
    { queue: queueName, prefix },
    watch,
  );
  const closing = new AbortController();
  const gate = new LaneGate(datastore, queueName, lockDuration, closing.signal);
  const start = (): WatchedWorker[] => {
    const workers = shardPrefixes(prefix, shards).map((shardPrefix) => {
      const worker: WatchedWorker = new WatchedWorker(
        queueName,
        (job, token) => run(job, config, gate, worker, token),
        {
          ...datastore.workerOptions,
          connection: datastore.connection,
          prefix: shardPrefix,
          concurrency,
          lockDuration,
          stalledInterval,
          settings: {
            backoffStrategy(attemptsMade, type, _error, job) {
              const policy = job && config.registry.get(job.name)?.retry;
              // Whole milliseconds: PostgreSQL keeps a job's due time in a
              // bigint column, and refuses a fraction (the retry was lost).
              return type === BACKOFF && policy
                ? Math.round(backoff(policy, attemptsMade))
                : 0;
            },
          },
        },
        datastore,
        watch,
      );
      // A line when the datastore is lost (or refuses) and one when it is
      // back, not one per retry.
      worker.on("error", (error) => {
        if (closed) return;
        if (isConnectionError(error)) datastore.lost(worker, error);
        else if (isRefusal(error)) worker.refused(error);
        else console.error("The BullMQ worker failed:", errorText(error));
      });
      worker.on("ready", () => watch.up(worker));
      // A keyed task's end lets the next of its lane start.
      worker.on("completed", (job) => gate.left(worker, job));
      worker.on("failed", (job) => gate.left(worker, job));
      datastore.watch(worker, () => closed);
      return worker;
    });
    void checkShards(workers[0]!, datastore, queueName, shards);
    void checkTasks(workers[0]!, datastore, queueName, config.registry);
    return workers;
  };
  // On PostgreSQL, BullMQ's workers start once its schema is there: before,
  // they would fail every query, at once and again.
  const started = prepared(datastore, watch, closing.signal).then((ready) =>
    ready ? start() : []
  );
  return {
    async close(): Promise<void> {
      closed = true;
      closing.abort();
      const workers = await started;
      await Promise.all(workers.map((worker) => worker.close()));
      await gate.idle();
      await datastore.close();
    },
  };
}

/**
 * Runs one job: one attempt of one task; a keyed task's once it is its
 * lane's turn.
 */
async function run(
  job: Job,
  config: WorkerConfig,
  gate: LaneGate,
  worker: WatchedWorker,
  token: string | undefined,
): Promise<null> {
  const task = config.registry.get(job.name);
  let data = job.data as JobData;
  if (task === undefined) {
    // Failed for good, and kept where backend.failed() finds it.
    const missing = `No task named "${job.name}" in this worker's 'tasks'`;
    await reportUnknownTask(
      {
        name: job.name,
        index: data.index,
        attempt: job.attemptsMade + 1,
        id: `${data.chain}:${data.index}`,
        request: data.request,
        delivered: data.delivered,
      },
      `${missing}: its job ${job.id} failed, and is kept in queue "${job.queueName}" (backend.failed() lists it)`,
      config,
    );
    const error = new UnrecoverableError(missing);
    // What backend.failed() shows, as for Deno KV: no stack of ours.
    error.stack = missing;
    throw error;
  }
  if (data.lane !== undefined) data = await gate.enter(worker, job, token);
  const result = await runQueued({
    task,
    args: data.args,
    id: `${data.chain}:${data.index}`,
    index: data.index,
    attempt: job.attemptsMade + 1,
    request: data.request,
    delivered: data.delivered,
    maxAttempts: job.opts.attempts ?? 1,
    trace: data.trace,
    messaging: config.telemetry === undefined ? undefined : {
      system: "bullmq",
      destination: job.queueName,
      messageId: job.id!,
    },
  }, config);
  if (result.outcome === "succeeded") return null;
  // BullMQ reads the message and stack of what it is given, and a task may
  // throw anything (a revoked proxy, getters that throw): it gets an error
  // of ours, made of text that was read without throwing. Retry only what
  // the task's policy would: BullMQ counts the attempts.
  const error = result.willRetry
    ? new Error(errorText(result.value, "message"))
    : new UnrecoverableError(errorText(result.value, "message"));
  error.stack = errorText(result.value);
  throw error;
}
