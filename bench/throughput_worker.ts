// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A worker for bench/worker_throughput.ts: runs the trivial task, prints
// "ready", stops on SIGTERM.

import { bullmqWorker } from "../bullmq.ts";
import { trivial } from "./worker_throughput.ts";

const worker = bullmqWorker({
  connection: { host: "127.0.0.1", port: Number(Deno.env.get("REDIS_PORT")) },
  queue: Deno.env.get("QUEUE")!,
  tasks: [trivial],
  concurrency: Number(Deno.env.get("CONCURRENCY") ?? 8),
});
console.log("ready");
Deno.addSignalListener("SIGTERM", async () => {
  await worker.close();
  Deno.exit(0);
});
