// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Observability: one log line per task attempt with its outcome and duration,
 * from the `onTaskEnd` hook, and `GET /stats` with the runner's counters.
 * `POST /orders` adds three tasks: one succeeds, one fails once and is retried,
 * one outlives its timeout.
 *
 *   deno run --allow-net=127.0.0.1 --allow-env=PORT examples/observability.ts
 *   curl -X POST http://127.0.0.1:8000/orders && sleep 1 && curl http://127.0.0.1:8000/stats
 *
 * @module
 */

import { type BackgroundTasksServer, defineTask, serve } from "../mod.ts";

async function sendConfirmation(order: number): Promise<void> {
  // Stands in for a call to a mail service.
  await new Promise((resolve) => setTimeout(resolve, 20 + order % 10));
}

const chargeCard = defineTask(({ attempt }, order: number) => {
  if (attempt === 1) throw new Error(`card network busy for order ${order}`);
}, { name: "chargeCard", retry: { maxAttempts: 3, minDelay: 50 } });

const updateAnalytics = defineTask(
  ({ signal }) =>
    new Promise((_resolve, reject) => {
      signal.addEventListener("abort", () => reject(signal.reason));
    }),
  { name: "updateAnalytics", timeout: 100 },
);

let nextOrder = 1;

const server: BackgroundTasksServer = serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8000),
  onListen({ hostname, port }) {
    console.log(`Listening on http://${hostname}:${port}/`);
    console.log(`Try it: curl -X POST http://${hostname}:${port}/orders`);
  },
  onTaskEnd({ name, attempt, outcome, duration, error, willRetry }) {
    const why = error instanceof Error ? ` (${error.message})` : "";
    const next = willRetry ? ", will retry" : "";
    console.log(
      `task ${name} attempt ${attempt}: ${outcome} in ${
        duration.toFixed(1)
      } ms${why}${next}`,
    );
  },
  // Each failure is already on its log line.
  onTaskError() {},
}, (request, _info, tasks) => {
  const { pathname } = new URL(request.url);
  if (request.method === "GET" && pathname === "/stats") {
    return Response.json(server.handler.stats);
  }
  if (request.method !== "POST" || pathname !== "/orders") {
    return new Response("Not Found", { status: 404 });
  }
  const order = nextOrder++;
  tasks.addTask(sendConfirmation, order);
  tasks.addTask(chargeCard, order);
  tasks.addTask(updateAnalytics);
  return Response.json({ order }, { status: 201 });
});
