// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Keyed tasks on a BullMQ worker in this process, on Redis and on
// PostgreSQL: a keyed task holds back neither its request's other tasks nor
// other keys; a retry keeps its place in its lane; a task that fails for
// good lets the next of its lane run; a replacement that took the place of a
// duplicate waiting to be fetched runs with its own arguments and id, and
// retry() finds it once failed; "skip" stores a task added while its
// duplicate runs, and not one added while that one waits; "replace" tasks
// added while a duplicate runs wait behind it, each taking the place of the
// one before; nothing of the
// lanes is left once their tasks ran; and on a Redis Cluster over three
// shards, each lane is whole in one. The two-process tests are in
// bullmq_keyed_test.ts.

import assert from "node:assert/strict";
import { Cluster, Redis } from "npm:ioredis@^5";
import pg from "npm:pg@^8";
import {
  defineTask,
  type TaskEndEvent,
  withBackgroundTasks,
} from "../../mod.ts";
import { bullmqBackend, bullmqWorker } from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { redisTest, startRedis } from "../_helpers/redis.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";
import { consoleLines, counter, within } from "../_helpers/common.ts";
import { shardPrefixes } from "../../src/bullmq/_shared.ts";
import {
  deploymentsAvailable,
  startRedisCluster,
} from "../_helpers/redis_deployments.ts";

Deno.test({
  ...redisTest,
  name:
    "keyed tasks on a BullMQ worker on Redis: lanes apart, retries in place, failures, replacements",
}, async (t) => {
  await using redis = await startRedis();
  await keyedDetails(t, `redis://127.0.0.1:${redis.port}`, async (queue) => {
    const client = new Redis(redis.port, "127.0.0.1");
    try {
      // The lanes' counter stays; no lane, and no deduplication key.
      return (await client.keys(`*:${queue}:*`)).filter((key) =>
        key.includes(":lane") || key.includes(":de:")
      ).sort();
    } finally {
      client.disconnect();
    }
  }, [`{bull:0:0}:QUEUE:lane-counter`]);
});

Deno.test({
  ...postgresTest,
  name:
    "keyed tasks on a BullMQ worker on PostgreSQL: lanes apart, retries in place, failures, replacements",
}, async (t) => {
  await using server = await startPostgres();
  await keyedDetails(t, server.url, async (queue) => {
    const client = new pg.Client({ connectionString: server.url });
    await client.connect();
    try {
      const { rows } = await client.query(
        `SELECT 'lane ' || job_id AS row FROM bullmq.background_tasks_lane WHERE queue = $1
          UNION ALL SELECT 'dedup ' || dedup_id FROM bullmq.dedup WHERE queue = $1`,
        [queue],
      );
      return rows.map((row: { row: string }) => row.row);
    } finally {
      await client.end();
    }
  }, []);
});

const BOUND = 30_000;

async function keyedDetails(
  t: Deno.TestContext,
  url: string,
  leftOf: (queue: string) => Promise<string[]>,
  expected: string[],
): Promise<void> {
  const queue = `test-${crypto.randomUUID()}`;
  const ran: string[] = [];
  const bStarted = Promise.withResolvers<void>();
  const plainRan = Promise.withResolvers<void>();
  const aDone = Promise.withResolvers<void>();
  const apart = defineTask(async (_context, key: string) => {
    if (key === "b") return bStarted.resolve();
    // Ends only once the request's other task and the other key ran.
    await Promise.all([bStarted.promise, plainRan.promise]);
    aDone.resolve();
  }, { name: "apart", key: (key) => key });
  const plain = defineTask(() => plainRan.resolve(), { name: "plain" });
  const flakyDone = Promise.withResolvers<void>();
  const flaky = defineTask(({ attempt }, _key: string, seq: number) => {
    ran.push(`flaky ${seq} attempt ${attempt}`);
    if (seq === 0 && attempt === 1) throw new Error("once");
    if (seq === 1) flakyDone.resolve();
  }, {
    name: "flaky",
    key: (key) => key,
    retry: { maxAttempts: 2, minDelay: 300, maxDelay: 300 },
  });
  const doomedDone = Promise.withResolvers<void>();
  const doomed = defineTask((_context, _key: string, seq: number) => {
    ran.push(`doomed ${seq}`);
    if (seq === 0) throw new Error("declined");
    doomedDone.resolve();
  }, { name: "doomed", key: (key) => key });
  let healthy = false;
  const replacedRan = Promise.withResolvers<string>();
  const nextRan = Promise.withResolvers<void>();
  const replacing = defineTask(({ id }, _key: string, seq: number) => {
    ran.push(`replacing ${seq}`);
    if (seq === 2) return nextRan.resolve();
    if (!healthy) throw new Error("not yet");
    replacedRan.resolve(id);
  }, { name: "replacing", key: (key) => key, onDuplicate: "replace" });
  const reported = Promise.withResolvers<string | undefined>();
  const skipStarted = Promise.withResolvers<void>();
  const skipGo = Promise.withResolvers<void>();
  const skipDone = Promise.withResolvers<void>();
  const skipping = defineTask(async (_context, _key: string, seq: number) => {
    ran.push(`skipping ${seq}`);
    if (seq === 0) {
      skipStarted.resolve();
      await skipGo.promise;
    } else skipDone.resolve();
  }, { name: "skipping", key: (key) => key, onDuplicate: "skip" });
  const behindStarted = Promise.withResolvers<void>();
  const behindGo = Promise.withResolvers<void>();
  const behindDone = Promise.withResolvers<void>();
  const behind = defineTask(async (_context, _key: string, seq: number) => {
    ran.push(`behind ${seq}`);
    if (seq === 0) {
      behindStarted.resolve();
      await behindGo.promise;
    } else behindDone.resolve();
  }, { name: "behind", key: (key) => key, onDuplicate: "replace" });
  const tasks = [apart, plain, flaky, doomed, replacing, skipping, behind];

  const backend = bullmqBackend({ connection: url, queue, tasks });
  const told: TaskEndEvent[] = [];
  const handler = withBackgroundTasks((request, _info, background) => {
    const step = new URL(request.url).pathname;
    if (step === "/apart") {
      background.addTask(apart, "a");
      background.addTask(plain);
      background.addTask(apart, "b");
    } else if (step === "/flaky") {
      background.addTask(flaky, "f", 0);
      background.addTask(flaky, "f", 1);
    } else if (step === "/doomed") {
      background.addTask(doomed, "d", 0);
      background.addTask(doomed, "d", 1);
    } else if (step.startsWith("/behind")) {
      background.addTask(behind, "b", Number(step.slice(7)));
    } else if (step.startsWith("/skip")) {
      background.addTask(skipping, "s", Number(step.slice(5)));
    } else {
      background.addTask(replacing, "r", Number(step.slice(1)));
    }
    return new Response("ok", { status: 202 });
  }, { backend, onTaskEnd: (event) => void told.push(event) });
  let worker: ReturnType<typeof bullmqWorker> | undefined;
  try {
    // Before the worker starts: the first waits to be fetched.
    await callHandler(handler, "/0");
    await callHandler(handler, "/1");
    assert.deepEqual(
      told.map(({ name, outcome, attempt }) => [name, outcome, attempt]),
      [["replacing", "deduplicated", 0]],
    );
    const replacedId = told[0]!.id;
    // Told, not counted again: it was counted as handed over when stored.
    assert.equal(handler.stats.deduplicated, 0);

    worker = bullmqWorker({
      connection: url,
      queue,
      tasks,
      concurrency: 4,
      lockDuration: 2_000,
      onTaskError: (_error, info) => reported.resolve(info.id),
    });

    await t.step(
      "a replacement that took the place of a duplicate waiting to be fetched runs with its arguments and its id, and retry() finds it once failed",
      async () => {
        const failedId = await within(reported.promise, BOUND, "the failure");
        // The next of the lane starts once the failed one is failed for good.
        await callHandler(handler, "/2");
        await within(nextRan.promise, BOUND, "the next task");
        assert.deepEqual(ran, ["replacing 1", "replacing 2"]);
        const failed = await backend.failed();
        assert.deepEqual(failed.map((task) => [task.id, task.args]), [
          [failedId, ["r", 1]],
        ]);
        // Its own id, in the job of the one it replaced.
        assert.notEqual(failedId, replacedId);
        assert.equal(
          failed[0]!.jobId,
          `${replacedId!.slice(0, replacedId!.lastIndexOf(":"))}.0`,
        );
        healthy = true;
        assert.equal(await backend.retry(failedId!), true);
        assert.equal(
          await within(replacedRan.promise, BOUND, "the retry"),
          failedId,
        );
      },
    );

    await t.step(
      "a keyed task holds back neither its request's other tasks nor other keys",
      async () => {
        await callHandler(handler, "/apart");
        await within(aDone.promise, BOUND, "the keyed task of key a");
      },
    );

    await t.step("a retry keeps its place in its lane", async () => {
      ran.length = 0;
      await callHandler(handler, "/flaky");
      await within(flakyDone.promise, BOUND, "the lane");
      assert.deepEqual(ran, [
        "flaky 0 attempt 1",
        "flaky 0 attempt 2",
        "flaky 1 attempt 1",
      ]);
    });

    await t.step(
      "a task that fails for good lets the next of its lane run",
      async () => {
        ran.length = 0;
        await callHandler(handler, "/doomed");
        await within(doomedDone.promise, BOUND, "the next task");
        assert.deepEqual(ran, ["doomed 0", "doomed 1"]);
      },
    );

    await t.step(
      "skip: a task added while its duplicate runs is stored, and one added while that one waits is not",
      async () => {
        ran.length = 0;
        const { handedOver, deduplicated } = handler.stats;
        await callHandler(handler, "/skip0");
        await within(skipStarted.promise, BOUND, "the first task");
        await callHandler(handler, "/skip1");
        await callHandler(handler, "/skip2");
        assert.equal(handler.stats.handedOver - handedOver, 2);
        assert.equal(handler.stats.deduplicated - deduplicated, 1);
        skipGo.resolve();
        await within(skipDone.promise, BOUND, "the second task");
        assert.deepEqual(ran, ["skipping 0", "skipping 1"]);
      },
    );

    await t.step(
      "replace: tasks added while a duplicate runs wait behind it, each taking the place of the one before",
      async () => {
        ran.length = 0;
        const before = told.length;
        await callHandler(handler, "/behind0");
        await within(behindStarted.promise, BOUND, "the first task");
        for (let seq = 1; seq <= 5; seq++) {
          await callHandler(handler, `/behind${seq}`);
        }
        assert.deepEqual(
          told.slice(before).map(({ name, outcome, request }) => [
            name,
            outcome,
            request?.url,
          ]),
          [1, 2, 3, 4].map((seq) => [
            "behind",
            "deduplicated",
            `http://localhost/behind${seq}`,
          ]),
        );
        behindGo.resolve();
        await within(behindDone.promise, BOUND, "the last task");
        assert.deepEqual(ran, ["behind 0", "behind 5"]);
      },
    );

    await t.step(
      "nothing of the lanes is left once their tasks ran",
      async () => {
        await worker!.close();
        await backend.close();
        assert.deepEqual(
          await leftOf(queue),
          expected.map((line) => line.replace("QUEUE", queue)),
        );
      },
    );
  } finally {
    await worker?.close();
    await backend.close();
  }
}

Deno.test({
  ...redisTest,
  ignore: !deploymentsAvailable,
  name:
    "keyed tasks on a three-node Redis Cluster, over three shards: each lane whole in one shard, in order, and a replacement's arguments win",
}, async () => {
  await using cluster = await startRedisCluster(3);
  const nodes = [{ host: "127.0.0.1", port: cluster.ports[0]! }];
  const connect = () =>
    new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: null } });
  const web = connect();
  const workers = connect();
  const queue = `test-${crypto.randomUUID()}`;
  const keys = ["k0", "k1", "k2", "k3", "k4", "k5"];
  const ran = new Map<string, number[]>();
  const latest = new Map<string, number[]>();
  const finished = counter(keys.length * 6);
  const step = defineTask((_context, key: string, seq: number) => {
    ran.set(key, [...ran.get(key) ?? [], seq]);
    finished.tick();
  }, { name: "step", key: (key) => key });
  const last = defineTask((_context, key: string, seq: number) => {
    latest.set(key, [...latest.get(key) ?? [], seq]);
    finished.tick();
  }, { name: "last", key: (key) => key, onDuplicate: "replace" });
  const tasks = [step, last];
  const backend = bullmqBackend({ connection: web, queue, shards: 3, tasks });
  let worker: ReturnType<typeof bullmqWorker> | undefined;
  try {
    const handler = withBackgroundTasks((request, _info, background) => {
      const key = new URL(request.url).pathname.slice(1);
      for (let seq = 0; seq < 5; seq++) background.addTask(step, key, seq);
      for (let seq = 0; seq < 3; seq++) background.addTask(last, key, seq);
      return new Response("ok");
    }, { backend });
    await Promise.all(keys.map((key) => callHandler(handler, `/${key}`)));
    // Before any worker: the first of each "replace" waits to be fetched,
    // and the two after it take its place.
    assert.equal(handler.stats.deduplicated, keys.length * 2);
    assert.equal(handler.stats.handedOver, keys.length * 6);
    // Each lane is whole in one shard (a sorted set under its hash tag).
    for (const key of keys) {
      for (const [name, stored] of [["step", 5], ["last", 1]] as const) {
        const sizes = await Promise.all(
          shardPrefixes("bull", 3).map((prefix) =>
            web.zcard(`${prefix}:${queue}:lane:${JSON.stringify([name, key])}`)
          ),
        );
        assert.deepEqual(sizes.sort(), [0, 0, stored], `${name} ${key}`);
      }
    }
    worker = bullmqWorker({
      connection: workers,
      queue,
      shards: 3,
      tasks,
      concurrency: 8,
    });
    await within(finished.done, BOUND, "the keyed tasks");
    for (const key of keys) {
      assert.deepEqual(ran.get(key), [0, 1, 2, 3, 4], key);
      assert.deepEqual(latest.get(key), [2], key);
    }
  } finally {
    await worker?.close();
    await backend.close();
    web.disconnect();
    workers.disconnect();
  }
});

Deno.test({
  ...redisTest,
  name:
    "a keyed task whose lane cannot be read waits, said in a line, with no attempt counted, and runs once it can be",
}, async () => {
  await using redis = await startRedis();
  const url = `redis://127.0.0.1:${redis.port}`;
  const queue = `test-${crypto.randomUUID()}`;
  const ran = Promise.withResolvers<number>();
  const task = defineTask(({ attempt }, _key: string) => ran.resolve(attempt), {
    name: "task",
    key: (key) => key,
  });
  const backend = bullmqBackend({ connection: url, queue, tasks: [task] });
  const client = new Redis(redis.port, "127.0.0.1");
  using output = consoleLines();
  let worker: ReturnType<typeof bullmqWorker> | undefined;
  try {
    const handler = withBackgroundTasks((_request, _info, background) => {
      background.addTask(task, "k");
      return new Response("ok");
    }, { backend });
    await callHandler(handler, "/");
    // A key of another type where the lane is: the worker's script fails.
    const lane = `{bull:0:0}:${queue}:lane:${JSON.stringify(["task", "k"])}`;
    assert.equal(await client.zcard(lane), 1);
    await client.set(lane, "not a sorted set");
    worker = bullmqWorker({ connection: url, queue, tasks: [task] });
    await within(
      output.seen(/^The BullMQ worker failed: .*WRONGTYPE/),
      BOUND,
      "the line",
    );
    await client.del(lane);
    assert.equal(await within(ran.promise, BOUND, "the task"), 1);
  } finally {
    await worker?.close();
    await backend.close();
    client.disconnect();
  }
});
