// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// kvBackend(): chains run through Deno KV's queue, in order, retried and
// kept as failed; what it refuses at addTask; its options; storing chains
// in few commits, within Deno KV's limits. One delivery of a step, as the
// consumer runs it, is tested in _consumer_test.ts.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type BackgroundTasks,
  type DefinedTask,
  defineTask,
  type TaskEndEvent,
  type TaskInfo,
  withBackgroundTasks,
} from "../../mod.ts";
import { KV_MAX_PAYLOAD, kvBackend, type KvBackendOptions } from "../../kv.ts";
import { callHandler } from "../../testing.ts";
import {
  addTaskError,
  consoleLines,
  counter,
  guardedTest,
  hostileValues,
  within,
} from "../_helpers/common.ts";
import { openBackend } from "../_helpers/kv.ts";
import { kvKeys, type Step } from "../../src/kv/_step.ts";

guardedTest(
  "kvBackend() runs a chain's tasks in order, each with a stable id",
  async () => {
    const ran: string[] = [];
    const finished = counter(3);
    const step = defineTask(async ({ id }, label: string) => {
      await new Promise((resolve) => setTimeout(resolve, 1));
      ran.push(`${label} ${id.slice(id.lastIndexOf(":"))}`);
      finished.tick();
    }, { name: "step" });
    await using db = await openBackend({ tasks: [step] });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(step, "first");
      tasks.addTask(step, "second");
      tasks.addTask(step, "third");
      return new Response("ok");
    }, { backend: db.backend });

    const { tasks } = await callHandler(handler, "/");
    assert.deepEqual(await tasks, []);
    assert.equal(handler.stats.handedOver, 3);
    assert.equal(handler.stats.pending, 0);
    await finished.done;
    assert.deepEqual(ran, ["first :0", "second :1", "third :2"]);
  },
);

guardedTest(
  "kvBackend() retries a failed task after its backoff, as new messages",
  async () => {
    const ends: Partial<TaskEndEvent>[] = [];
    const errors: unknown[] = [];
    const finished = counter(1);
    const flaky = defineTask(({ attempt }) => {
      if (attempt < 3) throw new Error(`attempt ${attempt}`);
    }, {
      name: "flaky",
      retry: { maxAttempts: 3, minDelay: 5, maxDelay: 5, jitter: 0 },
    });
    await using db = await openBackend({
      tasks: [flaky],
      onTaskEnd: ({ attempt, outcome, willRetry }) => {
        ends.push({ attempt, outcome, willRetry });
        if (outcome === "succeeded") finished.tick();
      },
      onTaskError: (error) => void errors.push(error),
    });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(flaky);
      return new Response("ok");
    }, { backend: db.backend });
    await (await callHandler(handler, "/")).tasks;
    await finished.done;
    assert.deepEqual(ends, [
      { attempt: 1, outcome: "failed", willRetry: true },
      { attempt: 2, outcome: "failed", willRetry: true },
      { attempt: 3, outcome: "succeeded", willRetry: false },
    ]);
    assert.deepEqual(errors, []);
  },
);

guardedTest(
  "kvBackend() keeps a task that fails its last attempt as failed and goes on",
  async () => {
    const reported: TaskInfo[] = [];
    const finished = counter(1);
    let healthy = false;
    const charge = defineTask((_context, order: string) => {
      if (!healthy) throw new Error(`card declined for ${order}`);
      finished.tick();
    }, { name: "charge", retry: { maxAttempts: 2, minDelay: 1, maxDelay: 1 } });
    const after = defineTask(() => finished.tick(), { name: "after" });
    await using db = await openBackend({
      tasks: [charge, after],
      onTaskError: (_error, info) => void reported.push(info),
    });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(charge, "order-7");
      tasks.addTask(after);
      return new Response("ok");
    }, { backend: db.backend });
    await (await callHandler(handler, "/checkout?token=x")).tasks;
    await finished.done;

    assert.deepEqual(reported.map((info) => [info.name, info.attempt]), [
      ["charge", 2],
    ]);
    const [letter, ...others] = await db.backend.failed();
    assert.deepEqual(others, []);
    assert.equal(letter?.reason, "failed");
    assert.equal(letter?.name, "charge");
    assert.deepEqual(letter?.args, ["order-7"]);
    assert.equal(letter?.attempts, 2);
    assert.match(letter!.error, /^Error: card declined for order-7\n/);
    assert.deepEqual(letter?.request, {
      method: "GET",
      url: "http://localhost/checkout?token=x",
    });

    // Retried once the cause is fixed, it runs and leaves the failed tasks.
    const rerun = counter(1);
    finished.tick = rerun.tick;
    healthy = true;
    assert.equal(await db.backend.retry(letter!.id), true);
    await rerun.done;
    assert.deepEqual(await db.backend.failed(), []);
    assert.equal(await db.backend.retry(letter!.id), false);
  },
);

guardedTest(
  "kvBackend() reports a task it does not know like any failed task, and a listening backend says at start which tasks others store that it lacks",
  async (t) => {
    // A process that stores chains knows tasks the listening one lacks.
    const ghost = defineTask(() => {}, { name: "ghost" });
    const phantom = defineTask(() => {}, { name: "phantom" });
    /**
     * Stores a chain of `ghost` then `after` from a backend that knows
     * both and does not listen, then starts one that listens and knows
     * only `after`, with `options`; once `after` ran, calls `body`.
     */
    async function run(
      options: Partial<KvBackendOptions>,
      body: (listener: ReturnType<typeof kvBackend>) => Promise<void>,
    ): Promise<void> {
      const kv = await Deno.openKv(":memory:");
      const over = counter(1);
      const after = defineTask(() => over.tick(), { name: "after" });
      const web = kvBackend({
        kv,
        tasks: [ghost, phantom, after],
        listen: false,
      });
      try {
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(ghost);
          tasks.addTask(after);
          return new Response("ok");
        }, { backend: web });
        await (await callHandler(
          handler,
          new Request("http://localhost/signup?token=secret", {
            method: "POST",
          }),
        )).tasks;
        const listener = kvBackend({ kv, tasks: [after], ...options });
        try {
          await over.done;
          await body(listener);
        } finally {
          listener.close();
        }
      } finally {
        web.close();
        kv.close();
      }
    }

    await t.step("to onTaskError, saying where it is kept", async () => {
      using output = consoleLines();
      const reported = Promise.withResolvers<[unknown, TaskInfo]>();
      await run({
        onTaskError: (error, info) => reported.resolve([error, info]),
      }, async (listener) => {
        const [error, info] = await within(
          reported.promise,
          10_000,
          "the report",
        );
        const [letter, ...others] = await listener.failed();
        assert.deepEqual(others, []);
        assert.equal(
          String(error),
          `Error: No task named "ghost" in this process's 'tasks': it is kept as failed task "${letter?.id}" (backend.failed() lists it)`,
        );
        assert.deepEqual(info, {
          name: "ghost",
          index: 0,
          attempt: 1,
          id: letter?.id,
          request: {
            method: "POST",
            url: "http://localhost/signup?token=secret",
          },
          delivered: undefined,
        });
        await within(
          output.seen(/^The KV backend does not know/),
          10_000,
          "the line at start",
        );
        assert.deepEqual(output.lines, [
          `The KV backend does not know tasks "ghost", "phantom", which processes store chains with in this database: add them to its 'tasks', or their steps fail`,
        ]);
      });
    });

    await t.step("by default, written by the default reporter", async () => {
      using output = consoleLines();
      await run({}, async (listener) => {
        await within(
          output.seen(/^Background task "ghost"/),
          10_000,
          "the report",
        );
        const [letter] = await listener.failed();
        assert.deepEqual(
          output.lines.filter((line) => !/does not know/.test(line)),
          [
            `Background task "ghost" at index 0 of POST /signup failed: Error: No task named "ghost" in this process's 'tasks': it is kept as failed task "${letter?.id}" (backend.failed() lists it)`,
          ],
        );
      });
    });
  },
);

guardedTest(
  "kvBackend()'s report of a task it does not know escapes the name's control characters and shows no stack of ours",
  async () => {
    const name = "ghost\nShutdown drained every background task: 3 succeeded";
    const ghost = defineTask(() => {}, { name });
    const over = counter(1);
    const after = defineTask(() => over.tick(), { name: "after" });
    const kv = await Deno.openKv(":memory:");
    const web = kvBackend({ kv, tasks: [ghost, after], listen: false });
    const reported: [unknown, TaskInfo][] = [];
    const listener = kvBackend({
      kv,
      tasks: [after],
      onTaskError: (error, info) => void reported.push([error, info]),
    });
    try {
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(ghost);
        tasks.addTask(after);
        return new Response("ok");
      }, { backend: web });
      await (await callHandler(handler, "/signup")).tasks;
      await over.done;
      const [letter] = await listener.failed();
      const [[error, info] = []] = reported;
      assert.equal(info?.name, name);
      const written = Deno.inspect(error);
      assert.equal(
        written,
        `[Error: No task named "ghost\\nShutdown drained every background task: 3 succeeded" in this process's 'tasks': it is kept as failed task "${letter?.id}" (backend.failed() lists it)]`,
      );
    } finally {
      await listener.close();
      await web.close();
      kv.close();
    }
  },
);

guardedTest(
  "kvBackend() writes its task names again while it stores, so that a listener started after a week of it still says which it lacks",
  async () => {
    using clock = mock.timers;
    clock.enable({ apis: ["Date"], now: Date.now() });
    const ghost = defineTask(() => {}, { name: "ghost" });
    const after = defineTask(() => {}, { name: "after" });
    const kv = await Deno.openKv(":memory:");
    const web = kvBackend({ kv, tasks: [ghost, after], listen: false });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(after);
      return new Response("ok");
    }, { backend: web });
    using output = consoleLines();
    let listener: ReturnType<typeof kvBackend> | undefined;
    try {
      await (await callHandler(handler, "/")).tasks;
      // The web process has run for eight days, storing all along.
      for (let day = 1; day <= 8; day++) {
        clock.tick(24 * 60 * 60 * 1000);
        await (await callHandler(handler, "/")).tasks;
      }
      listener = kvBackend({ kv, tasks: [after] });
      await within(
        output.seen(/^The KV backend does not know/),
        5_000,
        "the line at start",
      );
      assert.deepEqual(output.lines, [
        `The KV backend does not know task "ghost", which processes store chains with in this database: add it to its 'tasks', or its steps fail`,
      ]);
    } finally {
      await listener?.close();
      await web.close();
      kv.close();
    }
  },
);

guardedTest(
  "kvBackend() keeps as failed, undelivered, a message Deno KV gave up delivering",
  async () => {
    const consoleError = mock.method(console, "error", () => {});
    const task = defineTask((_context, _n: number) => {}, { name: "task" });
    const kv = await Deno.openKv(":memory:");
    const backend = kvBackend({
      kv,
      tasks: [task],
      listen: false,
      redelivery: [1],
    });
    const delivered = Promise.withResolvers<void>();
    // A process that crashes on every delivery, as far as the queue can tell.
    kv.listenQueue(() => {
      delivered.resolve();
      throw new Error("crashed");
    });
    try {
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(task, 42);
        return new Response("ok");
      }, { backend });
      const started = Date.now();
      await (await callHandler(handler, "/")).tasks;
      await delivered.promise;
      // Deno KV keeps the message aside after its last delivery,
      // on its own schedule: kv.watch() does not report that write, so the test
      // looks again, for at most five seconds.
      let letters = await backend.failed();
      for (let tries = 0; letters.length === 0 && tries < 500; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        letters = await backend.failed();
      }
      assert.equal(letters[0]?.reason, "undelivered");
      assert.equal(letters[0]?.name, "task");
      assert.deepEqual(letters[0]?.args, [42]);
      // Dated when found: Deno KV does not say when it gave up.
      const at = letters[0]!.at.getTime();
      assert.ok(
        at >= started && at <= Date.now(),
        letters[0]!.at.toISOString(),
      );
      // Filed once: a later list finds it as it was.
      assert.deepEqual(await backend.failed(), letters);
    } finally {
      backend.close();
      kv.close();
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "kvBackend() keeps as failed, undelivered, the steps of a message of several that Deno KV gave up delivering, but not those that ran",
  async () => {
    const task = defineTask((_context, _n: number) => {}, { name: "task" });
    await using db = await openBackend({ tasks: [task], listen: false });
    const keys = kvKeys(["background-tasks"]);
    const step = (chain: string, n: number): Step => ({
      afterwardStep: 1,
      chain,
      index: 0,
      attempt: 1,
      tasks: [{ name: "task", args: [n] }],
    });
    // The step of c1 ran (its chain is over); that of c2 did not.
    await db.kv.set(keys.progress("c2"), { index: 0, attempt: 1 });
    await db.kv.set(keys.undelivered(7), {
      afterwardSteps: 1,
      steps: [step("c1", 1), step("c2", 2)],
    });
    const failed = await db.backend.failed();
    assert.deepEqual(
      failed.map(({ id, reason, args }) => [id, reason, args]),
      [["c2:0", "undelivered", [2]]],
    );
    // Filed once.
    assert.deepEqual(await db.backend.failed(), failed);
  },
);

guardedTest(
  "kvBackend() keeps as failed, undelivered, a step queued by an earlier version, under its key of then",
  async () => {
    const task = defineTask((_context, _n: number) => {}, { name: "task" });
    await using db = await openBackend({ tasks: [task], listen: false });
    // Its chain, index and attempt, where a random number is now.
    await db.kv.set(
      ["background-tasks", "undelivered", "c1", 0, 1],
      {
        afterwardStep: 1,
        chain: "c1",
        index: 0,
        attempt: 1,
        tasks: [{ name: "task", args: [1] }],
      } satisfies Step,
    );
    const failed = await db.backend.failed();
    assert.deepEqual(
      failed.map(({ id, reason, args }) => [id, reason, args]),
      [["c1:0", "undelivered", [1]]],
    );
  },
);

guardedTest(
  "kvBackend() refuses at addTask what it could not run later",
  async (t) => {
    const registered = defineTask((_context, _value: unknown) => {}, {
      name: "registered",
    });
    const stranger = defineTask((_context, _value: unknown) => {}, {
      name: "stranger",
    });
    await using db = await openBackend({ tasks: [registered] });
    class Money {
      constructor(readonly cents: number) {}
    }
    const table: [string, (tasks: BackgroundTasks) => void, string][] = [
      [
        "a plain function",
        (tasks) => tasks.addTask(function sendEmail() {}),
        `Cannot add task "sendEmail" as the handler's backend runs only tasks made by defineTask: make it one and list it in the backend's 'tasks', or add it to tasks.inProcess to run it in this process`,
      ],
      [
        "an unregistered task",
        (tasks) => tasks.addTask(stranger, 1),
        `Cannot add task "stranger" as it is not among the KV backend's tasks: list it in 'tasks'`,
      ],
      [
        "a function argument",
        (tasks) => tasks.addTask(registered, { callback: () => {} }),
        `Cannot add task "registered" as args[0].callback is a function, which Deno KV cannot store: current value is a function`,
      ],
      [
        "a class instance",
        (tasks) => tasks.addTask(registered, [new Money(5)]),
        `Cannot add task "registered" as args[0][0] is an instance of Money, which Deno KV cannot store: current value is a Money`,
      ],
      [
        "a symbol",
        (tasks) => tasks.addTask(registered, Symbol("s")),
        `Cannot add task "registered" as args[0] is a symbol, which Deno KV cannot store: current value is Symbol(s)`,
      ],
      [
        "a chain over 64 KiB",
        (tasks) => {
          tasks.addTask(registered, "x".repeat(40_000));
          tasks.addTask(registered, "y".repeat(40_000));
        },
        `Cannot add task "registered" as the chain would weigh`,
      ],
    ];
    for (const [name, add, message] of table) {
      await t.step(name, async () => {
        const thrown = await addTaskError(db.backend, add);
        assert.ok(thrown instanceof TypeError, String(thrown));
        assert.ok(
          thrown.message.startsWith(message),
          `${thrown.message}\ndoes not start with\n${message}`,
        );
      });
    }
    assert.equal(KV_MAX_PAYLOAD, 65_536);
  },
);

guardedTest("kvBackend() accepts what Deno KV stores", async () => {
  const received = Promise.withResolvers<unknown[]>();
  const keep = defineTask((_context, ...values: unknown[]) => {
    received.resolve(values);
  }, { name: "keep" });
  await using db = await openBackend({ tasks: [keep] });
  const values = [
    new Date(0),
    new Map([["a", 1]]),
    new Set([1n]),
    new Uint8Array([1, 2]),
    /x/g,
    { nested: [undefined, null, NaN] },
  ];
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(keep, ...values);
    return new Response("ok");
  }, { backend: db.backend });
  await (await callHandler(handler, "/")).tasks;
  assert.deepEqual(await received.promise, values);
});

guardedTest(
  "kvBackend() refuses at addTask an argument Deno KV would change on the way, naming its path",
  async (t) => {
    const charge = defineTask((_context, _order: unknown) => {}, {
      name: "charge",
    });
    await using db = await openBackend({ tasks: [charge], listen: false });
    class PaymentError extends Error {
      override name = "PaymentError";
      code = "E_DECLINED";
    }
    const table: [string, unknown, string][] = [
      [
        "an Error subclass",
        { lastError: new PaymentError("declined") },
        `Cannot add task "charge" as args[0].lastError is a PaymentError built on an Error, which Deno KV would turn into a plain Error: current value is a PaymentError`,
      ],
      [
        "an Error's code",
        [Object.assign(new Error("declined"), { code: "E_DECLINED" })],
        `Cannot add task "charge" as args[0][0] has a property of its own, 'code', which Deno KV would drop: current value is an Error`,
      ],
      [
        "a Date's own property",
        { at: Object.assign(new Date(0), { zone: "Europe/Paris" }) },
        `Cannot add task "charge" as args[0].at has a property of its own, 'zone', which Deno KV would drop: current value is a Date`,
      ],
      [
        "a Map's own property",
        new Map([["a", Object.assign(new Set([1]), { label: "ids" })]]),
        `Cannot add task "charge" as args[0].get(…) has a property of its own, 'label', which Deno KV would drop: current value is a Set`,
      ],
    ];
    for (const [name, value, message] of table) {
      await t.step(name, async () => {
        const thrown = await addTaskError(
          db.backend,
          (tasks) => tasks.addTask(charge, value),
        );
        assert.ok(thrown instanceof TypeError, String(thrown));
        assert.equal(thrown.message, message);
      });
    }
  },
);

guardedTest(
  "kvBackend() delivers an error argument as it was added: its class, message, stack and cause",
  async () => {
    const received = Promise.withResolvers<unknown[]>();
    const keep = defineTask((_context, ...values: unknown[]) => {
      received.resolve(values);
    }, { name: "keep" });
    await using db = await openBackend({ tasks: [keep] });
    const sent = new RangeError("too far", { cause: new Error("root") });
    const values = [
      sent,
      new String("boxed"),
      new ArrayBuffer(4, { maxByteLength: 8 }),
    ];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(keep, ...values);
      return new Response("ok");
    }, { backend: db.backend });
    await (await callHandler(handler, "/")).tasks;
    const [error, boxed, buffer] = await received.promise;
    assert.ok(error instanceof RangeError);
    assert.equal(error.stack, sent.stack);
    assert.deepStrictEqual(error.cause, new Error("root"));
    assert.deepStrictEqual([error, boxed, buffer], values);
  },
);

guardedTest(
  "a chain the backend cannot take after the response is reported as failed",
  async () => {
    const task = defineTask(() => {}, { name: "task" });
    const kv = await Deno.openKv(":memory:");
    const backend = kvBackend({ kv, tasks: [task], listen: false });
    kv.close();
    const reported: [string, number][] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(task);
      tasks.addTask(task);
      return new Response("ok");
    }, {
      backend,
      handOver: "after-response",
      onTaskError: (_error, info) =>
        void reported.push([info.name, info.index]),
    });
    await (await callHandler(handler, "/")).tasks;
    assert.deepEqual(reported, [["task", 0], ["task", 1]]);
    assert.deepEqual(
      [handler.stats.failed, handler.stats.handedOver, handler.stats.pending],
      [2, 0, 0],
    );
  },
);

Deno.test("kvBackend() rejects options of the wrong type", async (t) => {
  const task = defineTask(() => {}, { name: "task" });
  const kv = await Deno.openKv(":memory:");
  try {
    const table: [string, () => unknown, string, string][] = [
      [
        "kv",
        () => kvBackend({ kv: {} as Deno.Kv, tasks: [task] }),
        "TypeError",
        "Cannot create KV backend as 'kv' must be a Deno.Kv: current value is an object",
      ],
      [
        "redelivery",
        () =>
          kvBackend({
            kv,
            tasks: [task],
            listen: false,
            redelivery: [1, 2, 3, 4, 5, 6],
          }),
        "RangeError",
        "Cannot create KV backend as 'redelivery' must have at most 5 steps, Deno KV's limit: current value is an array",
      ],
      [
        "redelivery that is not an array",
        () =>
          kvBackend({
            kv,
            tasks: [task],
            listen: false,
            redelivery: 1000 as unknown as number[],
          }),
        "TypeError",
        "Cannot create KV backend as 'redelivery' must be an array: current value is 1000",
      ],
      [
        "a misspelt option",
        () =>
          kvBackend({
            kv,
            tasks: [task],
            listn: false,
          } as unknown as KvBackendOptions),
        "TypeError",
        "Cannot create KV backend as 'listn' is not one of its options: did you mean 'listen'?",
      ],
      [
        "options that are not an object",
        () => kvBackend(undefined as unknown as KvBackendOptions),
        "TypeError",
        "Cannot create KV backend as 'options' must be a plain object: current value is undefined",
      ],
      [
        "tasks",
        () =>
          kvBackend({
            kv,
            tasks: [() => {}] as unknown as DefinedTask<never[]>[],
            listen: false,
          }),
        "TypeError",
        "Cannot create KV backend as 'tasks[0]' must be made by defineTask: current value is a function",
      ],
      [
        "duplicate names",
        () => kvBackend({ kv, tasks: [task, task], listen: false }),
        "TypeError",
        `Cannot create KV backend as two tasks are named "task": names must be unique`,
      ],
      [
        "backend",
        () =>
          withBackgroundTasks(() => new Response(), {
            backend: {} as ReturnType<typeof kvBackend>,
          }),
        "TypeError",
        "Cannot wrap handler as 'backend' must have accept() and enqueue() methods: current value is an object",
      ],
    ];
    for (const [name, call, errorName, message] of table) {
      await t.step(name, () => {
        assert.throws(call, { name: errorName, message });
      });
    }
  } finally {
    kv.close();
  }
});

/** A chain of one `keep` task, as the runner hands it over. */
function handedChain(task: DefinedTask<[string]>, arg: string, id?: string) {
  return {
    id: id ?? crypto.randomUUID(),
    tasks: [{
      name: task.name,
      args: [arg],
      timeout: undefined,
      retry: undefined,
      task: task as DefinedTask,
    }],
    request: undefined,
    delivered: undefined,
  };
}

guardedTest(
  "kvBackend() stores the chains handed over together in few commits",
  async () => {
    const keep = defineTask((_context, _value: string) => {}, {
      name: "keep",
    });
    await using db = await openBackend({ tasks: [keep], listen: false });
    const atomic = mock.method(db.kv, "atomic");
    await Promise.all(
      Array.from(
        { length: 250 },
        (_, index) => db.backend.enqueue(handedChain(keep, `${index}`)),
      ),
    );
    // Deno KV allows 100 checks per atomic operation: 100 + 100 + 50.
    assert.equal(atomic.mock.callCount(), 3);
    let stored = 0;
    for await (
      const _ of db.kv.list({ prefix: ["background-tasks", "chains"] })
    ) stored++;
    assert.equal(stored, 250);
  },
);

guardedTest(
  "kvBackend() queues the first steps of the chains handed over together in one message, and a listener runs each",
  async () => {
    const ran = new Set<string>();
    const done = counter(3);
    const keep = defineTask((_context, value: string) => {
      ran.add(value);
      done.tick();
    }, { name: "keep" });
    await using db = await openBackend({ tasks: [keep], listen: false });
    const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
    try {
      await Promise.all(
        ["a", "b", "c"].map((value) =>
          db.backend.enqueue(handedChain(keep, value))
        ),
      );
      // One message per chain before: a delivery and an acknowledgement
      // each, every one a write of Deno KV's.
      assert.equal(enqueue.mock.callCount(), 1);
    } finally {
      enqueue.mock.restore();
    }
    const listener = kvBackend({ kv: db.kv, tasks: [keep] });
    try {
      await within(done.done, 10_000, "the three tasks");
      assert.deepEqual([...ran].sort(), ["a", "b", "c"]);
    } finally {
      await listener.close();
    }
  },
);

guardedTest(
  "kvBackend().handle() runs each step of a message of several as if it had come alone, none twice",
  async () => {
    const ran: string[] = [];
    const keep = defineTask((_context, value: string) => void ran.push(value), {
      name: "keep",
    });
    await using db = await openBackend({ tasks: [keep], listen: false });
    const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
    let message: { steps: unknown[] };
    try {
      await Promise.all(
        ["a", "b"].map((value) => db.backend.enqueue(handedChain(keep, value))),
      );
      message = enqueue.mock.calls[0]!.arguments[0] as { steps: unknown[] };
    } finally {
      enqueue.mock.restore();
    }
    // The first step ran, then a crash lost the message's acknowledgement.
    assert.equal(await db.backend.handle(message.steps[0]), true);
    assert.deepEqual(ran, ["a"]);
    assert.equal(await db.backend.handle(message), true);
    assert.deepEqual(ran, ["a", "b"]);
    assert.equal(await db.backend.handle(message), true);
    assert.deepEqual(ran, ["a", "b"]);
  },
);

guardedTest(
  "kvBackend().handle() runs the other steps of a message of several one of which has a task it does not know",
  async () => {
    const ran: string[] = [];
    const keep = defineTask((_context, value: string) => void ran.push(value), {
      name: "keep",
    });
    const ghost = defineTask((_context, _value: string) => {}, {
      name: "ghost",
    });
    await using db = await openBackend({ tasks: [keep, ghost], listen: false });
    const listener = kvBackend({ kv: db.kv, tasks: [keep], listen: false });
    const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
    let message: { steps: unknown[] };
    try {
      await Promise.all([
        db.backend.enqueue(handedChain(keep, "a")),
        db.backend.enqueue(handedChain(ghost, "lost", "c-ghost")),
        db.backend.enqueue(handedChain(keep, "b")),
      ]);
      message = enqueue.mock.calls[0]!.arguments[0] as { steps: unknown[] };
    } finally {
      enqueue.mock.restore();
    }
    assert.equal(message.steps.length, 3);
    using output = consoleLines();
    try {
      assert.equal(await listener.handle(message), true);
      assert.deepEqual(ran.toSorted(), ["a", "b"]);
      assert.deepEqual(
        (await listener.failed()).map(({ id, reason }) => [id, reason]),
        [["c-ghost:0", "failed"]],
      );
      assert.equal(output.lines.length, 1, output.lines.join("\n"));
      // Delivered again: nothing runs twice, nothing is filed twice.
      assert.equal(await listener.handle(message), true);
      assert.deepEqual(ran.toSorted(), ["a", "b"]);
      assert.equal((await listener.failed()).length, 1);
    } finally {
      await listener.close();
    }
  },
);

guardedTest(
  "kvBackend() sends a chain too large to share a message in one of its own",
  async () => {
    const keep = defineTask((_context, _value: string) => {}, {
      name: "keep",
    });
    await using db = await openBackend({ tasks: [keep], listen: false });
    const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
    try {
      await Promise.all([
        db.backend.enqueue(handedChain(keep, "small")),
        db.backend.enqueue(handedChain(keep, "x".repeat(40_000))),
        db.backend.enqueue(handedChain(keep, "small too")),
      ]);
      const sent = enqueue.mock.calls.map(({ arguments: [message] }) =>
        (message as { steps?: unknown[] }).steps?.length ?? 1
      );
      assert.deepEqual(sent.sort(), [1, 2]);
    } finally {
      enqueue.mock.restore();
    }
  },
);

guardedTest(
  "kvBackend() fails only the chain at fault in a group",
  async () => {
    const keep = defineTask((_context, _value: string) => {}, {
      name: "keep",
    });
    await using db = await openBackend({ tasks: [keep], listen: false });
    const first = handedChain(keep, "first");
    await db.backend.enqueue(first);
    const outcomes = await Promise.allSettled([
      db.backend.enqueue(handedChain(keep, "before")),
      db.backend.enqueue(handedChain(keep, "again", first.id)),
      db.backend.enqueue(handedChain(keep, "after")),
    ]);
    assert.deepEqual(outcomes.map((outcome) => outcome.status), [
      "fulfilled",
      "rejected",
      "fulfilled",
    ]);
    assert.equal(
      (outcomes[1] as PromiseRejectedResult).reason.message,
      `Chain ${first.id} is already queued`,
    );
  },
);

guardedTest(
  "kvBackend() splits a group over Deno KV's size per commit",
  async () => {
    const keep = defineTask((_context, _value: string) => {}, {
      name: "keep",
    });
    await using db = await openBackend({ tasks: [keep], listen: false });
    const atomic = mock.method(db.kv, "atomic");
    // 20 chains of 60 KB: 1.2 MB, more than the 800 KiB one commit may write.
    const big = "x".repeat(60_000);
    await Promise.all(
      Array.from(
        { length: 20 },
        () => db.backend.enqueue(handedChain(keep, big)),
      ),
    );
    // The group, then its halves of 600 KB each.
    assert.equal(atomic.mock.callCount(), 3);
  },
);

guardedTest(
  "kvBackend() measures a chain exactly once its bounds near the limit",
  async () => {
    const keep = defineTask((_context, _value: string) => {}, {
      name: "keep",
    });
    await using db = await openBackend({ tasks: [keep], listen: false });
    // Each 20,000-character ASCII string weighs about 20 KB but is bounded
    // at 40 KB: three fit in a message, a fourth does not.
    const text = "x".repeat(20_000);
    const refused: string[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      for (let i = 0; i < 4; i++) {
        try {
          tasks.addTask(keep, text);
        } catch (error) {
          refused.push(`${i}: ${(error as Error).message}`);
        }
      }
      return new Response("ok");
    }, { backend: db.backend });
    await (await callHandler(handler, "/")).tasks;
    assert.equal(refused.length, 1);
    assert.match(
      refused[0]!,
      /^3: Cannot add task "keep" as the chain would weigh 8\d{4} bytes, more than the 65536 a Deno KV message may hold$/,
    );
    assert.equal(handler.stats.handedOver, 3);
  },
);

guardedTest(
  "kvBackend() counts the request's URL in the chain's weight",
  async () => {
    const keep = defineTask((_context, _value: string) => {}, {
      name: "keep",
    });
    await using db = await openBackend({ tasks: [keep], listen: false });
    const text = "x".repeat(63_000);
    const errors: unknown[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      try {
        tasks.addTask(keep, text);
      } catch (error) {
        errors.push(error);
      }
      return new Response("ok");
    }, { backend: db.backend });
    // With a short URL the message fits, and is stored.
    await (await callHandler(handler, "/")).tasks;
    assert.deepEqual([errors.length, handler.stats.handedOver], [0, 1]);
    // A long query string would take it over the limit at commit time:
    // refused in the handler instead.
    await (await callHandler(handler, `/?q=${"q".repeat(2_000)}`)).tasks;
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof TypeError);
    assert.deepEqual([handler.stats.handedOver, handler.stats.failed], [1, 0]);
  },
);

guardedTest(
  "kvBackend() counts a view's whole buffer, as Deno KV stores it",
  async () => {
    const store = defineTask((_context, _bytes: Uint8Array) => {}, {
      name: "store",
    });
    await using db = await openBackend({ tasks: [store], listen: false });
    const file = new Uint8Array(100_000);
    let refused: unknown;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      try {
        tasks.addTask(store, file.subarray(0, 16));
      } catch (error) {
        refused = error;
      }
      tasks.addTask(store, file.slice(0, 16));
      return new Response("ok");
    }, { backend: db.backend });
    await (await callHandler(handler, "/")).tasks;
    assert.ok(refused instanceof TypeError);
    assert.match(
      refused.message,
      /^Cannot add task "store" as the chain would weigh 100\d{3} bytes, more than the 65536 a Deno KV message may hold$/,
    );
    // The copy of the 16 bytes fits, and was stored.
    assert.deepEqual([handler.stats.handedOver, handler.stats.failed], [1, 0]);
  },
);

guardedTest(
  "kvBackend() keeps as failed a task that rejects with a value that resists description",
  async (t) => {
    for (const { label, value, text } of hostileValues()) {
      await t.step(label, async () => {
        let runs = 0;
        const over = Promise.withResolvers<void>();
        const hostile = defineTask(() => {
          // A second run means the message was delivered again.
          if (++runs > 1) over.resolve();
          return Promise.reject(value);
        }, { name: "hostile" });
        const after = defineTask(() => {}, { name: "after" });
        const reported: unknown[] = [];
        const outcomes: string[] = [];
        // A message whose handler throws comes back after a millisecond.
        await using db = await openBackend({
          tasks: [hostile, after],
          redelivery: [1],
          onTaskError: (error) => void reported.push(error),
          onTaskEnd: ({ name, outcome }) => {
            outcomes.push(`${name} ${outcome}`);
            if (name === "after") over.resolve();
          },
        });
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(hostile);
          tasks.addTask(after);
          return new Response("ok");
        }, { backend: db.backend });
        await (await callHandler(handler, "/")).tasks;
        await over.promise;
        assert.equal(runs, 1);
        assert.deepEqual(outcomes, ["hostile failed", "after succeeded"]);
        assert.equal(reported.length, 1);
        assert.ok(reported[0] === value);
        const letters = await db.backend.failed();
        assert.deepEqual(
          letters.map(({ reason, name, attempts }) => [reason, name, attempts]),
          [["failed", "hostile", 1]],
        );
        assert.equal(letters[0]!.error, text);
      });
    }
  },
);

guardedTest(
  "kvBackend() reports an abort listener that throws at a task's timeout, and the chain goes on",
  async () => {
    const over = Promise.withResolvers<void>();
    const hostile = defineTask(({ signal }) => {
      signal.addEventListener("abort", () => {
        throw new Error("listener failed");
      });
      return new Promise(() => {});
    }, { name: "hostile", timeout: 10 });
    const after = defineTask(() => over.resolve(), { name: "after" });
    const outcomes: string[] = [];
    const consoleError = mock.method(console, "error", () => {});
    try {
      await using db = await openBackend({
        tasks: [hostile, after],
        onTaskError: () => {},
        onTaskEnd: ({ name, outcome }) =>
          void outcomes.push(`${name} ${outcome}`),
      });
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(hostile);
        tasks.addTask(after);
        return new Response("ok");
      }, { backend: db.backend });
      await (await callHandler(handler, "/")).tasks;
      await over.promise;
      assert.deepEqual(outcomes.slice(0, 1), ["hostile timedOut"]);
      assert.match(
        String(consoleError.mock.calls[0]?.arguments[0]),
        /^An abort listener of background task "hostile" at index 0 .*threw:$/,
      );
    } finally {
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "kvBackend() close() reports a task's abort listener that throws, naming the task",
  async () => {
    const started = Promise.withResolvers<void>();
    const hostile = defineTask(({ signal }) => {
      signal.addEventListener("abort", () => {
        throw new Error("listener failed");
      });
      started.resolve();
      return new Promise(() => {});
    }, { name: "hostile" });
    const consoleError = mock.method(console, "error", () => {});
    try {
      await using db = await openBackend({ tasks: [hostile] });
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(hostile);
        return new Response("ok");
      }, { backend: db.backend });
      await (await callHandler(handler, "/")).tasks;
      await started.promise;
      db.backend.close();
      assert.match(
        String(consoleError.mock.calls[0]?.arguments[0]),
        /^An abort listener of background task "hostile" at index 0 .*threw:$/,
      );
      assert.equal(
        (consoleError.mock.calls[0]?.arguments[1] as Error).message,
        "listener failed",
      );
    } finally {
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "kvBackend() rejects the chains of a commit the database stayed locked for, without splitting it",
  async () => {
    // Another program holds the file's lock: each commit waits 5 s, then
    // fails with Deno KV's TypeError, and the backend gives up after 30 s.
    // Split, each half of the group would wait its 30 s again.
    const noop = defineTask(() => {}, { name: "noop" });
    await using db = await openBackend({ tasks: [noop], listen: false });
    using clock = mock.timers;
    clock.enable({ apis: ["Date"], now: 0 });
    const commit = mock.method(
      Deno.AtomicOperation.prototype,
      "commit",
      () => {
        clock.tick(5_000);
        return Promise.reject(new TypeError("database is locked"));
      },
    );
    try {
      const chain = (i: number) => ({
        id: `c${i}`,
        tasks: [{ name: "noop", args: [], task: noop }],
      });
      // Handed over together: one commit.
      const stores = [0, 1, 2, 3].map((i) =>
        db.backend.enqueue(chain(i) as never)
      );
      const settled = await within(
        Promise.allSettled(stores),
        10_000,
        "the stores",
      );
      for (const result of settled) {
        assert.equal(result.status, "rejected");
        const { reason } = result as PromiseRejectedResult;
        assert.ok(reason instanceof TypeError, Deno.inspect(reason));
        assert.equal(reason.message, "database is locked");
      }
      // The group's 30 s, not also those of its halves.
      assert.equal(commit.mock.callCount(), 6);
    } finally {
      commit.mock.restore();
    }
  },
);

guardedTest(
  "kvBackend() runs its chains while a program's tests stop Date.now()",
  async () => {
    // mock.timers on Date only: the listener's write batch still commits.
    using clock = mock.timers;
    clock.enable({ apis: ["Date"], now: 1_700_000_000_000 });
    const ran = Promise.withResolvers<string>();
    const send = defineTask((_context, to: string) => ran.resolve(to), {
      name: "send",
    });
    await using db = await openBackend({ tasks: [send] });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(send, "a@example.com");
      return new Response("ok");
    }, { backend: db.backend });
    await (await callHandler(handler, "/")).tasks;
    assert.equal(
      await within(ran.promise, 5_000, "the task, with Date stopped"),
      "a@example.com",
    );
  },
);
