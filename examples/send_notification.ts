// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * The seed's first program: `POST /send-notification/{email}` answers at once
 * and writes the notification to `log.txt` after the response has been sent.
 *
 * Run it and try it:
 *
 *   deno run --allow-net=127.0.0.1 --allow-env=PORT --allow-write=log.txt examples/send_notification.ts
 *   curl -X POST http://127.0.0.1:8000/send-notification/johndoe@example.com
 *
 * Set `PORT` to listen elsewhere than 8000 (0 picks a free port). Ctrl-C or
 * SIGTERM stops accepting requests and lets pending tasks finish first.
 *
 * @module
 */

import { serve } from "../mod.ts";

function writeNotification(email: string, message = ""): void {
  Deno.writeTextFileSync("log.txt", `notification for ${email}: ${message}`);
}

const sendNotification = new URLPattern({
  pathname: "/send-notification/:email",
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
}, (request, _info, tasks) => {
  const match = sendNotification.exec(request.url);
  if (request.method !== "POST" || match === null) {
    return new Response("Not Found", { status: 404 });
  }
  const email = decodeURIComponent(match.pathname.groups["email"]!);
  tasks.addTask(writeNotification, email, "some notification");
  return Response.json({ message: "Notification sent in the background" });
});
