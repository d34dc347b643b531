// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A worker killed (SIGKILL) while it runs a keyed task holds its key no
// longer than its lock: once BullMQ's stalled-job check takes the job back,
// the killed task runs again, once, on the other worker, and the next
// duplicate after it; never two at once. On Redis, and on PostgreSQL. Slow
// (seconds of BullMQ's stalled-job recovery); run by `deno task test:slow`.

import assert from "node:assert/strict";
import { withBackgroundTasks } from "../../mod.ts";
import { bullmqBackend } from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { redisTest, startRedis } from "../_helpers/redis.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";
import { within } from "../_helpers/common.ts";
import { keyedTasks } from "../_helpers/keyed_tasks.ts";
import {
  assertOneAtATime,
  runsOf,
  spawnKeyedWorker,
} from "../_helpers/keyed_workers.ts";

Deno.test({
  ...redisTest,
  name:
    "a worker killed while it runs a keyed task frees its key once its lock expires: the task runs again once, then the next duplicate",
}, async () => {
  await using redis = await startRedis();
  await killHolder(`redis://127.0.0.1:${redis.port}`);
});

Deno.test({
  ...postgresTest,
  name:
    "on PostgreSQL, a worker killed while it runs a keyed task frees its key once its lock expires: the task runs again once, then the next duplicate",
}, async () => {
  await using server = await startPostgres();
  await killHolder(server.url);
});

/** Milliseconds of the workers' lock, and between their stalled-job checks. */
const LOCK = 2_000;
const STALLED = 1_000;

async function killHolder(url: string): Promise<void> {
  const queue = `test-${crypto.randomUUID()}`;
  const tasks = keyedTasks();
  const backend = bullmqBackend({
    connection: url,
    queue,
    tasks: Object.values(tasks),
  });
  const handler = withBackgroundTasks((request, _info, background) => {
    const seq = Number(new URL(request.url).searchParams.get("seq"));
    background.addTask(tasks.laneQueue, "k", seq);
    return new Response("ok", { status: 202 });
  }, { backend });
  const env = { LOCK_MS: String(LOCK), STALLED_MS: String(STALLED) };
  // Its first attempt of seq 0 never ends: it is killed with the key.
  await using doomed = spawnKeyedWorker(url, queue, { ...env, HANG: "1" });
  await within(doomed.ready, 60_000, "the first worker's start");
  try {
    await callHandler(handler, "/?seq=0");
    await within(
      doomed.until((events) => events.some((event) => event.event === "start")),
      60_000,
      "the first attempt",
    );
    await using survivor = spawnKeyedWorker(url, queue, env);
    await within(survivor.ready, 60_000, "the second worker's start");
    await callHandler(handler, "/?seq=1");
    await callHandler(handler, "/?seq=2");
    doomed.child.kill("SIGKILL");
    await doomed.child.status;
    const killed = Date.now();
    await within(
      survivor.until((events) =>
        events.filter((event) => event.event === "end").length >= 3
      ),
      60_000,
      "the survivor's three tasks",
    );
    const runs = runsOf(survivor.events, "laneQueue", "k");
    // The killed task again, once, then the next ones, in order.
    assert.deepEqual(runs.map((run) => run.seq), [0, 1, 2]);
    assert.deepEqual(
      survivor.events.filter((event) => event.event === "start").map((
        event,
      ) => event.attempt),
      [1, 1, 1],
    );
    assertOneAtATime(runs, "k");
    // Nothing of the key ran while the killed worker held it.
    assert.ok(runs[0]!.start >= killed);
    assert.deepEqual(
      doomed.events.map((event) => [event.event, event.seq]),
      [["start", 0]],
    );
    console.log(
      `${new URL(url).protocol} the key was free ${
        Math.round(runs[0]!.start - killed)
      } ms after the kill (lock ${LOCK} ms, stalled check every ${STALLED} ms)`,
    );
  } finally {
    await backend.close();
  }
}
