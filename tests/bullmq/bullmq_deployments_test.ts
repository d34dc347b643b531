// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The BullMQ backend and workers against Redis as production runs it: TLS
// with a private certificate authority, a URL with a password and a
// database, an ioredis instance the caller owns, and a three-node Cluster
// with chains spread over shards.

import assert from "node:assert/strict";
import { Queue } from "npm:bullmq@^6";
import { Cluster, Redis } from "npm:ioredis@^5";
import {
  type DefinedTask,
  defineTask,
  type TaskBackend,
  withBackgroundTasks,
} from "../../mod.ts";
import {
  bullmqBackend,
  type BullmqConnection,
  bullmqWorker,
} from "../../bullmq.ts";
import { shardPrefixes } from "../../src/bullmq/_shared.ts";
import { callHandler } from "../../testing.ts";
import { counter } from "../_helpers/common.ts";
import { startRedisServer } from "../_helpers/redis.ts";
import {
  deploymentsAvailable,
  startRedisCluster,
  startTlsRedis,
} from "../_helpers/redis_deployments.ts";

// BullMQ keeps timers and connections that outlive a test by a moment.
const deploymentTest = {
  ignore: !deploymentsAvailable,
  sanitizeOps: false,
  sanitizeResources: false,
};

/**
 * A handler that adds `length` steps `(chain, index)` for the chain its
 * path names (`/chain7`), stored by `backend`.
 */
function chainsHandler(
  backend: TaskBackend,
  step: DefinedTask<[string, number]>,
  length: number,
) {
  return withBackgroundTasks((request, _info, tasks) => {
    const chain = new URL(request.url).pathname.slice(1);
    for (let index = 0; index < length; index++) {
      tasks.addTask(step, chain, index);
    }
    return new Response("ok");
  }, { backend });
}

/**
 * Stores `chains` chains of `length` tasks through a backend on `backend`
 * and runs them with a worker on `worker`; resolves with what ran, by
 * chain, in the order it ran.
 */
async function roundTrip(
  backendConnection: BullmqConnection,
  workerConnection: BullmqConnection,
  { chains = 3, length = 3, shards = 1 } = {},
): Promise<Map<string, number[]>> {
  const queue = `test-${crypto.randomUUID()}`;
  const ran = new Map<string, number[]>();
  const finished = counter(chains * length);
  const step = defineTask((_context, chain: string, index: number) => {
    ran.set(chain, [...ran.get(chain) ?? [], index]);
    finished.tick();
  }, { name: "step" });
  const backend = bullmqBackend({
    connection: backendConnection,
    queue,
    shards,
    tasks: [step],
  });
  const worker = bullmqWorker({
    connection: workerConnection,
    queue,
    shards,
    tasks: [step],
  });
  try {
    const handler = chainsHandler(backend, step, length);
    for (let chain = 0; chain < chains; chain++) {
      await (await callHandler(handler, `/chain${chain}`)).tasks;
    }
    await finished.done;
    return ran;
  } finally {
    await worker.close();
    await backend.close();
  }
}

function inOrder(ran: Map<string, number[]>, chains: number, length: number) {
  assert.equal(ran.size, chains);
  const order = Array.from({ length }, (_, index) => index);
  for (const [chain, indices] of ran) {
    assert.deepEqual(indices, order, `chain ${chain}`);
  }
}

Deno.test({
  ...deploymentTest,
  name: "bullmqBackend() and bullmqWorker() speak TLS, trusting a private CA",
}, async () => {
  await using redis = await startTlsRedis();
  const options = {
    host: "127.0.0.1",
    port: redis.port,
    tls: { ca: redis.ca },
  };
  inOrder(await roundTrip(options, options), 3, 3);
  const url = {
    url: `rediss://127.0.0.1:${redis.port}`,
    tls: { ca: redis.ca },
  };
  inOrder(await roundTrip(url, url), 3, 3);
});

Deno.test({
  ...deploymentTest,
  name:
    "a rediss:// URL alone connects when Deno trusts the CA (deno run --cert)",
}, async () => {
  await using redis = await startTlsRedis();
  const root = (path: string) =>
    JSON.stringify(new URL(`../../${path}`, import.meta.url).href);
  const program = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(
    program,
    `
    import { defineTask, withBackgroundTasks } from ${root("mod.ts")};
    import { bullmqBackend, bullmqWorker } from ${root("bullmq.ts")};
    import { callHandler } from ${root("testing.ts")};
    const connection = "rediss://127.0.0.1:${redis.port}";
    const done = Promise.withResolvers<string>();
    const hello = defineTask((_context, name: string) => done.resolve(name), { name: "hello" });
    const backend = bullmqBackend({ connection, tasks: [hello] });
    const worker = bullmqWorker({ connection, tasks: [hello] });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(hello, "over TLS");
      return new Response("ok");
    }, { backend });
    await (await callHandler(handler, "/")).tasks;
    console.log(await done.promise);
    await worker.close();
    await backend.close();
    `,
  );
  try {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", "--cert", redis.caFile, program],
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    assert.equal(new TextDecoder().decode(stdout).trim(), "over TLS");
  } finally {
    await Deno.remove(program);
  }
});

Deno.test({
  ...deploymentTest,
  name: "bullmqBackend() takes a redis:// URL with a password and a database",
}, async () => {
  await using redis = await startRedisServer({ password: "s3cret" });
  const url = `redis://:s3cret@127.0.0.1:${redis.port}/3`;
  inOrder(await roundTrip(url, url), 3, 3);
  // Everything went to database 3.
  const client = new Redis({
    host: "127.0.0.1",
    port: redis.port,
    password: "s3cret",
    db: 3,
  });
  const other = new Redis({
    host: "127.0.0.1",
    port: redis.port,
    password: "s3cret",
    db: 0,
  });
  try {
    assert.ok((await client.dbsize()) > 0);
    assert.equal(await other.dbsize(), 0);
  } finally {
    client.disconnect();
    other.disconnect();
  }
});

Deno.test({
  ...deploymentTest,
  name:
    "bullmqBackend() and bullmqWorker() leave open an ioredis instance the caller owns",
}, async () => {
  await using redis = await startRedisServer();
  const client = new Redis({
    host: "127.0.0.1",
    port: redis.port,
    maxRetriesPerRequest: null,
  });
  try {
    inOrder(await roundTrip(client, client), 3, 3);
    assert.equal(client.status, "ready");
    assert.equal(await client.ping(), "PONG");
  } finally {
    client.disconnect();
  }
});

Deno.test({
  ...deploymentTest,
  name:
    "on a three-node Cluster, chains spread over the nodes by shard and each runs whole, in order, once",
}, async () => {
  await using cluster = await startRedisCluster(3);
  const nodes = [{ host: "127.0.0.1", port: cluster.ports[0]! }];
  const connect = () =>
    new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: null } });
  const web = connect();
  const workers = connect();
  const queue = `test-${crypto.randomUUID()}`;
  const chains = 60;
  const length = 3;
  const ran = new Map<string, number[]>();
  const runs = new Map<string, number>();
  const finished = counter(chains * length);
  const step = defineTask(({ id }, chain: string, index: number) => {
    ran.set(chain, [...ran.get(chain) ?? [], index]);
    runs.set(id, (runs.get(id) ?? 0) + 1);
    finished.tick();
  }, { name: "step" });
  const backend = bullmqBackend({
    connection: web,
    queue,
    shards: 3,
    tasks: [step],
  });
  try {
    const handler = chainsHandler(backend, step, length);
    await Promise.all(
      Array.from({ length: chains }, async (_, chain) => {
        await (await callHandler(handler, `/chain${chain}`)).tasks;
      }),
    );
    // Stored, none run yet: every node holds some, each shard a third.
    const perNode = await cluster.keysPerNode();
    const perShard = await Promise.all(
      shardPrefixes("bull", 3).map(async (prefix) => {
        const shard = new Queue(queue, { connection: web, prefix });
        const counts = await shard.getJobCounts("wait", "waiting-children");
        await shard.close();
        return (counts["wait"] ?? 0) + (counts["waiting-children"] ?? 0);
      }),
    );
    console.log(
      `keys per node: ${[...perNode.values()].join(", ")}; jobs per shard: ${
        perShard.join(", ")
      }`,
    );
    assert.ok([...perNode.values()].every((keys) => keys > 0));
    assert.deepEqual(perShard, [60, 60, 60]);

    const worker = bullmqWorker({
      connection: workers,
      queue,
      shards: 3,
      tasks: [step],
      concurrency: 4,
    });
    try {
      await finished.done;
    } finally {
      await worker.close();
    }
    inOrder(ran, chains, length);
    assert.ok([...runs.values()].every((count) => count === 1));
  } finally {
    await backend.close();
    web.disconnect();
    workers.disconnect();
  }
});
