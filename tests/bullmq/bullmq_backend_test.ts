// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The BullMQ backend, the web side: what it refuses at addTask, how it
// stores chains (in few transactions, once, through cut connections and a
// Redis crash), close(), and failed()/retry(). The worker's own tests are in
// bullmq_worker_test.ts.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { FlowProducer, Job, Queue, QueueEvents } from "npm:bullmq@^6";
import { Redis } from "npm:ioredis@^5";
import {
  type BackendStatus,
  type BackgroundTasks,
  type DefinedTask,
  defineTask,
  type TaskBackend,
  type TaskInfo,
  withBackgroundTasks,
} from "../../mod.ts";
import type { BackendChain } from "../../backend.ts";
import {
  type BullmqBackend,
  bullmqBackend,
  type BullmqBackendOptions,
  bullmqWorker,
} from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import {
  monitorRedis,
  ownRedisTest,
  redisTest,
  startRedis,
  startRedisServer,
} from "../_helpers/redis.ts";
import { startTcpProxy } from "../_helpers/tcp_proxy.ts";
import { shardPrefixes, tasksKey } from "../../src/bullmq/_shared.ts";
import { addTaskError, counter, within } from "../_helpers/common.ts";
import {
  createAvatar,
  sendWelcomeEmail,
  tasks as exampleTasks,
} from "../../examples/distributed/tasks.ts";

/** A chain `id` of one task, `step`, as a backend is handed it. */
function chainOf<A extends unknown[]>(
  id: string,
  step: DefinedTask<A>,
  ...args: A
): BackendChain {
  return {
    id,
    tasks: [{
      name: step.name,
      args,
      timeout: undefined,
      retry: undefined,
      task: step as DefinedTask,
    }],
    request: undefined,
    delivered: undefined,
  };
}

/**
 * The errors of every `addBulk()` of `FlowProducer` (chains of more than
 * one task) until restored: which stores a crash cut.
 */
function recordCuts(
  owner: typeof FlowProducer,
): { cut: unknown[]; restore(): void } {
  const cut: unknown[] = [];
  const prototype = owner.prototype as unknown as {
    addBulk(items: unknown): Promise<unknown>;
  };
  const addBulk = prototype.addBulk;
  const spy = mock.method(
    prototype,
    "addBulk",
    function (this: unknown, items: unknown) {
      return addBulk.call(this, items).catch((error) => {
        cut.push(error);
        throw error;
      });
    },
  );
  return { cut, restore: () => spy.mock.restore() };
}

/** The BullMQ prefix of the one shard of a backend with the defaults. */
const PREFIX = shardPrefixes("bull", 1)[0]!;

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() runs a chain in order on a worker, retries, and keeps failed tasks",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queue = `test-${crypto.randomUUID()}`;
  const ran: string[] = [];
  const finished = Promise.withResolvers<void>();
  let healthy = false;
  const rerun = Promise.withResolvers<void>();
  const record = defineTask(({ id }, label: string) => {
    ran.push(`${label} ${id.slice(id.lastIndexOf(":"))}`);
    if (label === "last") finished.resolve();
  }, { name: "record" });
  const flaky = defineTask(({ attempt }) => {
    ran.push(`flaky attempt ${attempt}`);
    if (attempt === 1) throw new Error("once");
  }, { name: "flaky", retry: { maxAttempts: 2, minDelay: 10, maxDelay: 10 } });
  const failing = defineTask(({ attempt }, order: string) => {
    ran.push(`failing attempt ${attempt}`);
    if (!healthy) throw new Error(`declined ${order}`);
    rerun.resolve();
  }, {
    name: "failing",
    retry: { maxAttempts: 2, minDelay: 10, maxDelay: 10 },
  });
  const tasks = [record, flaky, failing];
  const reported: TaskInfo[] = [];
  const worker = bullmqWorker({
    connection,
    queue,
    tasks,
    onTaskError: (_error, info) => void reported.push(info),
  });
  const backend = bullmqBackend({ connection, queue, tasks });
  try {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(record, "first");
      tasks.addTask(flaky);
      tasks.addTask(failing, "order-9");
      tasks.addTask(record, "last");
      return new Response("ok");
    }, { backend });
    await (await callHandler(handler, "/pay?token=x")).tasks;
    assert.equal(handler.stats.handedOver, 4);
    await finished.promise;
    assert.deepEqual(ran, [
      "first :0",
      "flaky attempt 1",
      "flaky attempt 2",
      "failing attempt 1",
      "failing attempt 2",
      "last :3",
    ]);
    assert.deepEqual(reported.map((info) => [info.name, info.attempt]), [
      ["failing", 2],
    ]);
    const [failed, ...others] = await backend.failed();
    assert.deepEqual(others, []);
    assert.equal(failed?.name, "failing");
    assert.deepEqual(failed?.args, ["order-9"]);
    assert.equal(failed?.attempts, 2);
    assert.match(failed!.error, /^Error: declined order-9\n\s+at /);
    assert.equal(failed?.id, reported[0]?.id);
    assert.deepEqual(failed?.request, {
      method: "GET",
      url: "http://localhost/pay?token=x",
    });

    healthy = true;
    assert.equal(failed?.jobId, failed?.id.replace(":", "."));
    assert.equal(await backend.retry(failed!.id), true);
    await rerun.promise;
    assert.equal(ran.at(-1), "failing attempt 1");
    assert.equal(await backend.retry("no-such-job"), false);
  } finally {
    await worker.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() retry() of a job another call retried since it looked answers false",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queue = `test-${crypto.randomUUID()}`;
  const ran = Promise.withResolvers<void>();
  let healthy = false;
  const charge = defineTask(() => {
    if (!healthy) throw new Error("declined");
    ran.resolve();
  }, { name: "charge" });
  const over = Promise.withResolvers<void>();
  const after = defineTask(() => over.resolve(), { name: "after" });
  const tasks = [charge, after];
  const worker = bullmqWorker({
    connection,
    queue,
    tasks,
    onTaskError: () => {},
  });
  const backend = bullmqBackend({ connection, queue, tasks });
  try {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(charge);
      tasks.addTask(after);
      return new Response("ok");
    }, { backend });
    await (await callHandler(handler, "/")).tasks;
    await over.promise;
    const [failed] = await backend.failed();
    healthy = true;
    assert.equal(await backend.retry(failed!.id), true);
    await ran.promise;
    // The second call looked before the first retried it: BullMQ's script
    // then refuses a job that is no longer failed.
    const isFailed = Job.prototype.isFailed;
    let looks = 0;
    const spy = mock.method(
      Job.prototype,
      "isFailed",
      function (this: Job): Promise<boolean> {
        return ++looks === 1 ? Promise.resolve(true) : isFailed.call(this);
      },
    );
    try {
      assert.equal(await backend.retry(failed!.id), false);
    } finally {
      spy.mock.restore();
    }
    assert.equal(looks, 2);
  } finally {
    await worker.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name: "bullmqBackend() refuses at addTask what a worker could not run",
}, async (t) => {
  await using redis = await startRedis();
  const known = defineTask((_context, _value: unknown) => {}, {
    name: "known",
  });
  const stranger = defineTask((_context, _value: unknown) => {}, {
    name: "stranger",
  });
  const backend = bullmqBackend({
    connection: { port: redis.port },
    queue: `test-${crypto.randomUUID()}`,
    tasks: [known],
  });
  try {
    const table: [string, (tasks: BackgroundTasks) => void, string][] = [
      [
        "an unregistered task",
        (tasks) => tasks.addTask(stranger, 1),
        `Cannot add task "stranger" as it is not among the BullMQ backend's tasks: list it in 'tasks'`,
      ],
      [
        "a date",
        (tasks) => tasks.addTask(known, { at: new Date(0) }),
        `Cannot add task "known" as args[0].at is an instance of Date, which JSON cannot store: current value is a Date`,
      ],
      [
        "undefined",
        (tasks) => tasks.addTask(known, [1, undefined]),
        `Cannot add task "known" as args[0][1] is undefined, which JSON cannot store: current value is undefined`,
      ],
      [
        "NaN",
        (tasks) => tasks.addTask(known, NaN),
        `Cannot add task "known" as args[0] is not finite, which JSON cannot store: current value is NaN`,
      ],
      [
        "a bigint",
        (tasks) => tasks.addTask(known, 1n),
        `Cannot add task "known" as args[0] is a bigint, which JSON cannot store: current value is 1`,
      ],
      [
        "a cycle",
        (tasks) => {
          const node: Record<string, unknown> = {};
          node["self"] = node;
          tasks.addTask(known, node);
        },
        `Cannot add task "known" as args[0].self is a cycle, which JSON cannot store: current value is an object`,
      ],
    ];
    for (const [name, add, message] of table) {
      await t.step(name, async () => {
        const thrown = await addTaskError(backend, add);
        assert.ok(thrown instanceof TypeError, String(thrown));
        assert.equal(thrown.message, message);
      });
    }
  } finally {
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name: "bullmqBackend().enqueue() refuses a signal that is not an AbortSignal",
}, async () => {
  await using redis = await startRedis();
  const step = defineTask((_context) => {}, { name: "step" });
  const backend = bullmqBackend({
    connection: { port: redis.port },
    queue: `test-${crypto.randomUUID()}`,
    tasks: [step],
  });
  try {
    await assert.rejects(
      backend.enqueue({
        id: "chain-1",
        tasks: [],
        request: undefined,
        delivered: undefined,
      }, { signal: "at the deadline" as unknown as AbortSignal }),
      {
        name: "TypeError",
        message:
          `Cannot enqueue chain as 'signal' must be an AbortSignal: current value is "at the deadline"`,
      },
    );
  } finally {
    await backend.close();
  }
});

Deno.test("bullmqBackend() rejects options of the wrong type", async (t) => {
  const task = defineTask(() => {}, { name: "task" });
  const table: [string, () => unknown, string, string][] = [
    [
      "connection",
      () =>
        bullmqBackend({
          connection: "http://localhost",
          tasks: [task],
        }),
      "TypeError",
      `Cannot create BullMQ backend as 'connection' must be a redis://, rediss://, postgres:// or postgresql:// URL: current value is "http://localhost"`,
    ],
    [
      "tasks",
      () =>
        bullmqBackend({
          connection: {},
          tasks: "all" as unknown as DefinedTask<never[]>[],
        }),
      "TypeError",
      `Cannot create BullMQ backend as 'tasks' must be an array of defined tasks: current value is "all"`,
    ],
    [
      "a misspelt backend option",
      () =>
        bullmqBackend({
          connection: {},
          tasks: [task],
          queueName: "emails",
        } as unknown as BullmqBackendOptions),
      "TypeError",
      "Cannot create BullMQ backend as 'queueName' is not one of its options: they are 'connection', 'tasks', 'queue', 'prefix', 'shards', 'onStatusChange'",
    ],
  ];
  for (const [name, call, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(call, { name: errorName, message });
    });
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() adds the chains handed over together in few transactions",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queueName = `test-${crypto.randomUUID()}`;
  const addBulk = mock.method(FlowProducer.prototype, "addBulk");
  const add = mock.method(FlowProducer.prototype, "add");
  const backend = bullmqBackend({
    connection,
    queue: queueName,
    tasks: exampleTasks,
  });
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  try {
    await Promise.all(
      Array.from({ length: 250 }, (_, index) =>
        backend.enqueue({
          id: `chain${index}`,
          tasks: [sendWelcomeEmail, createAvatar].map((task) => ({
            name: task.name,
            args: [`user${index}@example.com`],
            timeout: task.timeout,
            retry: task.retry,
            task: task as DefinedTask,
          })),
          request: undefined,
          delivered: undefined,
        })),
    );
    // 100 + 100 + 50 chains, two jobs each, the first waiting for a worker.
    assert.equal(addBulk.mock.callCount(), 3);
    assert.equal(add.mock.callCount(), 0);
    const counts = await queue.getJobCounts("wait", "waiting-children");
    assert.deepEqual(counts, { wait: 250, "waiting-children": 250 });
  } finally {
    addBulk.mock.restore();
    add.mock.restore();
    await queue.obliterate({ force: true });
    await queue.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend().close() stores the chains handed over, and refuses later ones",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queueName = `test-${crypto.randomUUID()}`;
  const backend = bullmqBackend({
    connection,
    queue: queueName,
    tasks: exampleTasks,
  });
  const errors: unknown[] = [];
  const handler = withBackgroundTasks((request, _info, tasks) => {
    tasks.addTask(sendWelcomeEmail, new URL(request.url).pathname);
    return new Response("ok");
  }, {
    backend,
    handOver: "after-response",
    onTaskError: (error) => void errors.push(error),
  });
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  try {
    const calls = await Promise.all(
      Array.from({ length: 150 }, (_, i) => callHandler(handler, `/${i}`)),
    );
    // Handed over (one macrotask after the responses), not yet stored.
    await Promise.race(calls.map((call) => call.tasks));
    await backend.close();
    await handler.drain();
    assert.deepEqual(
      [handler.stats.handedOver, errors.length, await queue.count()],
      [150, 0, 150],
    );
    await (await callHandler(handler, "/late")).tasks;
    assert.equal(errors.length, 1);
    assert.equal(
      (errors[0] as Error).message,
      "Cannot enqueue chain as the BullMQ backend is closed",
    );
    assert.deepEqual([handler.stats.failed, await queue.count()], [1, 150]);
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() stores a chain once when its connection is cut between MULTI and EXEC",
}, async () => {
  await using redis = await startRedis();
  await using proxy = startTcpProxy(redis.port);
  const queueName = `test-${crypto.randomUUID()}`;
  const ran: number[] = [];
  const last = Promise.withResolvers<void>();
  const step = defineTask((_context, index: number) => {
    ran.push(index);
    if (index === 2) last.resolve();
  }, { name: "step" });
  // Through the proxy, which cuts the first transaction before its EXEC.
  const backend = bullmqBackend({
    connection: { host: "127.0.0.1", port: proxy.port },
    queue: queueName,
    tasks: [step],
  });
  const queue = new Queue(queueName, {
    connection: { port: redis.port },
    prefix: PREFIX,
  });
  const errors: unknown[] = [];
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(step, 0);
    tasks.addTask(step, 1);
    tasks.addTask(step, 2);
    return new Response("ok");
  }, { backend, onTaskError: (error) => void errors.push(error) });
  try {
    await (await callHandler(handler, "/")).tasks;
    assert.equal(proxy.cuts, 1);
    // Messages only: an AbortError carries the transaction's commands.
    assert.deepEqual(errors.map(String), []);
    assert.deepEqual([handler.stats.handedOver, handler.stats.failed], [3, 0]);
    const jobs = await queue.getJobs(["wait", "waiting-children"]);
    const chain = (jobs[0]?.data as { chain: string }).chain;
    assert.deepEqual(jobs.map((job) => job.id).sort(), [
      `${chain}.0`,
      `${chain}.1`,
      `${chain}.2`,
    ]);
    assert.deepEqual(
      await queue.getJobCounts("wait", "waiting-children"),
      { wait: 1, "waiting-children": 2 },
    );
    const worker = bullmqWorker({
      connection: { port: redis.port },
      queue: queueName,
      tasks: [step],
    });
    await last.promise;
    await worker.close();
    assert.deepEqual(ran, [0, 1, 2]);
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() adds a chain again whose EXEC ran but whose answer was lost, without running a task twice",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queueName = `test-${crypto.randomUUID()}`;
  // The proxy lets the transaction run, keeps its answer back until the
  // first task has run (and BullMQ removed it), then cuts the connection.
  const firstRan = Promise.withResolvers<void>();
  const secondStarted = Promise.withResolvers<void>();
  const secondMayEnd = Promise.withResolvers<void>();
  await using proxy = startTcpProxy(redis.port, {
    cut: "exec-reply",
    hold: secondStarted.promise,
  });
  const ran: string[] = [];
  const last = Promise.withResolvers<void>();
  const step = defineTask(async ({ id }, index: number) => {
    ran.push(id.slice(id.lastIndexOf(":")));
    if (index === 1) {
      secondStarted.resolve();
      await secondMayEnd.promise;
    }
    if (index === 2) last.resolve();
  }, { name: "step" });
  const backend = bullmqBackend({
    connection: { host: "127.0.0.1", port: proxy.port },
    queue: queueName,
    tasks: [step],
  });
  const worker = bullmqWorker({
    connection,
    queue: queueName,
    tasks: [step],
    onTaskEnd: ({ index }) => {
      if (index === 0) firstRan.resolve();
    },
  });
  const errors: unknown[] = [];
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(step, 0);
    tasks.addTask(step, 1);
    tasks.addTask(step, 2);
    return new Response("ok");
  }, { backend, onTaskError: (error) => void errors.push(error) });
  try {
    const call = await callHandler(handler, "/");
    await firstRan.promise;
    // Stored, its answer lost, then stored again: the chain is safe.
    await call.tasks;
    assert.equal(proxy.cuts, 1);
    secondMayEnd.resolve();
    await last.promise;
    assert.deepEqual(ran, [":0", ":1", ":2"]);
    assert.deepEqual(errors.map(String), []);
    assert.deepEqual([handler.stats.handedOver, handler.stats.failed], [3, 0]);
    await worker.close();
    assert.deepEqual(await backend.failed(), []);
    assert.deepEqual(
      await new Queue(queueName, { connection, prefix: PREFIX }).getJobCounts(
        "wait",
        "waiting-children",
        "active",
        "failed",
      ),
      { wait: 0, "waiting-children": 0, active: 0, failed: 0 },
    );
  } finally {
    secondMayEnd.resolve();
    await worker.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() runs each task once when a store's answer is lost after Redis ran it and a worker ran the chain",
}, async (t) => {
  const cases: {
    name: string;
    lengths: number[];
    cut: "store-reply" | "exec-reply";
    answers?: number;
    /** How many of the jobs are done when the connection is cut: all by default. */
    done?: number;
  }[] = [
    {
      name: "a one-task chain, no answer at all (ioredis sends it again)",
      lengths: [1],
      cut: "store-reply",
    },
    {
      name: "two one-task chains, the first answer only (stored again)",
      lengths: [1, 1],
      cut: "store-reply",
      answers: 1,
    },
    {
      name: "a two-task chain, no answer at all (ioredis sends it again)",
      lengths: [2],
      cut: "store-reply",
    },
    {
      name: "a two-task chain, EXEC's answer lost (stored again)",
      lengths: [2],
      cut: "exec-reply",
    },
    {
      name: "a three-task chain, no answer at all, its first task done",
      lengths: [3],
      cut: "store-reply",
      done: 1,
    },
  ];
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  for (const { name, lengths, cut, answers, done } of cases) {
    await t.step(name, async () => {
      const queueName = `test-${crypto.randomUUID()}`;
      const ran: string[] = [];
      const step = defineTask(({ id }) => void ran.push(id), { name: "step" });
      const chains = lengths.map((length, index): BackendChain => {
        const { tasks: [task], ...chain } = chainOf(`chain-${index}`, step);
        return { ...chain, tasks: Array(length).fill(task) };
      });
      const jobIds = chains.flatMap((chain) =>
        chain.tasks.map((_, index) => `${chain.id}.${index}`)
      );
      // The proxy holds the store's answer back until the worker has run
      // the first `done` jobs, and BullMQ finished them.
      const events = new QueueEvents(queueName, {
        connection,
        prefix: PREFIX,
        lastEventId: "0-0",
      });
      const completed = new Set<string>();
      const heldDone = Promise.withResolvers<void>();
      const allDone = Promise.withResolvers<void>();
      events.on("completed", ({ jobId }) => {
        completed.add(jobId);
        const finished = (ids: string[]) =>
          ids.every((id) => completed.has(id));
        if (finished(jobIds.slice(0, done))) heldDone.resolve();
        if (finished(jobIds)) allDone.resolve();
      });
      await using proxy = startTcpProxy(redis.port, {
        cut,
        hold: heldDone.promise,
        ...(answers === undefined ? {} : { answers }),
      });
      const backend = bullmqBackend({
        connection: { host: "127.0.0.1", port: proxy.port },
        queue: queueName,
        tasks: [step],
      });
      const worker = bullmqWorker({
        connection,
        queue: queueName,
        tasks: [step],
      });
      const queue = new Queue(queueName, { connection, prefix: PREFIX });
      try {
        await within(
          Promise.all(chains.map((chain) => backend.enqueue(chain))),
          30_000,
          "enqueue()",
        );
        assert.equal(proxy.cuts, 1);
        await within(allDone.promise, 30_000, "the jobs");
        // Nothing left to run: no job was added again.
        assert.deepEqual(
          await queue.getJobCounts(
            "wait",
            "active",
            "delayed",
            "waiting-children",
          ),
          { wait: 0, active: 0, delayed: 0, "waiting-children": 0 },
        );
        assert.deepEqual(
          ran.sort(),
          jobIds.map((id) => id.replace(".", ":")).sort(),
        );
      } finally {
        await worker.close();
        await backend.close();
        await events.close();
        await queue.obliterate({ force: true });
        await queue.close();
      }
    });
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() adds a chain whose jobs are all in Redis already without a second copy or an error",
}, async () => {
  // What a chain stored twice finds (ioredis sends a transaction again by
  // itself when its connection closed before any answer came back).
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queueName = `test-${crypto.randomUUID()}`;
  const step = defineTask((_context, _index: number) => {}, { name: "step" });
  const backend = bullmqBackend({
    connection,
    queue: queueName,
    tasks: [step],
  });
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  const chain: BackendChain = {
    id: "chain-1",
    tasks: [0, 1, 2].map((index) => ({
      name: step.name,
      args: [index],
      timeout: undefined,
      retry: undefined,
      task: step as DefinedTask,
    })),
    request: undefined,
    delivered: undefined,
  };
  try {
    await backend.enqueue(chain);
    await backend.enqueue(chain);
    const jobs = await queue.getJobs(["wait", "waiting-children"]);
    assert.deepEqual(
      jobs.map((job) => [job.id, job.data.args]).sort(),
      [["chain-1.0", [0]], ["chain-1.1", [1]], ["chain-1.2", [2]]],
    );
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
    await backend.close();
  }
});

Deno.test({
  ...ownRedisTest,
  name:
    "bullmqBackend() stores the chains a Redis crash cut off, and those handed over while it was down, once it is back",
}, async () => {
  // Durable, so that what Redis acknowledged before the crash is counted.
  await using redis = await startRedisServer({ durable: true });
  const connection = { host: "127.0.0.1", port: redis.port };
  // The crash comes while Redis holds a transaction of the backend's, queued
  // and not yet run: the proxy keeps back its EXEC until Redis is dead.
  const armed = Promise.withResolvers<void>();
  const crashed = Promise.withResolvers<void>();
  await using proxy = startTcpProxy(redis.port, {
    arm: armed.promise,
    hold: crashed.promise,
  });
  const queueName = `test-${crypto.randomUUID()}`;
  const step = defineTask((_context, _index: number, _padding: string) => {}, {
    name: "step",
  });
  const backend = bullmqBackend({
    connection: { host: "127.0.0.1", port: proxy.port },
    queue: queueName,
    tasks: [step],
  });
  // Which transactions the crash cut: the test means nothing without one.
  const { cut, restore } = recordCuts(FlowProducer);
  const handedOver: string[] = [];
  let onHandedOver = () => {};
  const counting: TaskBackend = {
    accept: (task, chain) => backend.accept(task, chain),
    enqueue(chain: BackendChain, options) {
      handedOver.push(chain.id);
      onHandedOver();
      return backend.enqueue(chain, options);
    },
  };
  const padding = "p".repeat(10_000);
  const errors: unknown[] = [];
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    for (let index = 0; index < 3; index++) {
      tasks.addTask(step, index, padding);
    }
    return new Response("ok");
  }, { backend: counting, onTaskError: (error) => void errors.push(error) });
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  try {
    await (await callHandler(handler, "/before")).tasks;
    // The responses wait for their chains to be stored, so they are awaited
    // only once Redis is back.
    const calls: Promise<unknown>[] = [];
    armed.resolve();
    for (let i = 0; i < 100; i++) calls.push(callHandler(handler, `/${i}`));
    await within(proxy.holding, 30_000, "a store for the proxy to cut");
    await redis.kill();
    crashed.resolve();
    const down = Promise.withResolvers<void>();
    onHandedOver = () => {
      if (handedOver.length === 121) down.resolve();
    };
    for (let i = 0; i < 20; i++) {
      calls.push(callHandler(handler, `/down/${i}`));
    }
    await down.promise;
    await redis.restart();
    await Promise.all(calls);
    await handler.drain();

    assert.equal(proxy.cuts, 1);
    assert.ok(
      cut.some((error) => (error as Error).name === "AbortError"),
      `the crash cut no transaction: ${cut.map(String)}`,
    );
    // Messages only: an AbortError carries the transaction's commands.
    assert.deepEqual(errors.map(String), []);
    assert.deepEqual([handler.stats.handedOver, handler.stats.failed], [
      363,
      0,
    ]);
    const jobs = await queue.getJobs(["wait", "waiting-children"]);
    assert.deepEqual(
      jobs.map((job) => job.id).sort(),
      handedOver.flatMap((id) => [`${id}.0`, `${id}.1`, `${id}.2`]).sort(),
    );
  } finally {
    restore();
    await queue.close();
    await backend.close();
  }
});

Deno.test({
  ...ownRedisTest,
  name:
    "bullmqBackend() gives up a chain whose signal aborts while Redis is unreachable, and close() returns",
}, async (t) => {
  const step = defineTask((_context) => {}, { name: "step" });
  const chain = (id: string) => chainOf(id, step);
  /**
   * Hands a chain over with a signal, closes the backend, and aborts the
   * signal: the chain must reject with its reason, and close() return.
   */
  async function abortWhileUnreachable(backend: BullmqBackend): Promise<void> {
    const deadline = new AbortController();
    const enqueued = backend.enqueue(chain("lost"), {
      signal: deadline.signal,
    });
    const closed = backend.close();
    const reason = new Error("Abandoned at the drain deadline");
    deadline.abort(reason);
    await within(
      assert.rejects(enqueued, (error) => error === reason),
      20_000,
      "enqueue()",
    );
    await within(closed, 20_000, "close()");
  }

  await t.step("Redis went away after the backend connected", async () => {
    await using redis = await startRedisServer();
    const backend = bullmqBackend({
      connection: { host: "127.0.0.1", port: redis.port },
      queue: `test-${crypto.randomUUID()}`,
      tasks: [step],
    });
    await backend.enqueue(chain("before"));
    await redis.kill();
    await abortWhileUnreachable(backend);
  });

  await t.step("Redis was never there", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const { port } = listener.addr;
    listener.close();
    await abortWhileUnreachable(bullmqBackend({
      connection: { host: "127.0.0.1", port },
      queue: `test-${crypto.randomUUID()}`,
      tasks: [step],
    }));
  });
});

Deno.test({
  ...ownRedisTest,
  name:
    "bullmqBackend() says once that Redis refuses its stores while connected, and once that it stores again",
}, async () => {
  await using redis = await startRedisServer();
  const step = defineTask((_context) => {}, { name: "step" });
  const told: BackendStatus[] = [];
  const changed = { resolve: () => {} };
  const backend = bullmqBackend({
    connection: { host: "127.0.0.1", port: redis.port },
    queue: `test-${crypto.randomUUID()}`,
    tasks: [step],
    onStatusChange(status) {
      told.push(status);
      changed.resolve();
    },
  });
  const chain = (id: string) => chainOf(id, step);
  const admin = new Redis({ host: "127.0.0.1", port: redis.port });
  try {
    await backend.enqueue(chain("before"));
    // Out of memory: every store fails, the connection stays up.
    await admin.config("SET", "maxmemory", "1");
    const down = new Promise<void>((resolve) => changed.resolve = resolve);
    const stored = backend.enqueue(chain("during"));
    await within(down, 20_000, "the status");
    assert.equal(backend.status.state, "down");
    assert.match(backend.status.error ?? "", /^OOM /);
    await admin.config("SET", "maxmemory", "0");
    await within(stored, 20_000, "enqueue()");
    assert.deepEqual(told.map((status) => status.state), ["down", "up"]);
    assert.equal(backend.status.state, "up");
  } finally {
    // So that close() can store what it holds.
    await admin.config("SET", "maxmemory", "0");
    admin.disconnect();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() stores each one-task chain as a plain job of its own outside a transaction, and longer ones as flows",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queueName = `test-${crypto.randomUUID()}`;
  const ran: string[] = [];
  const allRan = Promise.withResolvers<void>();
  const step = defineTask((context, _index: number) => {
    ran.push(context.id);
    if (ran.length === 7) allRan.resolve();
  }, { name: "step", retry: { maxAttempts: 3 } });
  const jobAdds = mock.method(Queue.prototype, "add");
  const jobBulks = mock.method(Queue.prototype, "addBulk");
  const flowBulks = mock.method(FlowProducer.prototype, "addBulk");
  const backend = bullmqBackend({
    connection,
    queue: queueName,
    tasks: [step],
  });
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  const chain = (id: string, length: number): BackendChain => ({
    id,
    tasks: Array.from({ length }, (_, index) => ({
      name: step.name,
      args: [index],
      timeout: undefined,
      retry: step.retry,
      task: step as DefinedTask,
    })),
    request: { method: "POST", url: "http://localhost/signup" },
    delivered: undefined,
  });
  try {
    // Handed over together: a job each, sent at once, and one group of
    // flows.
    await Promise.all([
      backend.enqueue(chain("one-a", 1)),
      backend.enqueue(chain("two-a", 2)),
      backend.enqueue(chain("one-b", 1)),
      backend.enqueue(chain("two-b", 2)),
      backend.enqueue(chain("one-c", 1)),
    ]);
    assert.deepEqual(
      jobAdds.mock.calls.map((call) => call.arguments[2]?.jobId),
      ["one-a.0", "one-b.0", "one-c.0"],
    );
    assert.equal(jobBulks.mock.callCount(), 0);
    assert.deepEqual(
      flowBulks.mock.calls.map((call) =>
        call.arguments[0].map((flow) => flow.opts?.jobId)
      ),
      [["two-a.1", "two-b.1"]],
    );
    // The same job as a single-node flow made: id, data and options.
    const job = await queue.getJob("one-b.0");
    assert.equal(await job?.getState(), "waiting");
    assert.deepEqual(job?.data, {
      chain: "one-b",
      index: 0,
      args: [0],
      request: { method: "POST", url: "http://localhost/signup" },
    });
    assert.deepEqual(
      [
        job?.opts.attempts,
        job?.opts.backoff,
        job?.opts.removeOnComplete,
        job?.opts.removeOnFail,
        job?.opts.deduplication,
      ],
      [3, { type: "background-tasks" }, true, false, {
        id: "one-b",
        ttl: 86_400_000,
      }],
    );
    assert.deepEqual(
      await queue.getJobCounts("wait", "waiting-children"),
      { wait: 5, "waiting-children": 2 },
    );
    const worker = bullmqWorker({
      connection,
      queue: queueName,
      tasks: [step],
    });
    await within(allRan.promise, 20_000, "the tasks");
    await worker.close();
    assert.deepEqual(ran.sort(), [
      "one-a:0",
      "one-b:0",
      "one-c:0",
      "two-a:0",
      "two-a:1",
      "two-b:0",
      "two-b:1",
    ]);
  } finally {
    jobAdds.mock.restore();
    jobBulks.mock.restore();
    flowBulks.mock.restore();
    await queue.obliterate({ force: true });
    await queue.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() stores the job of a chain with keyed tasks in a group, deduplicated by the chain's id, as a one-task chain was",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queueName = `test-${crypto.randomUUID()}`;
  const step = defineTask(() => {}, { name: "step" });
  const lane = defineTask((_context, _key: string) => {}, {
    name: "lane",
    key: (key) => key,
    onDuplicate: "skip",
  });
  const jobAdds = mock.method(Queue.prototype, "add");
  const jobBulks = mock.method(Queue.prototype, "addBulk");
  const backend = bullmqBackend({
    connection,
    queue: queueName,
    tasks: [step, lane],
  });
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  const task = (defined: DefinedTask, args: unknown[], key?: string) => ({
    name: defined.name,
    args,
    timeout: undefined,
    retry: undefined,
    task: defined,
    ...(key === undefined ? {} : { key, onDuplicate: "skip" as const }),
  });
  try {
    await Promise.all([
      backend.enqueue({
        id: "mixed",
        tasks: [
          task(step as DefinedTask, []),
          task(lane as DefinedTask, ["k"], "k"),
        ],
        request: undefined,
        delivered: undefined,
      }),
      backend.enqueue(chainOf("plain", step)),
    ]);
    // Only the chain without keys is added on its own.
    assert.deepEqual(
      jobAdds.mock.calls.map((call) => call.arguments[2]?.jobId),
      ["plain.0"],
    );
    assert.deepEqual(
      jobBulks.mock.calls.map((call) =>
        call.arguments[0].map((
          job,
        ) => [job.opts?.jobId, job.opts?.deduplication])
      ),
      [[["mixed.0", { id: "mixed", ttl: 86_400_000 }]]],
    );
    assert.deepEqual(
      (await queue.getJobs(["wait"])).map((job) => job.id).sort(),
      ["mixed.0", "mixed.1", "plain.0"],
    );
  } finally {
    jobAdds.mock.restore();
    jobBulks.mock.restore();
    await queue.obliterate({ force: true });
    await queue.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() sends a one-task chain to Redis at once while the store before it waits for its answer",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queueName = `test-${crypto.randomUUID()}`;
  // Redis runs the first store; the proxy keeps its answer back, and then
  // every answer on that connection, until told, then cuts the connection
  // (ioredis sends again what got no answer, which adds nothing).
  const answer = Promise.withResolvers<void>();
  await using proxy = startTcpProxy(redis.port, {
    cut: "store-reply",
    hold: answer.promise,
  });
  const events = new QueueEvents(queueName, {
    connection,
    prefix: PREFIX,
    lastEventId: "0-0",
  });
  const added = new Map<string, PromiseWithResolvers<void>>();
  const addedJob = (id: string) => {
    if (!added.has(id)) added.set(id, Promise.withResolvers());
    return added.get(id)!;
  };
  events.on("added", ({ jobId }) => addedJob(jobId).resolve());
  const step = defineTask(() => {}, { name: "step" });
  const backend = bullmqBackend({
    connection: { host: "127.0.0.1", port: proxy.port },
    queue: queueName,
    tasks: [step],
  });
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  try {
    const first = backend.enqueue(chainOf("first", step));
    await within(addedJob("first.0").promise, 20_000, "the first job");
    const second = backend.enqueue(chainOf("second", step));
    // A store in flight holds back none of the chains after it.
    await within(
      addedJob("second.0").promise,
      20_000,
      "the second job, while the first store waits for its answer",
    );
    answer.resolve();
    await within(Promise.all([first, second]), 30_000, "enqueue()");
    assert.equal(proxy.cuts, 1);
    assert.equal(await queue.count(), 2);
  } finally {
    answer.resolve();
    await backend.close();
    await events.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() tells Redis down while a store goes unanswered for 5 s, and up once it is answered",
}, async () => {
  await using redis = await startRedis();
  const queueName = `test-${crypto.randomUUID()}`;
  // Redis runs the store; the proxy keeps its answer back until told, then
  // cuts the connection, and ioredis sends it again, which adds nothing.
  const answer = Promise.withResolvers<void>();
  await using proxy = startTcpProxy(redis.port, {
    cut: "store-reply",
    hold: answer.promise,
  });
  const statuses: BackendStatus[] = [];
  const down = Promise.withResolvers<void>();
  const up = Promise.withResolvers<void>();
  const step = defineTask(() => {}, { name: "step" });
  const backend = bullmqBackend({
    connection: { host: "127.0.0.1", port: proxy.port },
    queue: queueName,
    tasks: [step],
    onStatusChange(status) {
      statuses.push(status);
      if (status.state === "down") down.resolve();
      else up.resolve();
    },
  });
  try {
    const started = performance.now();
    const stored = backend.enqueue(chainOf("slow", step));
    await within(down.promise, 20_000, "the status down");
    assert.ok(performance.now() - started >= 4_900);
    assert.deepEqual(statuses.map(({ state, error }) => [state, error]), [
      ["down", "Redis left a store unanswered for 5 s"],
    ]);
    answer.resolve();
    await within(stored, 30_000, "enqueue()");
    await within(up.promise, 20_000, "the status up");
    assert.equal(backend.status.state, "up");
  } finally {
    answer.resolve();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() keeps a one-task chain's deduplication key until its store is answered, and a flow's jobs a minute once done",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queueName = `test-${crypto.randomUUID()}`;
  const ran = counter(3);
  const step = defineTask(() => ran.tick(), { name: "step" });
  const backend = bullmqBackend({
    connection,
    queue: queueName,
    tasks: [step],
  });
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  const admin = new Redis(connection);
  const two: BackendChain = {
    ...chainOf("two", step),
    tasks: [...chainOf("two", step).tasks, ...chainOf("two", step).tasks],
  };
  try {
    {
      // Deleted once the store is answered: nothing stores it again.
      using monitor = await monitorRedis(redis.port, "del");
      await backend.enqueue(chainOf("one", step));
      await within(monitor.seen, 20_000, "the key's deletion");
    }
    assert.equal(await admin.exists(`${PREFIX}:${queueName}:de:one`), 0);
    assert.equal(await (await queue.getJob("one.0"))?.getState(), "waiting");
    await backend.enqueue(two);
    const worker = bullmqWorker({
      connection,
      queue: queueName,
      tasks: [step],
    });
    await within(ran.done, 20_000, "the tasks");
    // Lets the jobs it holds finish.
    await worker.close();
    assert.equal(await queue.getJob("one.0"), undefined);
    const kept = await Promise.all(
      ["two.0", "two.1"].map((id) => queue.getJob(id)),
    );
    assert.deepEqual(
      await Promise.all(kept.map((job) => job?.getState())),
      ["completed", "completed"],
    );
    assert.deepEqual(kept.map((job) => job?.opts.removeOnComplete), [
      { age: 60 },
      { age: 60 },
    ]);
  } finally {
    admin.disconnect();
    await queue.obliterate({ force: true });
    await queue.close();
    await backend.close();
  }
});

Deno.test({
  ...ownRedisTest,
  name:
    "bullmqBackend() stores the one-task chains a Redis crash cut off in the middle of their adds, once it is back",
}, async () => {
  // Durable, so that what Redis acknowledged before the crash is counted.
  await using redis = await startRedisServer({ durable: true });
  const connection = { host: "127.0.0.1", port: redis.port };
  // The crash comes once Redis has answered part of a store: the proxy keeps
  // back the rest of the answers until Redis is dead.
  const armed = Promise.withResolvers<void>();
  const crashed = Promise.withResolvers<void>();
  await using proxy = startTcpProxy(redis.port, {
    cut: "store-reply",
    answers: 10,
    arm: armed.promise,
    hold: crashed.promise,
  });
  const queueName = `test-${crypto.randomUUID()}`;
  const step = defineTask((_context, _padding: string) => {}, {
    name: "step",
  });
  const backend = bullmqBackend({
    connection: { host: "127.0.0.1", port: proxy.port },
    queue: queueName,
    tasks: [step],
  });
  const padding = "p".repeat(10_000);
  const ids = Array.from({ length: 300 }, (_, index) => `chain-${index}`);
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  try {
    await backend.enqueue(chainOf("before", step, padding));
    armed.resolve();
    // The chains whose stores the crash cut off: the test means nothing
    // without one.
    let answered = 0;
    const stored = ids.map((id) =>
      backend.enqueue(chainOf(id, step, padding)).finally(() => answered++)
    );
    await within(proxy.holding, 30_000, "a store for the proxy to cut");
    await redis.kill();
    const cut = ids.length - answered;
    crashed.resolve();
    await redis.restart();
    await within(Promise.all(stored), 30_000, "the chains");
    assert.equal(proxy.cuts, 1);
    assert.ok(cut > 0, "the crash cut no store");
    const jobs = await queue.getJobs(["wait"]);
    assert.deepEqual(
      jobs.map((job) => job.id).sort(),
      ["before", ...ids].map((id) => `${id}.0`).sort(),
    );
    assert.equal(await queue.count(), ids.length + 1);
  } finally {
    await queue.close();
    await backend.close();
  }
});

Deno.test({
  ...ownRedisTest,
  name:
    "bullmqBackend() does not send a one-task chain handed over while Redis is down, so that one given up meanwhile is never stored",
}, async () => {
  await using redis = await startRedisServer({ durable: true });
  const connection = { host: "127.0.0.1", port: redis.port };
  const queueName = `test-${crypto.randomUUID()}`;
  const step = defineTask(() => {}, { name: "step" });
  const down = Promise.withResolvers<void>();
  const backend = bullmqBackend({
    connection,
    queue: queueName,
    tasks: [step],
    onStatusChange(status) {
      if (status.state === "down") down.resolve();
    },
  });
  // When the first chain's store has been handed to ioredis, which holds
  // it until Redis is back.
  const sent = Promise.withResolvers<void>();
  const add = Queue.prototype.add;
  const addBulk = Queue.prototype.addBulk;
  const adds = mock.method(
    Queue.prototype,
    "add",
    function (this: Queue, ...args: Parameters<Queue["add"]>) {
      sent.resolve();
      return add.apply(this, args);
    },
  );
  const bulks = mock.method(
    Queue.prototype,
    "addBulk",
    function (this: Queue, ...args: Parameters<Queue["addBulk"]>) {
      sent.resolve();
      return addBulk.apply(this, args);
    },
  );
  const queue = new Queue(queueName, { connection, prefix: PREFIX });
  try {
    await backend.enqueue(chainOf("before", step));
    await redis.kill();
    await within(down.promise, 20_000, "the status down");
    const first = backend.enqueue(chainOf("first", step));
    await within(sent.promise, 20_000, "the first chain's store");
    const giving = new AbortController();
    const given = backend.enqueue(chainOf("given-up", step), {
      signal: giving.signal,
    });
    giving.abort(new Error("Abandoned at the drain deadline"));
    await assert.rejects(given, { message: "Abandoned at the drain deadline" });
    await redis.restart();
    await within(first, 30_000, "the first chain");
    // Sent after any store held back on the connection, and answered after.
    await backend.enqueue(chainOf("after", step));
    assert.deepEqual(
      (await queue.getJobs(["wait"])).map((job) => job.id).sort(),
      ["after.0", "before.0", "first.0"],
    );
  } finally {
    adds.mock.restore();
    bulks.mock.restore();
    await queue.close();
    await backend.close();
  }
});

Deno.test({
  ...redisTest,
  name:
    "bullmqBackend() writes its task names again each day it stores chains, so that a web process running for weeks does not look gone",
}, async () => {
  await using redis = await startRedis();
  const connection = { host: "127.0.0.1", port: redis.port };
  const queue = `test-${crypto.randomUUID()}`;
  const step = defineTask(() => {}, { name: "step" });
  const admin = new Redis(connection);
  using clock = mock.timers;
  const start = Date.now();
  clock.enable({ apis: ["Date"], now: start });
  const backend = bullmqBackend({ connection, queue, tasks: [step] });
  try {
    await backend.enqueue(chainOf("first", step));
    const written = () => admin.hget(tasksKey("bull", queue), "step");
    assert.equal(await written(), String(start));
    clock.tick(8 * 24 * 60 * 60 * 1000);
    await backend.enqueue(chainOf("eight days later", step));
    // Written without being waited for: the next command sees it.
    await backend.enqueue(chainOf("just after", step));
    assert.equal(await written(), String(start + 8 * 24 * 60 * 60 * 1000));
  } finally {
    await backend.close();
    admin.disconnect();
  }
});
