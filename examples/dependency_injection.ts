// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * The seed's dependency-injection program: a helper and the handler receive
 * the same `tasks`, so everything they add runs in one chain, in order. With
 * `?q=...` the helper logs `found query: ...`; then the handler logs
 * `message to EMAIL`; both are appended to `log.txt` after the response.
 *
 * Run it and try it:
 *
 *   deno run --allow-net=127.0.0.1 --allow-env=PORT --allow-write=log.txt examples/dependency_injection.ts
 *   curl -X POST "http://127.0.0.1:8000/send-notification/johndoe@example.com?q=hello"
 *
 * @module
 */

import { type BackgroundTasks, serve } from "../mod.ts";

function writeLog(message: string): void {
  Deno.writeTextFileSync("log.txt", message, { append: true });
}

/** FastAPI's `get_query` dependency: it adds a task of its own. */
function getQuery(request: Request, tasks: BackgroundTasks): string | null {
  const q = new URL(request.url).searchParams.get("q");
  if (q) tasks.addTask(writeLog, `found query: ${q}\n`);
  return q;
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
      `Try it: curl -X POST "http://${hostname}:${port}/send-notification/johndoe@example.com?q=hello"`,
    );
  },
}, (request, _info, tasks) => {
  const match = sendNotification.exec(request.url);
  if (request.method !== "POST" || match === null) {
    return new Response("Not Found", { status: 404 });
  }
  getQuery(request, tasks);
  const email = decodeURIComponent(match.pathname.groups["email"]!);
  tasks.addTask(writeLog, `message to ${email}\n`);
  return Response.json({ message: "Message sent" });
});
