// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Two worker processes run 2,000 chains while one of them is killed: every
// chain completes, in order; on Redis, and on PostgreSQL. Slow (seconds of
// BullMQ's stalled-job recovery); run by `deno task test:slow`, not the
// everyday `deno task test`.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { withBackgroundTasks } from "../../mod.ts";
import { bullmqBackend } from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { redisTest, startRedis } from "../_helpers/redis.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";
import {
  createAvatar,
  notifyTeam,
  sendWelcomeEmail,
  tasks as exampleTasks,
} from "../../examples/distributed/tasks.ts";

/**
 * A worker process, by default the one from examples/distributed, and the
 * lines it prints.
 */
function spawnWorker(
  url: string,
  queue: string,
  script = "../../examples/distributed/worker.ts",
  env: Record<string, string> = {},
) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-sys",
      fileURLToPath(new URL(script, import.meta.url)),
    ],
    env: {
      BULLMQ_URL: url,
      QUEUE: queue,
      WORK_MS: "5",
      CONCURRENCY: "8",
      LOCK_MS: "2000",
      STALLED_MS: "1000",
      NO_COLOR: "1",
      ...env,
    },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: string[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  const reading = (async () => {
    let buffer = "";
    for await (
      const chunk of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buffer += chunk;
      const parts = buffer.split("\n");
      buffer = parts.pop()!;
      lines.push(...parts);
      for (const waiter of waiters.splice(0)) {
        if (lines.length >= waiter.count) waiter.resolve();
        else waiters.push(waiter);
      }
    }
  })();
  return {
    child,
    lines,
    /** Resolves once the worker has printed `count` lines. */
    printed(count: number): Promise<void> {
      if (lines.length >= count) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ count, resolve }));
    },
    reading,
  };
}

Deno.test({
  ...redisTest,
  name:
    "2 workers run 2,000 chains; one killed mid-run, every chain completes in order",
}, async () => {
  await using redis = await startRedis();
  await killOneOfTwo(`redis://127.0.0.1:${redis.port}`);
});

Deno.test({
  ...postgresTest,
  name:
    "2 workers run 2,000 chains on PostgreSQL; one killed mid-run, every chain completes in order",
}, async () => {
  await using server = await startPostgres();
  await killOneOfTwo(server.url);
});

/**
 * Two workers on `url` run 2,000 chains of three tasks, stored by a backend
 * on the same; the first hangs after 300 attempts and is killed with
 * SIGKILL: the other takes over its tasks, under the same ids.
 */
async function killOneOfTwo(url: string): Promise<void> {
  const queue = `test-${crypto.randomUUID()}`;
  const chains = 2_000;
  // The first worker hangs after 300 attempts, so it dies with tasks in hand.
  const stallAfter = 300;
  const workers = [
    spawnWorker(url, queue, "../_helpers/stalling_worker.ts", {
      STALL_AFTER: String(stallAfter),
    }),
    spawnWorker(url, queue),
  ];
  const backend = bullmqBackend({
    connection: url,
    queue,
    tasks: exampleTasks,
  });
  try {
    await Promise.all(workers.map((worker) => worker.printed(1)));
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const email = new URL(request.url).searchParams.get("email")!;
      tasks.addTask(sendWelcomeEmail, email);
      tasks.addTask(createAvatar, email);
      tasks.addTask(notifyTeam, email);
      return new Response("ok", { status: 202 });
    }, { backend });
    for (let i = 0; i < chains; i++) {
      await callHandler(handler, `/signup?email=user${i}@example.com`);
    }
    await handler.drain();
    assert.equal(handler.stats.handedOver, chains * 3);

    // Kill the first worker once it hangs with tasks in hand.
    const [doomed, survivor] = workers as [
      ReturnType<typeof spawnWorker>,
      ReturnType<typeof spawnWorker>,
    ];
    const startedLines = () =>
      doomed.lines.filter((line) => line.startsWith("started ")).length;
    while (startedLines() <= stallAfter) {
      await doomed.printed(doomed.lines.length + 1);
    }
    doomed.child.kill("SIGKILL");
    await doomed.child.status;
    await doomed.reading;
    const ended = new Set(
      doomed.lines.filter((line) => !line.startsWith("started ")).map((line) =>
        line.split(" ")[2]
      ),
    );
    const inHand = doomed.lines
      .filter((line) => line.startsWith("started "))
      .map((line) => line.split(" ")[2]!)
      .filter((id) => !ended.has(id));
    assert.ok(inHand.length > 0, "the worker was killed with no task in hand");

    // The survivor finishes the rest, the dead worker's stalled tasks too.
    const finished = () =>
      new Set(
        [...doomed.lines, ...survivor.lines]
          .filter((line) => line.startsWith("succeeded "))
          .map((line) => line.split(" ")[2]),
      ).size;
    // A generous bound, so that a takeover that never happens fails the
    // test instead of hanging it (the run takes a few seconds).
    const deadline = Date.now() + 120_000;
    while (finished() < chains * 3) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const line = survivor.printed(survivor.lines.length + 1);
      await Promise.race([
        line,
        new Promise((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new Error(
                  `${chains * 3 - finished()} tasks never finished`,
                ),
              ),
            Math.max(0, deadline - Date.now()),
          );
        }),
      ]).finally(() => clearTimeout(timer));
    }
    survivor.child.kill("SIGTERM");
    assert.equal((await survivor.child.status).code, 0);
    await survivor.reading;

    // The tasks the killed worker had in hand were taken over.
    const survived = new Set(
      survivor.lines
        .filter((line) => line.startsWith("succeeded "))
        .map((line) => line.split(" ")[2]),
    );
    assert.deepEqual(inHand.filter((id) => !survived.has(id)), []);

    // Every chain: three tasks, each started after the one before finished.
    const attempts = new Map<
      string,
      { start: number; end: number; ok: boolean }[]
    >();
    for (const line of [...doomed.lines, ...survivor.lines]) {
      const [outcome, , id, , , start, end] = line.split(" ");
      if (outcome === "started" || !id?.includes(":")) continue;
      attempts.set(id, [
        ...attempts.get(id) ?? [],
        { start: Number(start), end: Number(end), ok: outcome === "succeeded" },
      ]);
    }
    const chainIds = new Set(
      [...attempts.keys()].map((id) => id.split(":")[0]),
    );
    assert.equal(chainIds.size, chains);
    let duplicates = 0;
    for (const chain of chainIds) {
      for (let index = 0; index < 3; index++) {
        const own = attempts.get(`${chain}:${index}`) ?? [];
        const succeeded = own.filter((attempt) => attempt.ok);
        assert.ok(succeeded.length >= 1, `${chain}:${index} never succeeded`);
        duplicates += succeeded.length - 1;
        if (index > 0) {
          const before = attempts.get(`${chain}:${index - 1}`)!
            .filter((attempt) => attempt.ok);
          assert.ok(
            Math.min(...own.map((attempt) => attempt.start)) >=
              Math.min(...before.map((attempt) => attempt.end)),
            `${chain}:${index} started before ${chain}:${index - 1} finished`,
          );
        }
      }
    }
    // At least once: only tasks the killed worker had in hand may run twice.
    assert.ok(duplicates <= 8, `${duplicates} tasks ran twice`);
    console.log(
      `${new URL(url).protocol} ${
        chains * 3
      } tasks; ${inHand.length} in the killed worker's hands, taken over; ${duplicates} ran twice`,
    );
  } finally {
    for (const worker of workers) {
      try {
        worker.child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await worker.child.status;
    }
    await backend.close();
  }
}
