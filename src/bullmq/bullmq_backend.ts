// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { FlowJob, Job } from "npm:bullmq@^6";
import {
  assertPrefix,
  assertQueueName,
  DEDUPLICATION_TTL,
  type JobData,
  jobData,
  jobOptions,
  KEEP_COMPLETED,
  shardPrefixes,
} from "./_shared.ts";
import { openShard } from "./_shard.ts";
import { keyedIndexes, KeyedStore } from "./_keyed.ts";
import {
  assertRedisOnly,
  type Connection,
  openDatastore,
  parseConnection,
} from "./_datastore.ts";
import { escapeControls } from "../api/_describe_task.ts";
import { NAMES_REFRESH } from "../durable/_unknown_tasks.ts";
import { ConnectionWatch, elapsed } from "./_connection_watch.ts";
import { prepared } from "./_watched_worker.ts";
import { assertSerializable } from "../durable/_serializable.ts";
import {
  assertInteger,
  assertOptions,
  describe,
  optionKeys,
} from "../util/_assert.ts";
import { workerConfig } from "../durable/_worker.ts";
import type {
  BackendChain,
  BackendStatus,
  BackendTask,
  DurableBackend,
  EnqueueOptions,
  EnqueueResult,
  FailedTask,
  WorkerOptions,
} from "../api/task_backend.ts";

/**
 * Where BullMQ keeps the queues: Redis or PostgreSQL.
 *
 * For Redis, whatever BullMQ accepts, passed on to it (and to ioredis): a
 * Redis URL (`redis://user:password@host:6379/2`, `rediss://…` for TLS);
 * ioredis options (`{ host, port, password, tls: { ca } }`, Sentinel's
 * `{ sentinels, name }`); or an ioredis `Redis` or `Cluster` instance that
 * the caller owns: `close()` leaves it open. A Cluster is only ever such an
 * instance (BullMQ makes a plain `Redis` of options), and needs nothing
 * more: each shard's keys share a hash tag.
 *
 * For PostgreSQL, through BullMQ's own PostgreSQL backend: a
 * `postgres://user:password@host:5432/database` URL (or `postgresql://`,
 * with node-postgres's query parameters, such as `sslmode=require`), from
 * which a pool is made and ended by `close()`; or a node-postgres `pg.Pool`
 * that the caller owns, made with `options: "-c search_path=bullmq"` (BullMQ's
 * queries name its tables without their schema), which `close()` leaves
 * open. BullMQ's tables live in the `bullmq` schema, made by whichever web
 * process or worker starts first. node-postgres is loaded only then, and
 * needs no import of your own.
 *
 * The type is `object` because BullMQ's own `ConnectionOptions` names
 * dozens of ioredis types that this package cannot document as its own;
 * BullMQ and ioredis check the options. For the compiler's help, write
 * `{ … } satisfies ConnectionOptions` with that type from `npm:bullmq`.
 *
 * @example From the environment
 * ```ts
 * import type { BullmqConnection } from "@afterward/background-tasks/bullmq";
 * import assert from "node:assert/strict";
 *
 * function connectionFrom(env: Record<string, string | undefined>): BullmqConnection {
 *   return env["DATABASE_URL"] ?? env["REDIS_URL"] ?? { host: "127.0.0.1", port: 6379 };
 * }
 * assert.equal(
 *   connectionFrom({ DATABASE_URL: "postgres://app:secret@db.example.com:5432/app" }),
 *   "postgres://app:secret@db.example.com:5432/app",
 * );
 * ```
 */
export type BullmqConnection = string | object;

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
  /**
   * Where BullMQ keeps the queues: a Redis URL, ioredis options or an
   * ioredis instance; or a PostgreSQL URL or a pg.Pool.
   */
  connection: BullmqConnection;
  /** The tasks the workers can run, so that others are refused at `addTask()`. */
  tasks: WorkerOptions["tasks"];
  /**
   * The BullMQ queue's name, the same for the web processes and the workers.
   *
   * @default {"background-tasks"}
   */
  queue?: string;
  /**
   * The start of the hash tag of every key, the same for the web processes
   * and the workers. Redis only: on PostgreSQL, `queue` tells queues apart.
   *
   * @default {"bull"}
   */
  prefix?: string;
  /**
   * How many BullMQ queues the chains spread over, each with its own hash
   * tag, so that on a Redis Cluster they spread over its nodes (a queue's
   * keys all live on one node). A chain is always whole in one shard, so
   * its order holds. Workers must be given the same number: each shard's
   * hash tag depends on it. To change it, keep workers with the old number
   * running until its queues are empty. Redis only.
   *
   * @default {1}
   */
  shards?: number;
  /**
   * Told when Redis or PostgreSQL becomes unreachable (or refuses a store
   * while connected, such as when out of memory, or leaves one unanswered
   * for 5 s), and when it is back: once per change, not per retry. The
   * chains meanwhile wait to be stored (see `stats.storing`).
   *
   * @default {A line on `console.error` each time}
   */
  onStatusChange?: (status: BackendStatus) => void;
}

/**
 * A task that BullMQ keeps as a failed job: a {@linkcode FailedTask}, with
 * the job's id, for finding it with BullMQ's own tools.
 *
 * @example Find the job in a BullMQ dashboard
 * ```ts
 * import type { BullmqFailedTask } from "@afterward/background-tasks/bullmq";
 * import assert from "node:assert/strict";
 *
 * const line = (task: BullmqFailedTask) => `${task.name} (job ${task.jobId}): ${task.error.split("\n")[0]}`;
 * const task: BullmqFailedTask = {
 *   id: "c1:1", jobId: "c1.1", name: "charge", args: [], index: 1, attempts: 5,
 *   error: "Error: declined\n    at charge (file:///app/tasks.ts:3:9)", request: undefined, at: new Date(0),
 * };
 * assert.equal(line(task), "charge (job c1.1): Error: declined");
 * ```
 */
export interface BullmqFailedTask extends FailedTask {
  /** The BullMQ job's id, as BullMQ's tools show it. */
  readonly jobId: string;
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
 *     if (await backend.retry(task.id)) retried++;
 *   }
 *   return retried;
 * }
 * assert.equal(typeof retryAll, "function");
 * ```
 */
export interface BullmqBackend extends DurableBackend {
  /** Whether Redis or PostgreSQL can be reached now, and since when. */
  readonly status: BackendStatus;
  /**
   * The failed jobs of every shard, newest first (see
   * {@linkcode DurableBackend.failed}): tasks that failed at their last
   * attempt, that no worker knew, or that BullMQ's stalled-job check failed
   * (their workers died while running them, more often than
   * `maxStalledCount` allows).
   *
   * @returns Every failed task the queue keeps.
   */
  failed(): Promise<BullmqFailedTask[]>;
  /**
   * Runs a failed task's job again, under the same id and index, with a
   * fresh attempt count (see {@linkcode DurableBackend.retry}).
   *
   * @param id The failed task's `id` (not its `jobId`).
   * @returns Whether the queue kept such a failed job.
   * @throws {TypeError} If `id` is not a string.
   */
  retry(id: string): Promise<boolean>;
  /**
   * Stores the chains handed over so far, then closes the connections to
   * Redis or PostgreSQL. Chains handed over after it are refused: before
   * their response, the handler fails (its tasks discarded); after it, their
   * tasks are reported through `onTaskError`.
   * While the datastore is unreachable, it waits until each chain is stored
   * or given up by the signal its `enqueue()` was given: a chain handed over
   * without one waits for it to come back. A connection the caller owns (an
   * ioredis instance, a pg.Pool) is left open, so a transaction still queued
   * on it when its chains were given up may yet run once Redis is back:
   * those chains are then stored, though reported abandoned.
   *
   * @returns A promise that resolves once the connections are closed.
   */
  close(): Promise<void>;
}

/** The keys of `BullmqBackendOptions`. */
const BULLMQ_BACKEND_OPTIONS = optionKeys<BullmqBackendOptions>({
  connection: true,
  tasks: true,
  queue: true,
  prefix: true,
  shards: true,
  onStatusChange: true,
});

/**
 * A backend on Redis or PostgreSQL through BullMQ, for work that should
 * outgrow one process: web processes enqueue each request's chain before its
 * response is sent (see the wrapper's `handOver`), and worker processes
 * started with {@linkcode bullmqWorker}, on this machine or others, run the
 * tasks. On PostgreSQL, BullMQ's tables are made in the `bullmq` schema by
 * whichever of the web processes and workers starts first.
 *
 * A chain becomes a BullMQ flow, added atomically (the chains handed over
 * together share one transaction), whose jobs depend on one another so that
 * they run in order; a task that fails at its last attempt leaves the next
 * one running. A chain of one task is a plain job, which BullMQ adds
 * atomically by itself: on Redis, each is sent the moment it is handed over,
 * by a `queue.add()` of its own, whatever is in flight (ioredis pipelines
 * them on its connection); on PostgreSQL, the one-task chains handed over
 * together go in one statement. The one job left of a chain whose other
 * tasks are keyed (see below) goes with the others handed over together, in
 * one pipeline on Redis. Retries and backoff are BullMQ's, computed as the
 * task's retry policy says. If a worker dies mid-task, BullMQ gives the task
 * to another once its lock expires (stalled-job recovery): delivery is
 * at least once, and the context's `id` is the same on every delivery.
 *
 * A chain handed over is never failed for a connection error. While Redis
 * is unreachable, ioredis holds the transaction (or add) until it
 * reconnects; if the connection drops in the middle of one, or PostgreSQL
 * cannot be reached, the backend stores its chains again, 100 ms later,
 * doubling up to 5 s between tries, until they are stored or the signal
 * `enqueue()` was given aborts (the chain then rejects with the signal's
 * reason).
 *
 * A store whose answer was lost (the datastore ran it, then the connection
 * closed) adds nothing twice when it is sent again, by the backend or by
 * ioredis on its own, though a worker ran and BullMQ removed the chain's jobs
 * meanwhile.
 * A chain of one task carries BullMQ's deduplication by the chain's id,
 * whose key outlives the job: it is deleted once the store is answered, and
 * expires after 24 hours if it never is. The jobs of a longer chain (a flow,
 * on which BullMQ refuses deduplication) stay 60 s once done, so
 * that a flow added again finds them: a store sent again more than 60 s
 * after the chain's first task finished may run the finished tasks again.
 * Delivery is at least once only for a worker that dies mid-task.
 *
 * A keyed task (defined with a `key`) leaves its request's chain: it is a
 * job of its own, in its key's lane, which the workers run one at a time, in
 * the order stored, whatever their number; its `onDuplicate` is BullMQ's
 * deduplication by its lane, and its `delay` BullMQ's (see docs/durable.md,
 * "Keyed tasks on BullMQ"). What the store deduplicates is counted in the
 * handler's `stats.deduplicated` and told to its `onTaskEnd`.
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
 * // Redis, or PostgreSQL: "postgres://app:secret@127.0.0.1:5432/app".
 * const connection = "redis://127.0.0.1:6379";
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
 * @param options Where Redis or PostgreSQL listens, and the tasks the workers
 * know.
 * @returns The backend, for the `backend` option of a wrapped handler.
 * @throws {TypeError} If an option has the wrong type, or means nothing on
 * PostgreSQL (`prefix`, `shards`).
 */
export function bullmqBackend(options: BullmqBackendOptions): BullmqBackend {
  const action = "Cannot create BullMQ backend";
  assertOptions(options, BULLMQ_BACKEND_OPTIONS, action);
  const connection: Connection = parseConnection(options.connection, action);
  assertRedisOnly(connection, options, action);
  const {
    queue: queueName = "background-tasks",
    prefix = "bull",
    shards: shardCount = 1,
    onStatusChange,
  } = options;
  assertQueueName(queueName, action);
  assertPrefix(prefix, action);
  assertInteger(shardCount, "shards", action, 1);
  if (onStatusChange !== undefined && typeof onStatusChange !== "function") {
    throw new TypeError(
      `${action} as 'onStatusChange' must be a function: current value is ${
        describe(onStatusChange)
      }`,
    );
  }
  const { registry } = workerConfig({ tasks: options.tasks }, action);
  let closed = false;
  const watch = new ConnectionWatch((status, previous) => {
    if (closed) return;
    if (onStatusChange === undefined) {
      logStatus(connection.datastore, status, previous);
    } else onStatusChange(status);
  }, connection.datastore === "PostgreSQL" ? connection.password : undefined);
  const datastore = openDatastore(
    connection,
    { queue: queueName, prefix },
    watch,
  );
  const shards = shardPrefixes(prefix, shardCount).map((shardPrefix) =>
    openShard(datastore, queueName, shardPrefix, watch)
  );
  // Workers that consume fewer shards, or lack a task, say so: see
  // bullmqWorker(). Written at start, and again each day while chains are
  // stored, so that the names of a process that runs for weeks stay fresh.
  let announced = Date.now();
  const announce = (): void => {
    const now = announced = Date.now();
    datastore.prepare().then(() =>
      datastore.announce(
        shards[0]!.queue,
        [...registry.keys()],
        shardCount,
        now,
      )
    ).catch(() => {});
  };
  // At start, on PostgreSQL, BullMQ's schema is found (or made) before the
  // names are written. A datastore that cannot be reached then is said at
  // once, as ioredis's first connection says it on Redis, not at the first
  // store, and tried again at the pace of reconnections until it is.
  const closing = new AbortController();
  void prepared(datastore, watch, closing.signal).then((ready) => {
    if (ready) announce();
  });
  let next = 0;
  let keyed: KeyedStore | undefined;

  return {
    get status(): BackendStatus {
      return watch.status;
    },

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

    enqueue(
      chain: BackendChain,
      options: EnqueueOptions = {},
    ): Promise<void | EnqueueResult> {
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
      const keyedAt = keyedIndexes(chain);
      const flow = chainFlow(chain, queueName, keyedAt);
      if (flow === undefined && keyedAt === undefined) return Promise.resolve();
      if (Date.now() - announced >= NAMES_REFRESH) announce();
      let stored: Promise<void> | undefined;
      if (flow !== undefined) {
        // Round robin: a chain is whole in one shard.
        const shard = shards[next]!;
        next = (next + 1) % shards.length;
        // A chain without keyed tasks that is one job is added on its own.
        stored = keyedAt === undefined && flow.children === undefined
          ? shard.storeJob(flow, signal)
          : shard.store(flow, signal);
      }
      if (keyedAt === undefined) return stored!;
      // Its keyed tasks go to their lanes, apart from the rest.
      keyed ??= new KeyedStore(
        datastore,
        shards.map((shard) => shard.queue),
        queueName,
        watch,
      );
      const lanes = keyed.store(chain, keyedAt, signal);
      return Promise.all([stored, lanes]).then(([, result]) => result);
    },

    async failed(): Promise<BullmqFailedTask[]> {
      await datastore.prepare();
      const jobs = (await Promise.all(
        shards.map((shard) => shard.queue.getFailed()),
      )).flat();
      return jobs.map(failedTask).sort((a, b) =>
        b.at.getTime() - a.at.getTime()
      );
    },

    async retry(id: string): Promise<boolean> {
      if (typeof id !== "string") {
        throw new TypeError(
          `Cannot retry task as 'id' must be a string: current value is ${
            describe(id)
          }`,
        );
      }
      // A task's job is `chain.index` (see chainFlow()).
      const colon = id.lastIndexOf(":");
      if (colon === -1) return false;
      const jobId = `${id.slice(0, colon)}.${id.slice(colon + 1)}`;
      await datastore.prepare();
      for (const { queue } of shards) {
        const job = await queue.getJob(jobId);
        if (job !== undefined) return await retryFailed(job);
      }
      // A keyed task that took the place of a waiting duplicate runs in its
      // job (see _lanes.ts), under that job's id.
      for (const { queue } of shards) {
        const job = (await queue.getFailed()).find((job) =>
          failedTask(job).id === id
        );
        if (job !== undefined) return await retryFailed(job);
      }
      return false;
    },

    async close(): Promise<void> {
      // The chains handed over so far are stored (or given up by their
      // signal) first; later ones fail.
      closed = true;
      closing.abort();
      await Promise.all([
        ...shards.map((shard) => shard.store.idle()),
        keyed?.idle(),
      ]);
      await Promise.all(
        shards.flatMap((
          shard,
        ) => [shard.flows.closeNow(), shard.queue.closeNow()]),
      );
      await datastore.close();
    },
  };
}

/**
 * A chain as a BullMQ flow: each job the child of the next task's. Its keyed
 * tasks, at `keyed`, are left out: each goes to its lane.
 */
function chainFlow(
  chain: BackendChain,
  queueName: string,
  keyed: readonly number[] | undefined,
): FlowJob | undefined {
  let flow: FlowJob | undefined;
  const jobs = chain.tasks.length - (keyed?.length ?? 0);
  chain.tasks.forEach((task, index) => {
    // Only a chain with keyed tasks has tasks with a key.
    if (task.key !== undefined) return;
    const data = jobData(chain, task, index);
    flow = {
      name: task.name,
      queueName,
      data,
      opts: {
        ...jobOptions(chain, task, index),
        // A flow's jobs stay a while once done, so that a store of it sent
        // again finds them (see KEEP_COMPLETED); a chain of one job carries
        // BullMQ's deduplication by its id instead (see openShard()), which
        // BullMQ refuses on a flow's jobs.
        removeOnComplete: jobs === 1 ? true : { age: KEEP_COMPLETED },
        // The next task runs even when this one failed.
        ignoreDependencyOnFailure: true,
        ...(jobs === 1
          ? { deduplication: { id: chain.id, ttl: DEDUPLICATION_TTL } }
          : {}),
      },
      // The task added before this one runs first.
      ...(flow === undefined ? {} : { children: [flow] }),
    };
  });
  return flow;
}

/** Runs a failed job again; false if it is not failed. */
async function retryFailed(job: Job): Promise<boolean> {
  if (!(await job.isFailed())) return false;
  try {
    await job.retry("failed", { resetAttemptsMade: true });
  } catch (error) {
    // Retried by another call meanwhile: BullMQ's script refuses a job no
    // longer failed.
    if (!(await job.isFailed())) return false;
    throw error;
  }
  return true;
}

/**
 * A failed job as a failed task. The error is its last stack: the task's
 * error as the worker wrote it (see run() in bullmq_worker.ts), or BullMQ's
 * own for a job its stalled-job check failed; its reason if it has none.
 */
function failedTask(job: Job): BullmqFailedTask {
  const data = job.data as JobData;
  return {
    id: `${data.chain}:${data.index}`,
    jobId: job.id!,
    name: job.name,
    args: data.args,
    index: data.index,
    attempts: job.attemptsMade,
    error: job.stacktrace?.at(-1) ?? job.failedReason,
    request: data.request,
    at: new Date(job.finishedOn ?? job.timestamp),
  };
}

/**
 * The default of `onStatusChange`: one line when the datastore is lost, one
 * when it is back.
 */
function logStatus(
  datastore: string,
  status: BackendStatus,
  previous: BackendStatus,
): void {
  console.error(
    status.state === "down"
      ? `The BullMQ backend cannot reach ${datastore} (${
        escapeControls(String(status.error))
      }): chains wait to be stored until it is back`
      : `The BullMQ backend reaches ${datastore} again, after ${
        elapsed(previous.since)
      } without it`,
  );
}
