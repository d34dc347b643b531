// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * A first run: serves the seed's `POST /send-notification/{email}` on a free
 * port, sends it one request and prints when the server had sent the
 * response, when the client read it and when each background task finished,
 * then the log file the task wrote. It works in a temporary directory and
 * removes it before exiting.
 *
 * The tasks start once the response has been sent. The client here runs in
 * the same process, so whether it reads the response before a quick task
 * finishes depends on the event loop; the tasks never wait for it.
 *
 *   deno task demo
 *   deno run --allow-net=127.0.0.1 --allow-read --allow-write examples/demo.ts
 *
 * `--allow-net=127.0.0.1` to serve and call itself; `--allow-read` and
 * `--allow-write` for the temporary directory, whose path the system picks.
 *
 * @module
 */

import { withBackgroundTasks } from "../mod.ts";

const directory = await Deno.makeTempDir({ prefix: "background_tasks_demo_" });
const logFile = `${directory}/log.txt`;
const timeline: [number, string][] = [];
const mark = (event: string) => timeline.push([performance.now(), event]);

function writeNotification(email: string, message = ""): void {
  Deno.writeTextFileSync(logFile, `notification for ${email}: ${message}`);
  mark("task writeNotification finished");
}

async function sendWelcomeEmail(email: string): Promise<void> {
  // Stands in for a mail server that takes a while to answer.
  await new Promise((resolve) => setTimeout(resolve, 200));
  mark(`task sendWelcomeEmail finished (a 200 ms call, for ${email})`);
}

const route = new URLPattern({ pathname: "/send-notification/:email" });
const handler = withBackgroundTasks((request, info, tasks) => {
  const match = route.exec(request.url);
  if (request.method !== "POST" || match === null) {
    return new Response("Not Found", { status: 404 });
  }
  // Deno settles `completed` once the response has been sent.
  info.completed.then(
    () => mark("response sent by the server"),
    () => mark("response not delivered"),
  );
  const email = decodeURIComponent(match.pathname.groups["email"]!);
  tasks.addTask(writeNotification, email, "some notification");
  tasks.addTask(sendWelcomeEmail, email);
  return Response.json({ message: "Notification sent in the background" });
});

const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  handler,
);
try {
  const url =
    `http://127.0.0.1:${server.addr.port}/send-notification/johndoe@example.com`;
  mark(`request sent: POST ${url}`);
  const response = await fetch(url, { method: "POST" });
  const body = await response.text();
  mark(`response received: ${response.status} ${body}`);

  await server.shutdown();
  await handler.drain();

  const [sentAt] = timeline[0]!;
  for (const [at, event] of timeline) {
    console.log(`${(at - sentAt).toFixed(1).padStart(7)} ms  ${event}`);
  }
  console.log(`\nlog.txt: ${await Deno.readTextFile(logFile)}`);
} finally {
  await Deno.remove(directory, { recursive: true });
}
console.log(
  "\nThe response was sent first; the tasks ran after it. Next: deno task example",
);
