// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Keyed tasks: every `PUT /users/{id}` saves a profile and adds
 * `reindex(id)`, keyed by the user, `onDuplicate: "replace"`, with a delay of
 * 1 s. A burst of updates to one user collapses into one reindex, with the
 * last version, once the burst has been quiet for the delay; updates to
 * another user run in their own lane, alongside. Each response says which
 * version it saved; each reindex prints one line. `GET /stats` shows how many
 * were deduplicated.
 *
 *   deno run --allow-net=127.0.0.1 --allow-env=PORT examples/keyed_burst.ts
 *   for v in $(seq 1 20); do curl -s -X PUT http://127.0.0.1:8000/users/u42; done
 *
 * @module
 */

import { type BackgroundTasksServer, defineTask, serve } from "../mod.ts";

const versions = new Map<string, number>();

const reindex = defineTask(
  async (_context, userId: string, version: number) => {
    // Stands in for rebuilding the user's search entry.
    await new Promise((resolve) => setTimeout(resolve, 50));
    console.log(`reindexed ${userId} at version ${version}`);
  },
  {
    name: "reindex",
    key: (userId) => userId,
    onDuplicate: "replace",
    delay: 1_000,
  },
);

const server: BackgroundTasksServer = serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8000),
  onListen({ hostname, port }) {
    console.log(`Listening on http://${hostname}:${port}/`);
    console.log(`Try it: curl -X PUT http://${hostname}:${port}/users/u42`);
  },
}, (request, _info, tasks) => {
  const { pathname } = new URL(request.url);
  if (request.method === "GET" && pathname === "/stats") {
    const { succeeded, deduplicated, pending } = server.handler.stats;
    return Response.json({ succeeded, deduplicated, pending });
  }
  const userId = /^\/users\/([^/]+)$/.exec(pathname)?.[1];
  if (request.method !== "PUT" || userId === undefined) {
    return new Response("Not Found", { status: 404 });
  }
  const version = (versions.get(userId) ?? 0) + 1;
  versions.set(userId, version);
  tasks.addTask(reindex, userId, version);
  return Response.json({ userId, version });
});
