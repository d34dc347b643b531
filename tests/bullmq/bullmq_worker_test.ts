// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// bullmqWorker(): its options, how it runs a job (the attempts the job was
// enqueued with, a failure value that resists description, a job no task of
// its own answers to), and workers taking over from one that died. The web
// side's tests are in bullmq_backend_test.ts.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { defineTask, type TaskInfo, withBackgroundTasks } from "../../mod.ts";
import {
  type BullmqBackend,
  bullmqBackend,
  bullmqWorker,
  type BullmqWorkerOptions,
} from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { redisTest, startRedis } from "../_helpers/redis.ts";
import { consoleLines, hostileValues, within } from "../_helpers/common.ts";

Deno.test("bullmqWorker() rejects options of the wrong type", async (t) => {
  const task = defineTask(() => {}, { name: "task" });
  const table: [string, () => unknown, string, string][] = [
    [
      "concurrency",
      () => bullmqWorker({ connection: {}, tasks: [task], concurrency: 0 }),
      "RangeError",
      "Cannot start BullMQ worker as 'concurrency' must be an integer >= 1: current value is 0",
    ],
    [
      "a misspelt worker option",
      () =>
        bullmqWorker({
          connection: {},
          tasks: [task],
          concurency: 2,
        } as unknown as BullmqWorkerOptions),
      "TypeError",
      "Cannot start BullMQ worker as 'concurency' is not one of its options: did you mean 'concurrency'?",
    ],
    [
      "an empty queue name",
      () => bullmqWorker({ connection: {}, tasks: [task], queue: "" }),
      "TypeError",
      `Cannot start BullMQ worker as 'queue' must be a non-empty string: current value is ""`,
    ],
  ];
  for (const [name, call, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(call, { name: errorName, message });
    });
  }
});

Deno.test("bullmqWorker() checks its connection, its intervals and its tasks before it connects", async (t) => {
  const task = defineTask(() => {}, { name: "task" });
  const table: [string, Partial<BullmqWorkerOptions>, string, string][] = [
    [
      "a connection that is not an object",
      { connection: null as unknown as BullmqWorkerOptions["connection"] },
      "TypeError",
      "Cannot start BullMQ worker as 'connection' must be a Redis or PostgreSQL URL, ioredis options, an ioredis instance or a pg.Pool: current value is null",
    ],
    [
      "a lockDuration of zero",
      { lockDuration: 0 },
      "RangeError",
      "Cannot start BullMQ worker as 'lockDuration' must be an integer >= 1: current value is 0",
    ],
    [
      "a fractional stalledInterval",
      { stalledInterval: 1.5 },
      "RangeError",
      "Cannot start BullMQ worker as 'stalledInterval' must be an integer >= 1: current value is 1.5",
    ],
    [
      "two tasks of one name",
      { tasks: [task, defineTask(() => {}, { name: "task" })] },
      "TypeError",
      `Cannot start BullMQ worker as two tasks are named "task": names must be unique`,
    ],
    [
      "an onTaskEnd that is not a function",
      { onTaskEnd: "log" as unknown as () => void },
      "TypeError",
      `Cannot start BullMQ worker as 'onTaskEnd' must be a function: current value is "log"`,
    ],
  ];
  for (const [name, options, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(
        () => bullmqWorker({ connection: {}, tasks: [task], ...options }),
        { name: errorName, message },
      );
    });
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqWorker() retries as the job was enqueued, not as its own definition says",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queue = `test-${crypto.randomUUID()}`;
  // Enqueued before a deploy gave the task a retry policy.
  const before = defineTask((_context) => {}, { name: "charge" });
  const after = defineTask(() => {
    throw new Error("gateway down");
  }, { name: "charge", retry: { maxAttempts: 3, minDelay: 10 } });
  const backend = bullmqBackend({ connection, queue, tasks: [before] });
  const reported = Promise.withResolvers<unknown>();
  const ends: string[] = [];
  const worker = bullmqWorker({
    connection,
    queue,
    tasks: [after],
    onTaskEnd: ({ attempt, willRetry }) =>
      void ends.push(`${attempt} willRetry=${willRetry}`),
    onTaskError: (error) => reported.resolve(error),
  });
  try {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(before);
      return new Response("ok");
    }, { backend });
    await (await callHandler(handler, "/")).tasks;
    assert.equal(((await reported.promise) as Error).message, "gateway down");
    assert.deepEqual(ends, ["1 willRetry=false"]);
  } finally {
    await worker.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqWorker() fails the job of a task that rejects with a value that resists description, retrying only as its policy says",
}, async (t) => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  for (const { label, value, text } of hostileValues()) {
    await t.step(label, async () => {
      const queue = `test-${crypto.randomUUID()}`;
      const runs: string[] = [];
      const over = Promise.withResolvers<void>();
      const retry = { maxAttempts: 3, minDelay: 1, maxDelay: 1 };
      // Its policy retries nothing it threw: one attempt.
      const once = defineTask(({ attempt }) => {
        runs.push(`once ${attempt}`);
        return Promise.reject(value);
      }, { name: "once", retry: { ...retry, isRetriable: () => false } });
      // Its policy retries anything: three attempts.
      const thrice = defineTask(({ attempt }) => {
        runs.push(`thrice ${attempt}`);
        return Promise.reject(value);
      }, { name: "thrice", retry });
      const after = defineTask(() => over.resolve(), { name: "after" });
      const tasks = [once, thrice, after];
      const reported: [unknown, string, number][] = [];
      const worker = bullmqWorker({
        connection,
        queue,
        tasks,
        onTaskError: (error, info) =>
          void reported.push([error, info.name, info.attempt]),
      });
      const backend = bullmqBackend({ connection, queue, tasks });
      try {
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(once);
          tasks.addTask(thrice);
          tasks.addTask(after);
          return new Response("ok");
        }, { backend });
        await (await callHandler(handler, "/")).tasks;
        await over.promise;
        assert.deepEqual(runs, ["once 1", "thrice 1", "thrice 2", "thrice 3"]);
        assert.equal(reported.length, 2);
        assert.ok(reported.every(([error]) => error === value));
        assert.deepEqual(reported.map(([, name, attempt]) => [name, attempt]), [
          ["once", 1],
          ["thrice", 3],
        ]);
        const failed = await backend.failed();
        assert.deepEqual(
          failed.map(({ name, attempts }) => [name, attempts]).sort(),
          [["once", 1], ["thrice", 3]],
        );
        assert.deepEqual(failed.map(({ error }) => error), [text, text]);
      } finally {
        await worker.close();
        await backend.close();
      }
    });
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqWorker() fails for good a job that none of its tasks answers to, and the chain goes on",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queue = `test-${crypto.randomUUID()}`;
  // The web process knows a task this worker was deployed without.
  const ghost = defineTask(() => {}, {
    name: "ghost",
    retry: { maxAttempts: 3, minDelay: 1, maxDelay: 1 },
  });
  const over = Promise.withResolvers<void>();
  const after = defineTask(() => over.resolve(), { name: "after" });
  const backend = bullmqBackend({ connection, queue, tasks: [ghost, after] });
  const worker = bullmqWorker({
    connection,
    queue,
    tasks: [after],
    // Its report is the next test's.
    onTaskError: () => {},
  });
  try {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(ghost);
      tasks.addTask(after);
      return new Response("ok");
    }, { backend });
    await (await callHandler(handler, "/")).tasks;
    await over.promise;
    const failed = await backend.failed();
    assert.deepEqual(
      failed.map(({ name, attempts, error }) => [name, attempts, error]),
      [["ghost", 1, `No task named "ghost" in this worker's 'tasks'`]],
    );
  } finally {
    await worker.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqWorker() reports a task it does not know like any failed task, and says at start which tasks the web processes store that it lacks",
}, async (t) => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  // The web process knows a task this worker was deployed without.
  const ghost = defineTask(() => {}, { name: "ghost" });
  const phantom = defineTask(() => {}, { name: "phantom" });
  /**
   * Stores a chain of `ghost` then `after` from a web process that knows
   * both, then starts a worker that knows only `after`, with `options`,
   * and once `after` ran, calls `body`.
   */
  async function run(
    options: Partial<BullmqWorkerOptions>,
    body: (queue: string, backend: BullmqBackend) => Promise<void>,
  ): Promise<void> {
    const queue = `test-${crypto.randomUUID()}`;
    const over = Promise.withResolvers<void>();
    const after = defineTask(() => over.resolve(), { name: "after" });
    const backend = bullmqBackend({
      connection,
      queue,
      tasks: [ghost, phantom, after],
    });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(ghost);
      tasks.addTask(after);
      return new Response("ok");
    }, { backend });
    // Stored, and the names the web process writes at start with it.
    await (await callHandler(
      handler,
      new Request("http://localhost/signup?token=secret", { method: "POST" }),
    )).tasks;
    const worker = bullmqWorker({
      connection,
      queue,
      tasks: [after],
      ...options,
    });
    try {
      await within(over.promise, 20_000, "the task after");
      await body(queue, backend);
    } finally {
      await worker.close();
      await backend.close();
    }
  }

  await t.step("to onTaskError, saying where the job is kept", async () => {
    using output = consoleLines();
    const reported: [unknown, TaskInfo][] = [];
    await run({
      onTaskError: (error, info) => void reported.push([error, info]),
    }, async (queue) => {
      // Reported before the job failed, so before the next task ran.
      assert.equal(reported.length, 1);
      const [error, info] = reported[0]!;
      assert.ok(error instanceof Error);
      assert.match(
        error.message,
        new RegExp(
          `^No task named "ghost" in this worker's 'tasks': its job \\S+\\.0 failed, and is kept in queue "${queue}" \\(backend.failed\\(\\) lists it\\)$`,
        ),
      );
      assert.deepEqual({ ...info, id: undefined }, {
        name: "ghost",
        index: 0,
        attempt: 1,
        id: undefined,
        request: {
          method: "POST",
          url: "http://localhost/signup?token=secret",
        },
        delivered: undefined,
      });
      assert.match(info.id ?? "", /:0$/);
      await within(
        output.seen(/^The BullMQ worker does not know/),
        20_000,
        "the line at start",
      );
      assert.deepEqual(output.lines, [
        `The BullMQ worker does not know tasks "ghost", "phantom", which web processes store in queue "${queue}": add them to its 'tasks', or their jobs fail`,
      ]);
    });
  });

  await t.step("by default, written by the default reporter", async () => {
    using output = consoleLines();
    await run({}, async (queue, backend) => {
      const [failed] = await backend.failed();
      // Written before the job failed, so before the next task ran.
      assert.deepEqual(
        output.lines.filter((line) => !/does not know/.test(line)),
        [
          `Background task "ghost" at index 0 of POST /signup failed: Error: No task named "ghost" in this worker's 'tasks': its job ${failed?.jobId} failed, and is kept in queue "${queue}" (backend.failed() lists it)`,
        ],
      );
    });
  });
});

Deno.test({
  ...redisTest,
  name:
    "bullmqWorker() says in one line at start when its shards are not the web processes'",
}, async (t) => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const step = defineTask((_context) => {}, { name: "step" });
  // A shard's hash tag depends on the count: a worker consuming more shards
  // than the web processes store in consumes none of theirs.
  for (const [web, consumed] of [[3, 1], [1, 2]] as const) {
    await t.step(`web ${web}, worker ${consumed}`, async () => {
      const queue = `test-${crypto.randomUUID()}`;
      const backend = bullmqBackend({
        connection,
        queue,
        shards: web,
        tasks: [step],
      });
      // Its queues' first commands follow the write of the count.
      await backend.failed();
      const line = Promise.withResolvers<string>();
      const consoleError = mock.method(console, "error", (text: unknown) => {
        line.resolve(String(text));
      });
      const bound = setTimeout(
        () => line.reject(new Error("the worker said nothing in 20 s")),
        20_000,
      );
      const worker = bullmqWorker({
        connection,
        queue,
        shards: consumed,
        tasks: [step],
      });
      try {
        assert.equal(
          await line.promise,
          `The BullMQ worker consumes ${consumed} ${
            consumed === 1 ? "shard" : "shards"
          } of queue "${queue}", but web processes store chains in ${web}: start workers with 'shards: ${web}', or the chains of the other shards never run`,
        );
      } finally {
        clearTimeout(bound);
        consoleError.mock.restore();
        await worker.close();
        await backend.close();
      }
    });
  }
});
