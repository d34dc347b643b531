// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Durable tasks on Deno KV: `POST /orders/{id}` answers `202` and queues a
 * chain of three tasks in a local database file. Kill the server in the
 * middle of the chain, even with `kill -9`, start it again, and the chain
 * completes: the interrupted task runs again (at least once; its `id` stays
 * the same), then the next. Each task prints a line when it starts and ends.
 *
 *   deno run --unstable-kv --allow-net=127.0.0.1 --allow-env=PORT,KV_PATH,STEP_MS --allow-read=tasks.sqlite3 --allow-write=tasks.sqlite3 examples/durable_kv.ts
 *   curl -X POST http://127.0.0.1:8000/orders/42
 *
 * `--unstable-kv` for Deno KV; `--allow-net=127.0.0.1` to listen;
 * `--allow-env` for the three settings below; `--allow-read` and
 * `--allow-write` for the database file, and nothing else.
 *
 * `KV_PATH` names the database file (`tasks.sqlite3`: give the permissions
 * for the path you choose); `STEP_MS` is how long the middle task works
 * (2000).
 *
 * @module
 */

import { defineTask, serve } from "../mod.ts";
import { kvBackend } from "../kv.ts";

const stepMs = Number(Deno.env.get("STEP_MS") ?? 2000);

function log(event: string, name: string, id: string): void {
  console.log(`${event} ${name} ${id}`);
}

const reserveStock = defineTask(({ id, name }, _order: string) => {
  log("finished", name, id);
}, { name: "reserveStock" });

const chargeCard = defineTask(async ({ id, name, signal }, _order: string) => {
  log("started", name, id);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, stepMs);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
  log("finished", name, id);
}, { name: "chargeCard", retry: { maxAttempts: 3, minDelay: 500 } });

const shipOrder = defineTask(({ id, name }, _order: string) => {
  log("finished", name, id);
}, { name: "shipOrder" });

const kv = await Deno.openKv(Deno.env.get("KV_PATH") ?? "tasks.sqlite3");
const backend = kvBackend({ kv, tasks: [reserveStock, chargeCard, shipOrder] });
const order = new URLPattern({ pathname: "/orders/:id" });

serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8000),
  backend,
  onListen({ hostname, port }) {
    console.log(`Listening on http://${hostname}:${port}/`);
    console.log(`Try it: curl -X POST http://${hostname}:${port}/orders/42`);
  },
}, (request, _info, tasks) => {
  const match = order.exec(request.url);
  if (request.method !== "POST" || match === null) {
    return new Response("Not Found", { status: 404 });
  }
  const id = match.pathname.groups["id"]!;
  tasks.addTask(reserveStock, id);
  tasks.addTask(chargeCard, id);
  tasks.addTask(shipOrder, id);
  return Response.json({ order: id, status: "accepted" }, { status: 202 });
});
