// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Keyed tasks on BullMQ, on Redis and on PostgreSQL, with two worker
// processes of 8-way concurrency: "skip" under a flood stores each key once
// while one waits; a burst of 20 "replace" adds with a delay runs once,
// with the last arguments, no earlier than the delay after the last add;
// "queue" runs duplicates one at a time, in the order they were added; a
// "replace" added while a duplicate runs waits behind it. What the stores
// deduplicated, the web side counts and tells onTaskEnd.

import assert from "node:assert/strict";
import { type TaskEndEvent, withBackgroundTasks } from "../../mod.ts";
import { bullmqBackend } from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { redisTest, startRedis } from "../_helpers/redis.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";
import { within } from "../_helpers/common.ts";
import { keyedTasks, REPLACE_DELAY } from "../_helpers/keyed_tasks.ts";
import {
  assertOneAtATime,
  ends,
  runsOf,
  spawnKeyedWorker,
  untilAll,
} from "../_helpers/keyed_workers.ts";

Deno.test({
  ...redisTest,
  name:
    "keyed tasks on BullMQ on Redis: skip, replace with a delay, queue, and replace behind a running duplicate, with two workers",
}, async (t) => {
  await using redis = await startRedis();
  await keyedModes(t, `redis://127.0.0.1:${redis.port}`);
});

Deno.test({
  ...postgresTest,
  name:
    "keyed tasks on BullMQ on PostgreSQL: skip, replace with a delay, queue, and replace behind a running duplicate, with two workers",
}, async (t) => {
  await using server = await startPostgres();
  await keyedModes(t, server.url);
});

/** A generous bound on waiting for workers, so that a hang fails the test. */
const BOUND = 60_000;

async function keyedModes(t: Deno.TestContext, url: string): Promise<void> {
  const queue = `test-${crypto.randomUUID()}`;
  const tasks = keyedTasks();
  const backend = bullmqBackend({
    connection: url,
    queue,
    tasks: Object.values(tasks),
  });
  const told: TaskEndEvent[] = [];
  type Add = [keyof typeof tasks, string, number, number?];
  const handler = withBackgroundTasks((request, _info, background) => {
    const adds: Add[] = JSON.parse(
      new URL(request.url).searchParams.get("adds")!,
    );
    for (const [name, key, seq, work] of adds) {
      if (work === undefined) background.addTask(tasks[name], key, seq);
      else background.addTask(tasks[name], key, seq, work);
    }
    return new Response("ok", { status: 202 });
  }, { backend, onTaskEnd: (event) => void told.push(event) });
  const add = async (...adds: Add[]) => {
    const { response } = await callHandler(
      handler,
      `/?adds=${encodeURIComponent(JSON.stringify(adds))}`,
    );
    assert.equal(response.status, 202);
  };
  const workers: ReturnType<typeof spawnKeyedWorker>[] = [];
  try {
    // Before the workers start, so that the first of each key waits.
    await t.step(
      "skip: a flood stores each key once while one waits",
      async () => {
        for (let seq = 0; seq < 10; seq++) {
          for (const key of ["s0", "s1", "s2", "s3"]) {
            await add(["laneSkip", key, seq]);
          }
        }
        assert.equal(handler.stats.handedOver, 4);
        assert.equal(handler.stats.deduplicated, 36);
        const skipped = told.filter((event) => event.name === "laneSkip");
        assert.equal(skipped.length, 36);
        assert.ok(
          skipped.every((event) =>
            event.outcome === "deduplicated" && event.attempt === 0 &&
            event.duration === 0 && event.request?.url.startsWith("http")
          ),
        );
      },
    );

    let lastAdd = 0;
    await t.step(
      "replace: a burst of 20 with a delay is stored once",
      async () => {
        for (let seq = 0; seq < 20; seq++) {
          if (seq === 19) lastAdd = Date.now();
          await add(["laneReplace", "r0", seq]);
        }
        assert.equal(handler.stats.handedOver, 4 + 20);
        // Each replaced task is told, not counted again: it was counted as
        // handed over when it was stored.
        assert.equal(handler.stats.deduplicated, 36);
        const replaced = told.filter((event) => event.name === "laneReplace");
        // Each waiting one, replaced by the next: its own request's task.
        assert.deepEqual(
          replaced.map((event) => [event.outcome, event.attempt]),
          Array.from({ length: 19 }, () => ["deduplicated", 0]),
        );
        assert.equal(new Set(replaced.map((event) => event.id)).size, 19);
      },
    );

    workers.push(
      spawnKeyedWorker(url, queue),
      spawnKeyedWorker(url, queue),
    );
    await within(
      Promise.all(workers.map((worker) => worker.ready)),
      BOUND,
      "the workers' start",
    );

    await t.step(
      "the waiting ones run: each skip key once, the burst once with its last arguments, after its delay",
      async () => {
        await within(
          untilAll(
            workers,
            (events) =>
              ends(events, "laneSkip") >= 4 &&
              ends(events, "laneReplace") >= 1,
          ),
          BOUND,
          "the waiting tasks",
        );
        const events = workers.flatMap((worker) => worker.events);
        for (const key of ["s0", "s1", "s2", "s3"]) {
          assert.deepEqual(
            runsOf(events, "laneSkip", key).map((run) => run.seq),
            [0],
          );
        }
        const [burst, ...more] = runsOf(events, "laneReplace", "r0");
        assert.deepEqual(more, []);
        assert.equal(burst!.seq, 19);
        assert.ok(
          burst!.start >= lastAdd + REPLACE_DELAY,
          `it started ${burst!.start - lastAdd} ms after the last add`,
        );
      },
    );

    await t.step(
      "queue: never two of a key at once, in the order added, across requests and workers",
      async () => {
        const keys = ["q0", "q1", "q2"];
        for (let i = 0; i < 4; i++) {
          for (const key of keys) {
            // Two of one key in one request, and the next ones in the next.
            await add(["laneQueue", key, 2 * i], ["laneQueue", key, 2 * i + 1]);
          }
        }
        await within(
          untilAll(workers, (events) => ends(events, "laneQueue") >= 24),
          BOUND,
          "the queued tasks",
        );
        const events = workers.flatMap((worker) => worker.events);
        const pids = workers.map((worker) => worker.child.pid);
        const spread: string[] = [];
        for (const key of keys) {
          const runs = runsOf(events, "laneQueue", key);
          const order = Array.from({ length: 8 }, (_, seq) => seq);
          assert.deepEqual(runs.map((run) => run.seq), order);
          assertOneAtATime(runs, key);
          const counts = pids.map((pid) =>
            runs.filter((run) => run.pid === pid).length
          );
          spread.push(`${key} ${counts.join("+")}`);
        }
        console.log(`runs per worker: ${spread.join(", ")}`);
      },
    );

    await t.step(
      "replace behind a running duplicate: the last one runs after it",
      async () => {
        const before = told.length;
        await add(["laneReplaceNow", "n0", 0, 1_000]);
        await within(
          untilAll(
            workers,
            (events) =>
              events.some((event) =>
                event.name === "laneReplaceNow" && event.event === "start"
              ),
          ),
          BOUND,
          "the first one's start",
        );
        for (let seq = 1; seq <= 5; seq++) {
          await add(["laneReplaceNow", "n0", seq]);
        }
        const added = Date.now();
        await within(
          untilAll(
            workers,
            (events) =>
              events.some((event) =>
                event.name === "laneReplaceNow" && event.seq === 5 &&
                event.event === "end"
              ),
          ),
          BOUND,
          "the last one",
        );
        const runs = runsOf(
          workers.flatMap((worker) => worker.events),
          "laneReplaceNow",
          "n0",
        );
        assertOneAtATime(runs, "n0");
        const deduplicated = told.slice(before).map((event) => event.index);
        assert.ok(
          told.slice(before).every((event) => event.name === "laneReplaceNow"),
        );
        // Each ran, in order, or was replaced while it waited: not both.
        const ran = runs.map((run) => run.seq);
        assert.deepEqual(ran, [...ran].sort((a, b) => a - b));
        assert.equal(ran.length + deduplicated.length, 6);
        // The first still ran as the others were added: they waited behind
        // it, each taking the place of the one before.
        if (runs[0]!.end! > added) assert.deepEqual(ran, [0, 5]);
      },
    );

    // Nothing more ran meanwhile: each task once.
    const events = workers.flatMap((worker) => worker.events);
    assert.equal(ends(events, "laneSkip"), 4);
    assert.equal(ends(events, "laneReplace"), 1);
  } finally {
    await Promise.all(workers.map((worker) => worker[Symbol.asyncDispose]()));
    await backend.close();
  }
}
