// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * A worker process of a distributed setup: runs the tasks the web processes
 * enqueue on Redis or PostgreSQL, `CONCURRENCY` at a time (8), and prints a
 * line when an attempt starts and when it ends. Start as many as you like, on
 * as many machines; on SIGTERM or Ctrl-C each finishes its running tasks and
 * exits. If one dies, another takes its tasks over once their lock expires.
 *
 *   deno task worker
 *   deno run --lock=deno.lock --allow-net=127.0.0.1 --allow-env examples/distributed/worker.ts
 *
 * `BULLMQ_URL` (as the web process has it: `redis://127.0.0.1:6379` by
 * default, or a `postgres://` URL), `QUEUE`, `CONCURRENCY`, `LOCK_MS` (30000)
 * and `STALLED_MS` (30000) tune it.
 *
 * @module
 */

import { bullmqWorker } from "../../bullmq.ts";
import { tasks } from "./tasks.ts";

const env = (name: string, fallback: number) =>
  Number(Deno.env.get(name) ?? fallback);

const worker = bullmqWorker({
  connection: Deno.env.get("BULLMQ_URL") ?? "redis://127.0.0.1:6379",
  tasks,
  queue: Deno.env.get("QUEUE") ?? "background-tasks",
  concurrency: env("CONCURRENCY", 8),
  lockDuration: env("LOCK_MS", 30_000),
  stalledInterval: env("STALLED_MS", 30_000),
  onTaskStart({ name, id, attempt }) {
    console.log(`started ${name} ${id} attempt ${attempt}`);
  },
  onTaskEnd({ name, id, attempt, outcome, duration }) {
    // Epoch milliseconds, to the microsecond: comparable across workers.
    const end = performance.timeOrigin + performance.now();
    console.log(
      `${outcome} ${name} ${id} attempt ${attempt} ${
        (end - duration).toFixed(3)
      } ${end.toFixed(3)}`,
    );
  },
});
console.log(`worker ${Deno.pid} ready`);

const stop = async () => {
  await worker.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", stop);
if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", stop);
