// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * `deno serve`: the wrapped handler is the default export's `fetch`. On
 * SIGTERM, `deno serve` stops accepting and finishes the responses in
 * flight; the process then lives until the pending tasks are done, as their
 * timers and I/O keep it alive, and exits 0. (For a deadline and a report of
 * what was abandoned, use `serve()` instead.)
 *
 *   deno serve --host 127.0.0.1 --port 8000 --allow-write=log.txt examples/deno_serve.ts
 *   curl -X POST http://127.0.0.1:8000/send-notification/johndoe@example.com
 *
 * @module
 */

import { withBackgroundTasks } from "../mod.ts";

async function writeNotification(email: string, message = ""): Promise<void> {
  // Stands in for a mail server that takes a while to answer.
  await new Promise((resolve) => setTimeout(resolve, 200));
  await Deno.writeTextFile(
    "log.txt",
    `notification for ${email}: ${message}\n`,
    {
      append: true,
    },
  );
}

const sendNotification = new URLPattern({
  pathname: "/send-notification/:email",
});

export default {
  fetch: withBackgroundTasks((request, _info, tasks) => {
    const match = sendNotification.exec(request.url);
    if (request.method !== "POST" || match === null) {
      return new Response("Not Found", { status: 404 });
    }
    const email = decodeURIComponent(match.pathname.groups["email"]!);
    tasks.addTask(writeNotification, email, "some notification");
    return Response.json({ message: "Notification sent in the background" });
  }),
} satisfies Deno.ServeDefaultExport;
