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
 * const worker = bullmqWorker({ connection: { port: 6379 }, tasks: [sendEmail] });
 * Deno.addSignalListener("SIGTERM", () => worker.close());
 * ```
 *
 * This entry point depends on `npm:bullmq`; the rest of the package has no
 * dependencies.
 *
 * @module
 */

export * from "./src/bullmq_backend.ts";
export * from "./src/bullmq_worker.ts";
