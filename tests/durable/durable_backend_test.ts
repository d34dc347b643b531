// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One admin shape for every durable backend: the same assertions, run
// against each backend in the table below, of what `DurableBackend`
// promises: a task that failed at its last attempt is listed by `failed()`,
// newest first, with every field; `retry(id)` runs it again under the same
// id with a fresh attempt count, once however many ask, and removes it from
// the list; an unknown id is `false`; `close()` resolves. A new backend adds
// a row.

import assert from "node:assert/strict";
import {
  type DefinedTask,
  defineTask,
  type TaskInfo,
  withBackgroundTasks,
} from "../../mod.ts";
import type { DurableBackend, FailedTask } from "../../backend.ts";
import { kvBackend } from "../../kv.ts";
import { bullmqBackend, bullmqWorker } from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { redisTest, startRedis } from "../_helpers/redis.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";

/** A backend that runs `tasks`, with whatever runs them, for one test. */
interface Opened extends AsyncDisposable {
  readonly backend: DurableBackend;
}

/**
 * Opens a backend whose tasks are `tasks`, and whose attempts (wherever they
 * run) are told to `onTaskStart`; their failures are not logged.
 */
type Open = (
  tasks: DefinedTask<never[]>[],
  onTaskStart: (info: TaskInfo) => void,
) => Promise<Opened>;

/** How each backend is opened, and the options of its test. */
const backends: {
  name: string;
  test: Omit<Deno.TestDefinition, "name" | "fn">;
  open: Open;
}[] = [
  {
    name: "kvBackend()",
    test: {},
    async open(tasks, onTaskStart) {
      const kv = await Deno.openKv(":memory:");
      const backend = kvBackend({
        kv,
        tasks,
        onTaskStart,
        onTaskError: () => {},
      });
      return {
        backend,
        async [Symbol.asyncDispose]() {
          await backend.close();
          kv.close();
        },
      };
    },
  },
  {
    name: "bullmqBackend()",
    test: redisTest,
    async open(tasks, onTaskStart) {
      const redis = await startRedis();
      const connection = { host: "127.0.0.1", port: redis.port };
      const queue = `test-${crypto.randomUUID()}`;
      const worker = bullmqWorker({
        connection,
        queue,
        tasks,
        onTaskStart,
        onTaskError: () => {},
      });
      const backend = bullmqBackend({ connection, queue, tasks });
      return {
        backend,
        async [Symbol.asyncDispose]() {
          await worker.close();
          await backend.close();
          await redis[Symbol.asyncDispose]();
        },
      };
    },
  },
  {
    name: "bullmqBackend() on PostgreSQL",
    test: postgresTest,
    async open(tasks, onTaskStart) {
      const server = await startPostgres();
      const queue = `test-${crypto.randomUUID()}`;
      const worker = bullmqWorker({
        connection: server.url,
        queue,
        tasks,
        onTaskStart,
        onTaskError: () => {},
      });
      const backend = bullmqBackend({ connection: server.url, queue, tasks });
      return {
        backend,
        async [Symbol.asyncDispose]() {
          await worker.close();
          await backend.close();
          await server[Symbol.asyncDispose]();
        },
      };
    },
  },
];

/** A promise per label, made on first use by either side. */
function gates(): (label: string) => PromiseWithResolvers<void> {
  const made = new Map<string, PromiseWithResolvers<void>>();
  return (label) => {
    let gate = made.get(label);
    if (gate === undefined) {
      gate = Promise.withResolvers<void>();
      made.set(label, gate);
    }
    return gate;
  };
}

/** The assertions every durable backend passes. */
async function assertAdmin(open: Open): Promise<void> {
  const gate = gates();
  const runs: { order: string; id: string; attempt: number }[] = [];
  /** The index each attempt of a task was told, by the task's id. */
  const indices = new Map<string, number[]>();
  let healthy = false;
  const note = defineTask((_context, label: string) => {
    gate(label).resolve();
  }, { name: "note" });
  const charge = defineTask(({ id, attempt }, order: string) => {
    runs.push({ order, id, attempt });
    if (!healthy) throw new Error(`card declined for ${order}`);
    gate(`charged ${order}`).resolve();
  }, {
    name: "charge",
    retry: { maxAttempts: 2, minDelay: 1, maxDelay: 1, jitter: 0 },
  });
  await using opened = await open(
    [note, charge] as DefinedTask<never[]>[],
    ({ id, index }) => {
      if (id !== undefined) indices.set(id, [...indices.get(id) ?? [], index]);
    },
  );
  const { backend } = opened;
  const handler = withBackgroundTasks((request, _info, tasks) => {
    const order = new URL(request.url).searchParams.get("order")!;
    tasks.addTask(note, `before ${order}`);
    tasks.addTask(charge, order);
    tasks.addTask(note, `after ${order}`);
    return new Response("Accepted", { status: 202 });
  }, { backend });
  /** Sends an order; resolves once its chain went past its charge. */
  async function checkout(order: string): Promise<void> {
    const request = new Request(`http://localhost/checkout?order=${order}`, {
      method: "POST",
    });
    await (await callHandler(handler, request)).tasks;
    // The next task runs once the failure is kept (each backend writes
    // both at once).
    await gate(`after ${order}`).promise;
  }

  const started = Date.now();
  await checkout("7");
  const [first, ...others] = await backend.failed();
  assert.deepEqual(others, []);
  const tried = runs.filter((run) => run.order === "7");
  assert.deepEqual(tried.map((run) => run.attempt), [1, 2]);
  assert.deepEqual(
    pick(first!),
    {
      id: tried[0]!.id,
      name: "charge",
      args: ["7"],
      index: 1,
      attempts: 2,
      request: { method: "POST", url: "http://localhost/checkout?order=7" },
    },
  );
  assert.match(tried[0]!.id, /:1$/);
  assert.equal(tried[1]!.id, tried[0]!.id);
  // The last error as text: its stack, the error's message first.
  assert.match(first!.error, /^Error: card declined for 7\n\s+at /);
  assert.ok(first!.at instanceof Date);
  assert.ok(
    first!.at.getTime() >= started && first!.at.getTime() <= Date.now(),
    `${first!.at.toISOString()} is not between the start and now`,
  );

  // Newest first. The clock moves on first: BullMQ keeps when to the
  // millisecond.
  while (Date.now() <= first!.at.getTime()) {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await checkout("8");
  const listed = await backend.failed();
  assert.deepEqual(listed.map((task) => task.args), [["8"], ["7"]]);
  const second = listed[0]!;
  assert.notEqual(second.id, first!.id);
  assert.ok(second.at.getTime() > first!.at.getTime());

  // Retried at once by two callers: one retry, under the same id and index,
  // with a fresh attempt count, and it leaves the list.
  healthy = true;
  const answers = await Promise.all([
    backend.retry(first!.id),
    backend.retry(first!.id),
  ]);
  assert.deepEqual(answers.toSorted(), [false, true]);
  await gate("charged 7").promise;
  assert.deepEqual(
    (await backend.failed()).map((task) => task.id),
    [second.id],
  );
  assert.equal(await backend.retry(first!.id), false);
  assert.equal(await backend.retry(second.id), true);
  await gate("charged 8").promise;
  assert.deepEqual(await backend.failed(), []);
  // By now, a second run of the first retry would have come before the
  // second's (both backends deliver in order here).
  assert.deepEqual(
    runs.filter((run) => run.order === "7").slice(2),
    [{ order: "7", id: first!.id, attempt: 1 }],
  );
  assert.deepEqual(indices.get(first!.id), [1, 1, 1]);

  assert.equal(await backend.retry("no-such-chain:0"), false);
  assert.equal(await backend.retry("not an id"), false);
  await assert.rejects(backend.retry(42 as never), {
    name: "TypeError",
    message: "Cannot retry task as 'id' must be a string: current value is 42",
  });
  await backend.close();
  // Whoever made the backend may close it too.
  await backend.close();
}

/** The fields of a failed task whose values a test knows in advance. */
function pick(
  task: FailedTask,
): Pick<FailedTask, "id" | "name" | "args" | "index" | "attempts" | "request"> {
  const { id, name, args, index, attempts, request } = task;
  return { id, name, args, index, attempts, request };
}

for (const { name, test, open } of backends) {
  Deno.test({
    ...test,
    name:
      `${name} lists a task that failed at its last attempt, newest first, and retries it once under its id, as DurableBackend says`,
    fn: () => assertAdmin(open),
  });
}
