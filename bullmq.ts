// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Distributed workers on Redis through BullMQ, for work that outgrows one
 * process. Web processes pass {@linkcode bullmqBackend} as the `backend`
 * option of `withBackgroundTasks()` or `serve()`; worker processes, on any
 * number of machines, call {@linkcode bullmqWorker} with the same tasks.
 * Chains keep their order, retries and backoff are BullMQ's, and a task whose
 * worker died is taken over by another.
 *
 * ```ts ignore
 * import { bullmqWorker } from "@afterward/background-tasks/bullmq";
 * import { sendEmail } from "./tasks.ts";
 *
 * const worker = bullmqWorker({
 *   connection: Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379",
 *   tasks: [sendEmail],
 * });
 * Deno.addSignalListener("SIGTERM", () => worker.close());
 * ```
 *
 * `connection` is what BullMQ takes: a `redis://` or `rediss://` URL, ioredis
 * options (TLS, Sentinel), or an ioredis `Redis` or `Cluster` the caller owns.
 * On a Cluster, `shards` spreads the chains over that many queues, each on
 * the node its hash tag picks. While Redis is unreachable both sides say so
 * once, and once when it is back.
 *
 * This entry point depends on `npm:bullmq`; the rest of the package has no
 * dependencies.
 *
 * @module
 */

export * from "./src/bullmq/bullmq_backend.ts";
export * from "./src/bullmq/bullmq_worker.ts";
