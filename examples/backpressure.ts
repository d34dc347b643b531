// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Backpressure: at most 2 reports are built at once and at most 4 wait or
 * run; beyond that, `addTask()` throws a `QueueFullError`, which `serve()`
 * answers with `503 Service Unavailable` and `Retry-After: 5` instead of
 * queueing without bound (catch it in the handler to answer otherwise).
 *
 *   deno run --allow-net=127.0.0.1 --allow-env=PORT examples/backpressure.ts
 *   for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{http_code}\n" -X POST http://127.0.0.1:8000/reports & done
 *
 * @module
 */

import { serve } from "../mod.ts";

async function buildReport(id: number): Promise<void> {
  // Stands in for a slow query and a PDF render.
  await new Promise((resolve) => setTimeout(resolve, 300));
  console.log(`report ${id} built`);
}

let nextId = 1;

serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8000),
  concurrency: 2,
  maxPending: 4,
  onListen({ hostname, port }) {
    console.log(`Listening on http://${hostname}:${port}/`);
    console.log(`Try it: curl -i -X POST http://${hostname}:${port}/reports`);
  },
}, (request, _info, tasks) => {
  if (
    request.method !== "POST" || new URL(request.url).pathname !== "/reports"
  ) {
    return new Response("Not Found", { status: 404 });
  }
  const id = nextId++;
  tasks.addTask(buildReport, id);
  return Response.json({ id }, { status: 202 });
});
