// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The BullMQ backend on PostgreSQL beside what a user would write instead
// (an awaited `queue.add()` per request on BullMQ's own PostgreSQL backend),
// and the same two on Redis, for one sitting: one variant per process, in
// the manner of ../shared/bench/durable_server.ts (which cannot run its
// `queue.add()` variants on BullMQ 6: it imports bullmq alone, and BullMQ 6
// loads ioredis only if something else imports it).
// Usage, from the project's root (bench/durable_pg.sh runs it):
//   DATABASE_URL=postgres://… REDIS_PORT=… deno run -A bench/durable_pg_server.ts <variant> <port> <controlPort>
// The control port answers once everything accepted is stored, with the
// milliseconds that took.

import "npm:ioredis@^5";
import "npm:pg@^8";
import { createPostgresBackend, Queue, withBackend } from "npm:bullmq@^6";
import { defineTask, withBackgroundTasks } from "../mod.ts";
import { bullmqBackend } from "../bullmq.ts";

const [name, port, controlPort] = Deno.args;
const databaseUrl = Deno.env.get("DATABASE_URL") ?? "";
const redisPort = Number(Deno.env.get("REDIS_PORT") ?? 6379);
const trivial = defineTask((_context, _n: number) => {}, { name: "trivial" });
const queueName = `peer-${crypto.randomUUID()}`;

let handler: Deno.ServeHandler & { drain?: () => Promise<unknown> };
if (name === "bullmq backend on postgres") {
  const backend = bullmqBackend({
    connection: databaseUrl,
    queue: queueName,
    tasks: [trivial],
  });
  handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(trivial, 1);
    return new Response("ok");
  }, { backend });
} else if (name === "raw queue.add awaited on postgres") {
  const { Queue: PostgresQueue } = withBackend(createPostgresBackend);
  const queue = new PostgresQueue(queueName, {
    connection: { connectionString: databaseUrl, migrate: true },
  });
  await queue.waitUntilReady();
  handler = async () => {
    await queue.add("trivial", { n: 1 });
    return new Response("ok");
  };
} else if (name === "bullmq backend") {
  const backend = bullmqBackend({
    connection: { port: redisPort },
    queue: queueName,
    tasks: [trivial],
  });
  handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(trivial, 1);
    return new Response("ok");
  }, { backend });
} else if (name === "raw queue.add awaited") {
  const queue = new Queue(queueName, { connection: { port: redisPort } });
  await queue.waitUntilReady();
  handler = async () => {
    await queue.add("trivial", { n: 1 });
    return new Response("ok");
  };
} else if (name === "raw queue.add awaited, stored once") {
  // What a user writes for the guarantee the backend gives (a store sent
  // again after a lost answer adds nothing): a job id of the request's own,
  // BullMQ's deduplication by it until the add is answered, then its key
  // deleted without waiting (24 hours at most otherwise).
  const queue = new Queue(queueName, { connection: { port: redisPort } });
  await queue.waitUntilReady();
  handler = async () => {
    const id = crypto.randomUUID();
    await queue.add("trivial", { n: 1 }, {
      jobId: id,
      removeOnComplete: true,
      deduplication: { id, ttl: 86_400_000 },
    });
    queue.removeDeduplicationKey(id).catch(() => {});
    return new Response("ok");
  };
} else {
  console.error(`unknown variant ${name}`);
  Deno.exit(2);
}
Deno.serve({
  hostname: "127.0.0.1",
  port: Number(port),
  onListen: () => console.log("listening"),
}, handler);
Deno.serve(
  { hostname: "127.0.0.1", port: Number(controlPort), onListen: () => {} },
  async () => {
    const t0 = performance.now();
    if (handler.drain) await handler.drain();
    return new Response(String(performance.now() - t0));
  },
);
