// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Distributed workers through BullMQ, on Redis or PostgreSQL, for work that
 * outgrows one process. Web processes pass {@linkcode bullmqBackend} as the
 * `backend` option of `withBackgroundTasks()` or `serve()`; worker processes,
 * on any number of machines, call {@linkcode bullmqWorker} with the same
 * tasks. Chains keep their order, retries and backoff are BullMQ's, and a
 * task whose worker died is taken over by another.
 *
 * ```ts ignore
 * import { bullmqWorker } from "@afterward/background-tasks/bullmq";
 * import { sendEmail } from "./tasks.ts";
 *
 * const worker = bullmqWorker({
 *   // "redis://127.0.0.1:6379", or "postgres://app:secret@db:5432/app"
 *   connection: Deno.env.get("BULLMQ_URL")!,
 *   tasks: [sendEmail],
 * });
 * Deno.addSignalListener("SIGTERM", () => worker.close());
 * ```
 *
 * `connection` is where BullMQ keeps the queues. On Redis, what BullMQ takes:
 * a `redis://` or `rediss://` URL, ioredis options (TLS, Sentinel), or an
 * ioredis `Redis` or `Cluster` the caller owns; on a Cluster, `shards`
 * spreads the chains over that many queues, each on the node its hash tag
 * picks. On PostgreSQL, through BullMQ's own PostgreSQL backend: a
 * `postgres://` or `postgresql://` URL, or a `pg.Pool` the caller owns;
 * BullMQ's tables are made in the `bullmq` schema by whichever side starts
 * first. While the datastore is unreachable both sides say so once, and once
 * when it is back.
 *
 * This entry point depends on `npm:bullmq` and `npm:ioredis`, and loads
 * `npm:pg` when given a PostgreSQL URL; the rest of the package has no
 * dependencies.
 *
 * @module
 */

export * from "./src/bullmq/bullmq_backend.ts";
export * from "./src/bullmq/bullmq_worker.ts";
