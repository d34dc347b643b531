// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * In process and durable side by side, in one `serve()`: `POST /signup`
 * answers `201` and sends a welcome mail from this process after the
 * response (`tasks.inProcess`: a crash may lose it, which a welcome mail can
 * afford), while `POST /orders/{id}` answers `202` once its chain is stored
 * in Deno KV, so that charging the card and shipping survive a `kill -9`.
 * One shutdown waits for both, and says so in one line. Each task prints a
 * line when it has run.
 *
 *   deno run --unstable-kv --allow-net=127.0.0.1 --allow-env=PORT,KV_PATH --allow-read=tasks.sqlite3 --allow-write=tasks.sqlite3 examples/in_process_and_durable.ts
 *   curl -X POST -d ada@example.com http://127.0.0.1:8000/signup
 *   curl -X POST http://127.0.0.1:8000/orders/42
 *
 * `--unstable-kv` for Deno KV; `--allow-net=127.0.0.1` to listen;
 * `--allow-env` for the port and `KV_PATH`, which names the database file
 * (`tasks.sqlite3`: give the permissions for the path you choose);
 * `--allow-read` and `--allow-write` for that file, and nothing else.
 *
 * @module
 */

import { defineTask, serve } from "../mod.ts";
import { kvBackend } from "../kv.ts";

// A plain function: it runs in this process, so it needs no name.
async function sendWelcomeEmail(email: string): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 10));
  console.log(`welcomed ${email}`);
}

// Tasks the backend runs are defined, named, and listed in it.
const chargeCard = defineTask(({ id }, order: string) => {
  console.log(`charged order ${order} (${id})`);
}, { name: "chargeCard", retry: { maxAttempts: 5 } });

const shipOrder = defineTask(({ id }, order: string) => {
  console.log(`shipped order ${order} (${id})`);
}, { name: "shipOrder" });

const kv = await Deno.openKv(Deno.env.get("KV_PATH") ?? "tasks.sqlite3");
const order = new URLPattern({ pathname: "/orders/:id" });

serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8000),
  backend: kvBackend({ kv, tasks: [chargeCard, shipOrder] }),
  onListen({ hostname, port }) {
    console.log(`Listening on http://${hostname}:${port}/`);
    console.log(
      `Try it: curl -X POST -d ada@example.com http://${hostname}:${port}/signup`,
    );
  },
}, async (request, _info, tasks) => {
  if (request.method !== "POST") {
    return new Response("Not Found", { status: 404 });
  }
  if (new URL(request.url).pathname === "/signup") {
    const email = await request.text();
    // `tasks.addTask(sendWelcomeEmail, email)` would not compile: with a
    // backend, addTask() takes the tasks the backend runs.
    tasks.inProcess.addTask(sendWelcomeEmail, email);
    return Response.json({ email, status: "signed up" }, { status: 201 });
  }
  const match = order.exec(request.url);
  if (match === null) return new Response("Not Found", { status: 404 });
  const id = match.pathname.groups["id"]!;
  tasks.addTask(chargeCard, id);
  tasks.addTask(shipOrder, id);
  return Response.json({ order: id, status: "accepted" }, { status: 202 });
});
