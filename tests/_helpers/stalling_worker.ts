// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * A worker for the takeover test: it runs the example's tasks like
 * `examples/distributed/worker.ts` and prints the same lines, but every
 * attempt after the first `STALL_AFTER` hangs until aborted. Killed once it
 * has printed `started` for such an attempt, it is certain to die with tasks
 * in hand, however fast or slow the machine is.
 *
 * @module
 */

import { defineTask, type DefineTaskOptions } from "../../mod.ts";
import { bullmqWorker } from "../../bullmq.ts";
import { tasks } from "../../examples/distributed/tasks.ts";

const env = (name: string) => Number(Deno.env.get(name));
const stallAfter = env("STALL_AFTER");
let started = 0;

const stalling = tasks.map((task) => {
  const options: DefineTaskOptions = { name: task.name };
  if (task.timeout !== undefined) options.timeout = task.timeout;
  if (task.retry !== undefined) options.retry = task.retry;
  return defineTask((context, email: string) => {
    if (++started <= stallAfter) return task.fn(context, email);
    return new Promise((_, reject) => {
      context.signal.addEventListener(
        "abort",
        () => reject(context.signal.reason),
      );
    });
  }, options);
});

const worker = bullmqWorker({
  connection: Deno.env.get("BULLMQ_URL")!,
  tasks: stalling,
  queue: Deno.env.get("QUEUE")!,
  concurrency: env("CONCURRENCY"),
  lockDuration: env("LOCK_MS"),
  stalledInterval: env("STALLED_MS"),
  // The lines of examples/distributed/worker.ts.
  onTaskStart({ name, id, attempt }) {
    console.log(`started ${name} ${id} attempt ${attempt}`);
  },
  onTaskEnd({ name, id, attempt, outcome, duration }) {
    const end = performance.timeOrigin + performance.now();
    console.log(
      `${outcome} ${name} ${id} attempt ${attempt} ${
        (end - duration).toFixed(3)
      } ${end.toFixed(3)}`,
    );
  },
});
console.log(`worker ${Deno.pid} ready`);
Deno.addSignalListener("SIGTERM", async () => {
  await worker.close();
  Deno.exit(0);
});
