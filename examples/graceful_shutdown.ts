// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Graceful shutdown: `POST /jobs/{id}` answers `202` at once and adds a task
 * that works for about 200 ms, then appends `job ID done` to `jobs.log`.
 * Stop the server (Ctrl-C, or `kill -TERM`) while jobs run: it stops
 * accepting, finishes the responses in flight and the jobs, prints what it
 * drained, and exits 0. When the jobs outlast `SHUTDOWN_TIMEOUT` milliseconds
 * (10 s by default), their signals are aborted, the abandoned tasks are named,
 * and the exit code is 1.
 *
 *   deno run --allow-net=127.0.0.1 --allow-env=PORT,SHUTDOWN_TIMEOUT --allow-write=jobs.log examples/graceful_shutdown.ts
 *   for i in 1 2 3; do curl -X POST http://127.0.0.1:8000/jobs/$i; done; kill -TERM <pid>
 *
 * @module
 */

import { defineTask, serve } from "../mod.ts";

const processJob = defineTask(async ({ signal }, id: string) => {
  // Stands in for real work that honours cancellation.
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, 200);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
  await Deno.writeTextFile("jobs.log", `job ${id} done\n`, { append: true });
}, { name: "processJob" });

const job = new URLPattern({ pathname: "/jobs/:id" });

serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8000),
  shutdownTimeout: Number(Deno.env.get("SHUTDOWN_TIMEOUT") ?? 10_000),
  onListen({ hostname, port }) {
    console.log(
      `Listening on http://${hostname}:${port}/ as process ${Deno.pid}`,
    );
    console.log(`Try it: curl -X POST http://${hostname}:${port}/jobs/1`);
  },
}, (request, _info, tasks) => {
  const match = job.exec(request.url);
  if (request.method !== "POST" || match === null) {
    return new Response("Not Found", { status: 404 });
  }
  tasks.addTask(processJob, match.pathname.groups["id"]!);
  return new Response("Accepted", { status: 202 });
});
