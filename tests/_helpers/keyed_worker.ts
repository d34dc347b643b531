// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * A worker process for the tests of keyed tasks: runs the tasks of
 * keyed_tasks.ts, which print a line as each attempt starts and ends.
 * `BULLMQ_URL`, `QUEUE`, `CONCURRENCY`, `LOCK_MS`, `STALLED_MS`, `WORK_MS`,
 * and `HANG` (set: the first "queue" task of each key never ends) tune it.
 *
 * @module
 */

import { bullmqWorker } from "../../bullmq.ts";
import { keyedTasks } from "./keyed_tasks.ts";

const env = (name: string, fallback: number) =>
  Number(Deno.env.get(name) ?? fallback);

const tasks = keyedTasks({
  work: env("WORK_MS", 0),
  hang: Deno.env.get("HANG") !== undefined,
});
const worker = bullmqWorker({
  connection: Deno.env.get("BULLMQ_URL")!,
  tasks: Object.values(tasks),
  queue: Deno.env.get("QUEUE")!,
  concurrency: env("CONCURRENCY", 8),
  lockDuration: env("LOCK_MS", 30_000),
  stalledInterval: env("STALLED_MS", 30_000),
});
console.log(JSON.stringify({ event: "ready", pid: Deno.pid }));
Deno.addSignalListener("SIGTERM", async () => {
  await worker.close();
  Deno.exit(0);
});
