// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// With a durable backend, a response promises that its chain is stored: a
// process killed the moment its clients got their answers loses nothing.

import assert from "node:assert/strict";
import { Queue } from "npm:bullmq@^6";
import { shardPrefixes } from "../../src/bullmq/_shared.ts";
import { startScript } from "../_helpers/process.ts";
import { redisAvailable, startRedis } from "../_helpers/redis.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";
import { bullmqWorker } from "../../bullmq.ts";
import { defineTask } from "../../mod.ts";

const CHAINS = 10;

const server = (backend: string) => `
  import { defineTask, serve } from "@afterward/background-tasks";
  import { kvBackend } from "@afterward/background-tasks/kv";
  import { bullmqBackend } from "@afterward/background-tasks/bullmq";
  const step = defineTask(() => {}, { name: "step" });
  const server = serve({
    hostname: "127.0.0.1", port: 0, shutdownSignals: [], onListen() {},
    backend: ${backend},
  }, (_request, _info, tasks) => {
    tasks.addTask(step);
    return new Response("accepted", { status: 202 });
  });
  console.log(server.addr.port);
`;

/** Sends the requests at once, and kills the server as soon as all are answered. */
async function killAfterAnswers(
  script: Awaited<ReturnType<typeof startScript>>,
): Promise<void> {
  const url = `http://127.0.0.1:${await script.nextLine()}`;
  const statuses = await Promise.all(
    Array.from({ length: CHAINS }, async () => {
      const response = await fetch(url, { method: "POST" });
      await response.body?.cancel();
      return response.status;
    }),
  );
  script.child.kill("SIGKILL");
  assert.deepEqual(statuses, Array(CHAINS).fill(202));
  await script.exit();
}

Deno.test("kvBackend(): every chain whose 202 went out is stored when the process is killed at once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "background_tasks_durable_" });
  const path = `${dir}/tasks.sqlite3`;
  try {
    {
      await using script = await startScript(
        server(`kvBackend({
          kv: await Deno.openKv(${JSON.stringify(path)}),
          tasks: [step],
          listen: false,
        })`),
        [
          "--unstable-kv",
          "--allow-net=127.0.0.1",
          "--allow-write",
          "--allow-env",
        ],
      );
      await killAfterAnswers(script);
    }
    const kv = await Deno.openKv(path);
    try {
      const stored = await Array.fromAsync(
        kv.list({ prefix: ["background-tasks", "chains"] }),
      );
      assert.equal(stored.length, CHAINS);
    } finally {
      kv.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "bullmqBackend(): every chain whose 202 went out is stored when the process is killed at once",
  ignore: !redisAvailable,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await using redis = await startRedis();
  const queueName = `test-${crypto.randomUUID()}`;
  {
    await using script = await startScript(
      server(`bullmqBackend({
        connection: { host: "127.0.0.1", port: ${redis.port} },
        queue: ${JSON.stringify(queueName)},
        tasks: [step],
      })`),
      ["--allow-net=127.0.0.1", "--allow-env", "--allow-sys"],
    );
    await killAfterAnswers(script);
  }
  const queue = new Queue(queueName, {
    connection: { host: "127.0.0.1", port: redis.port },
    prefix: shardPrefixes("bull", 1)[0]!,
  });
  try {
    assert.equal(await queue.count(), CHAINS);
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
  }
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() on PostgreSQL: every chain whose 202 went out runs, though the process was killed at once",
}, async () => {
  await using postgres = await startPostgres();
  const queueName = `test-${crypto.randomUUID()}`;
  {
    await using script = await startScript(
      server(`bullmqBackend({
        connection: ${JSON.stringify(postgres.url)},
        queue: ${JSON.stringify(queueName)},
        tasks: [step],
      })`),
      ["--allow-net=127.0.0.1", "--allow-env", "--allow-sys"],
    );
    await killAfterAnswers(script);
  }
  // A worker started afterwards runs every chain the dead process answered
  // for.
  let ran = 0;
  const all = Promise.withResolvers<void>();
  const step = defineTask(() => {
    if (++ran === CHAINS) all.resolve();
  }, { name: "step" });
  const worker = bullmqWorker({
    connection: postgres.url,
    queue: queueName,
    tasks: [step],
  });
  try {
    await all.promise;
  } finally {
    await worker.close();
  }
  assert.equal(ran, CHAINS);
});
