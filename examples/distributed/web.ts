// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * The web process of a distributed setup: `POST /signup/{email}` answers
 * `202` and enqueues three tasks on Redis or PostgreSQL; worker processes
 * (`deno task worker`, see worker.ts) run them, in order, on this machine or
 * others.
 *
 *   apt-get install redis-server   # or your system's package manager
 *   deno run --lock=deno.lock --allow-net=127.0.0.1 --allow-env examples/distributed/web.ts
 *   deno task worker               # in one or more other terminals
 *   curl -X POST http://127.0.0.1:8000/signup/ada@example.com
 *
 * `BULLMQ_URL` says where BullMQ keeps the queue, the same for the web
 * process and the workers: Redis (`redis://127.0.0.1:6379`, the default) or
 * PostgreSQL (`postgres://user:password@127.0.0.1:5432/app`: BullMQ's tables
 * are made in its `bullmq` schema at the first start). `QUEUE` names the
 * queue (`background-tasks`).
 *
 * @module
 */

import { serve } from "../../mod.ts";
import { bullmqBackend } from "../../bullmq.ts";
import { createAvatar, notifyTeam, sendWelcomeEmail, tasks } from "./tasks.ts";

const connection = Deno.env.get("BULLMQ_URL") ?? "redis://127.0.0.1:6379";
const backend = bullmqBackend({
  connection,
  tasks,
  queue: Deno.env.get("QUEUE") ?? "background-tasks",
});
const signup = new URLPattern({ pathname: "/signup/:email" });

// At a shutdown, serve() drains the chains into Redis or PostgreSQL, then
// closes the backend's connections.
serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8000),
  backend,
  onListen({ hostname, port }) {
    console.log(`Listening on http://${hostname}:${port}/`);
    console.log(
      `Try it: curl -X POST http://${hostname}:${port}/signup/ada@example.com`,
    );
  },
}, (request, _info, tasks) => {
  const match = signup.exec(request.url);
  if (request.method !== "POST" || match === null) {
    return new Response("Not Found", { status: 404 });
  }
  const email = decodeURIComponent(match.pathname.groups["email"]!);
  tasks.addTask(sendWelcomeEmail, email);
  tasks.addTask(createAvatar, email);
  tasks.addTask(notifyTeam, email);
  return Response.json({ email, status: "accepted" }, { status: 202 });
});
