// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Hono on Deno, both ways at once: the middleware types the request's tasks
 * at `c.var.backgroundTasks`, and serving the app with `serve()` while
 * passing the tasks as Hono's execution context gives Hono code a working
 * `c.executionCtx.waitUntil()`. Both add to the same chain, which `serve()`
 * drains on Ctrl-C or SIGTERM.
 *
 * Run it from the repository, whose deno.json maps "hono" to npm:
 *
 *   deno run --allow-net=127.0.0.1 --allow-env=PORT --allow-write=log.txt examples/hono.ts
 *   curl -X POST http://127.0.0.1:8000/send-notification/johndoe@example.com
 *
 * @module
 */

import { Hono } from "npm:hono@^4";
import { serve } from "../mod.ts";
import { backgroundTasks, type BackgroundTasksVariables } from "../hono.ts";

function writeNotification(email: string, message = ""): void {
  Deno.writeTextFileSync("log.txt", `notification for ${email}: ${message}\n`, {
    append: true,
  });
}

async function warmCache(email: string): Promise<void> {
  await Promise.resolve();
  Deno.writeTextFileSync("log.txt", `cache warmed for ${email}\n`, {
    append: true,
  });
}

const app = new Hono<{ Variables: BackgroundTasksVariables }>();
app.use(backgroundTasks());
app.post("/send-notification/:email", (c) => {
  const email = c.req.param("email");
  c.var.backgroundTasks.addTask(writeNotification, email, "some notification");
  // Code written for Workers keeps working. The promise has already
  // started: the chain and the shutdown only wait for it.
  c.executionCtx.waitUntil(warmCache(email));
  return c.json({ message: "Notification sent in the background" });
});

serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8000),
  onListen({ hostname, port }) {
    console.log(`Listening on http://${hostname}:${port}/`);
    console.log(
      `Try it: curl -X POST http://${hostname}:${port}/send-notification/johndoe@example.com`,
    );
  },
}, (request, info, tasks) => app.fetch(request, info, tasks));
