// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type BackendStatus,
  defineTask,
  type DurableTasks,
  type TaskBackend,
  withBackgroundTasks,
} from "../../mod.ts";
import {
  assertKeyedTasksKept,
  type BackendChain,
  type KeyedTasksKept,
} from "../../backend.ts";
import { callHandler, fakeServeHandlerInfo } from "../../testing.ts";
import { addTaskError, guardedTest, sentInfo } from "../_helpers/common.ts";

guardedTest(
  "a task added while a chain is being handed to a backend is handed over as a chain of its own",
  async () => {
    const step = defineTask((_context, _n: number) => {}, { name: "step" });
    const received: BackendChain[] = [];
    const handing = Promise.withResolvers<void>();
    const stored = Promise.withResolvers<void>();
    const backend: TaskBackend = {
      accept() {},
      enqueue(chain) {
        received.push(chain);
        handing.resolve();
        return stored.promise;
      },
    };
    let tasks: DurableTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, given) => {
      tasks = given;
      given.addTask(step, 1);
      return new Response("ok");
    }, { backend, handOver: "after-response" });
    const { tasks: settled } = await callHandler(handler, "/");
    await handing.promise;
    tasks!.addTask(step, 2);
    assert.equal(handler.stats.pending, 2);
    stored.resolve();
    await settled;
    await handler.drain();
    assert.deepEqual(
      received.map((chain) => chain.tasks.map((task) => task.args)),
      [[[1]], [[2]]],
    );
    assert.deepEqual([handler.stats.pending, handler.stats.handedOver], [0, 2]);
  },
);

guardedTest(
  "a backend's accept() sees the id its enqueue() carries, one per chain, from the chain's first task",
  async () => {
    const step = defineTask((_context, _n: number) => {}, { name: "step" });
    const seen: string[] = [];
    const handing = Promise.withResolvers<void>();
    const stored = Promise.withResolvers<void>();
    const backend: TaskBackend = {
      accept(task, chain) {
        seen.push(`accept ${task.args[0]} ${chain.id}`);
      },
      enqueue(chain) {
        seen.push(`enqueue ${chain.tasks.length} ${chain.id}`);
        handing.resolve();
        return stored.promise;
      },
    };
    let tasks: DurableTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, given) => {
      tasks = given;
      given.addTask(step, 1);
      given.addTask(step, 2);
      return new Response("ok");
    }, { backend, handOver: "after-response" });
    const { tasks: settled } = await callHandler(handler, "/");
    await handing.promise;
    // Added while the chain is stored: a chain of its own, an id of its own.
    tasks!.addTask(step, 3);
    stored.resolve();
    await settled;
    await handler.drain();
    await (await callHandler(handler, "/")).tasks;
    const ids = [...new Set(seen.map((line) => line.split(" ")[2]))];
    assert.equal(ids.length, 3);
    assert.ok(ids.every((id) => typeof id === "string" && id.length > 0));
    const [a, b, c] = ids;
    assert.deepEqual(seen, [
      `accept 1 ${a}`,
      `accept 2 ${a}`,
      `enqueue 2 ${a}`,
      `accept 3 ${b}`,
      `enqueue 1 ${b}`,
      `accept 1 ${c}`,
      `accept 2 ${c}`,
      `enqueue 2 ${c}`,
    ]);
  },
);

guardedTest(
  "a chain abandoned while a backend stores it leaves exact counters",
  async () => {
    const job = defineTask(() => {}, { name: "job" });
    const never = Promise.withResolvers<void>();
    const handing = Promise.withResolvers<void>();
    const backend: TaskBackend = {
      accept() {},
      enqueue() {
        handing.resolve();
        return never.promise;
      },
    };
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job);
      tasks.addTask(job);
      return new Response("ok");
    }, { backend, handOver: "after-response" });
    await callHandler(handler, "/");
    await handing.promise;
    const stop = new AbortController();
    const drained = handler.drain({ signal: stop.signal });
    stop.abort();
    assert.deepEqual((await drained).abandonedTasks, { job: 2 });
    const { pending, queued, running, abandoned } = handler.stats;
    assert.deepEqual({ pending, queued, running, abandoned }, {
      pending: 0,
      queued: 0,
      running: 0,
      abandoned: 2,
    });
    never.resolve();
  },
);

/** A backend whose enqueue() the test settles, recording what it is given. */
function gatedBackend() {
  const calls: {
    chain: BackendChain;
    signal: AbortSignal | undefined;
    settle: PromiseWithResolvers<void>;
  }[] = [];
  const called = Promise.withResolvers<void>();
  const backend: TaskBackend = {
    accept() {},
    enqueue(chain, options) {
      const settle = Promise.withResolvers<void>();
      calls.push({ chain, signal: options?.signal, settle });
      called.resolve();
      return settle.promise;
    },
  };
  return { backend, calls, called: called.promise };
}

const job = defineTask((_context, _n: number) => {}, { name: "job" });

guardedTest(
  "with a backend, the response goes out only once the chain is stored",
  async () => {
    const { backend, calls, called } = gatedBackend();
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job, 1);
      return new Response("accepted", { status: 202 });
    }, { backend });
    let answered = false;
    const response = Promise.resolve(
      handler(new Request("http://localhost/"), fakeServeHandlerInfo()),
    ).then((response) => {
      answered = true;
      return response;
    });
    await called;
    // The response waits for the store, not for info.completed.
    assert.equal(answered, false);
    assert.equal(calls[0]?.chain.delivered, undefined);
    calls[0]!.settle.resolve();
    assert.equal(await (await response).text(), "accepted");
    await handler.drain();
    assert.deepEqual([handler.stats.handedOver, handler.stats.pending], [1, 0]);
  },
);

guardedTest(
  "with a backend, a chain that cannot be stored fails the handler and its tasks are discarded",
  async () => {
    const { backend, calls, called } = gatedBackend();
    const reported: unknown[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job, 1);
      tasks.addTask(job, 2);
      return new Response("accepted", { status: 202 });
    }, { backend, onTaskError: (error) => void reported.push(error) });
    const response = handler(new Request("http://localhost/"), sentInfo());
    await called;
    const refusal = new Error("already queued");
    calls[0]!.settle.reject(refusal);
    await assert.rejects(async () => await response, (error: Error) => {
      assert.equal(error.name, "Error");
      assert.equal(
        error.message,
        "Cannot respond as the backend could not store the request's tasks",
      );
      assert.equal(error.cause, refusal);
      return true;
    });
    await handler.drain();
    assert.deepEqual(reported, []);
    const { discarded, failed, pending } = handler.stats;
    assert.deepEqual({ discarded, failed, pending }, {
      discarded: 2,
      failed: 0,
      pending: 0,
    });
  },
);

guardedTest(
  "with a backend, a chain that cannot be stored cancels the body its handler answered with",
  async () => {
    const backend: TaskBackend = {
      accept() {},
      enqueue: () => Promise.reject(new Error("already queued")),
    };
    const cancelled = Promise.withResolvers<unknown>();
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job, 1);
      const body = new ReadableStream<Uint8Array>({
        cancel: (reason) => cancelled.resolve(reason),
      });
      return new Response(body, { status: 202 });
    }, { backend });
    await assert.rejects(
      async () => await handler(new Request("http://localhost/"), sentInfo()),
      {
        message:
          "Cannot respond as the backend could not store the request's tasks",
      },
    );
    await cancelled.promise;
  },
);

guardedTest(
  "with a backend, a drain that gives up on a chain being stored aborts the store and fails the handler",
  async () => {
    const { backend, calls, called } = gatedBackend();
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job, 1);
      return new Response("accepted", { status: 202 });
    }, { backend });
    const response = handler(new Request("http://localhost/"), sentInfo());
    await called;
    const result = await handler.drain({ timeout: 0 });
    assert.deepEqual(result.abandonedTasks, { job: 1 });
    assert.equal(calls[0]?.signal?.aborted, true);
    await assert.rejects(async () => await response, {
      message:
        "Cannot respond as the backend could not store the request's tasks",
    });
    assert.deepEqual([handler.stats.abandoned, handler.stats.pending], [1, 0]);
  },
);

guardedTest(
  "a backend's abort listener that throws when a drain gives up on a chain it stores is reported, not fatal",
  async () => {
    const consoleError = mock.method(console, "error", () => {});
    try {
      const handing = Promise.withResolvers<void>();
      const backend: TaskBackend = {
        accept() {},
        enqueue(_chain, options) {
          options?.signal?.addEventListener("abort", () => {
            throw new Error("backend listener failed");
          });
          handing.resolve();
          return new Promise(() => {});
        },
      };
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(job, 1);
        return new Response("ok");
      }, { backend, handOver: "after-response" });
      await callHandler(handler, "/");
      await handing.promise;
      const result = await handler.drain({ timeout: 0 });
      assert.deepEqual(result.abandonedTasks, { job: 1 });
      assert.match(
        String(consoleError.mock.calls[0]?.arguments[0]),
        /^An abort listener of background task "job" at index 0 .*threw:$/,
      );
    } finally {
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "with a backend, waitUntil() waits in this process instead of throwing: a promise of this process is no task for a backend",
  async () => {
    const { backend, calls } = gatedBackend();
    const thrown = await addTaskError(
      backend,
      (tasks) => tasks.waitUntil(Promise.resolve()),
    );
    assert.equal(thrown, undefined);
    assert.equal(calls.length, 0);
  },
);

guardedTest(
  "stats shows the tasks a backend is storing and its status; a drain that gives up on them says so",
  async () => {
    const job = defineTask(function job() {}, { name: "job" });
    let status: BackendStatus = { state: "up", since: new Date(0) };
    const waiting: (() => void)[] = [];
    const handed = Promise.withResolvers<void>();
    const backend: TaskBackend = {
      accept() {},
      enqueue(_chain, options) {
        const signal = options!.signal!;
        return new Promise((resolve, reject) => {
          if (waiting.push(resolve) === 2) handed.resolve();
          signal.addEventListener("abort", () => reject(signal.reason));
        });
      },
      get status() {
        return status;
      },
    };
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job);
      tasks.addTask(job);
      return new Response("ok");
    }, { backend, handOver: "after-response" });
    const first = await callHandler(handler, "/1");
    await callHandler(handler, "/2");
    await handed.promise;
    assert.equal(handler.stats.storing, 4);
    assert.equal(handler.stats.backend, status);
    // A task being stored is neither queued nor running: the three add up
    // to what is pending, as the tasks gauge shows them.
    const { pending, queued, running, storing } = handler.stats;
    assert.deepEqual({ pending, queued, running, storing }, {
      pending: 4,
      queued: 0,
      running: 0,
      storing: 4,
    });
    // One chain is stored; then the store goes away.
    waiting[0]!();
    await first.tasks;
    const down: BackendStatus = {
      state: "down",
      since: new Date(),
      error: "connect ECONNREFUSED 127.0.0.1:6379",
    };
    status = down;
    const result = await handler.drain({ signal: AbortSignal.abort() });
    assert.deepEqual(
      [result.handedOver, result.abandoned, result.unstored, result.backend],
      [0, 2, 2, down],
    );
    assert.deepEqual(
      [
        handler.stats.storing,
        handler.stats.handedOver,
        handler.stats.abandoned,
      ],
      [0, 2, 2],
    );
  },
);

Deno.test("assertKeyedTasksKept() refuses a keyed task whose onDuplicate or delay a backend cannot keep, and passes the rest", async (t) => {
  const action = "Cannot create test backend";
  const keyed = (
    name: string,
    onDuplicate: "queue" | "skip" | "replace",
    delay = 0,
  ) =>
    defineTask((_context, _id: string) => {}, {
      name,
      key: (id) => id,
      onDuplicate,
      delay,
    }) as unknown as ReturnType<typeof defineTask<never[]>>;
  const plain = defineTask(() => {}, { name: "plain" });
  const kept: KeyedTasksKept = {
    onDuplicate: ["queue", "skip"],
    delay: false,
    reason: "it stores no timers",
  };
  await t.step("modes it keeps pass, tasks without a key too", () => {
    assertKeyedTasksKept(
      [plain, keyed("a", "queue"), keyed("b", "skip")],
      kept,
      action,
    );
  });
  await t.step("a mode it does not keep", () => {
    assert.throws(
      () => assertKeyedTasksKept([plain, keyed("c", "replace")], kept, action),
      {
        name: "TypeError",
        message:
          `Cannot create test backend as task "c" is keyed with onDuplicate "replace", which this backend cannot keep: it stores no timers`,
      },
    );
  });
  await t.step("a delay it does not keep", () => {
    assert.throws(
      () => assertKeyedTasksKept([keyed("d\n", "queue", 500)], kept, action),
      {
        name: "TypeError",
        message:
          `Cannot create test backend as task "d\\n" has a 'delay' of 500 ms, which this backend cannot keep: it stores no timers`,
      },
    );
  });
  await t.step("no mode at all: every keyed task is refused", () => {
    assert.throws(
      () =>
        assertKeyedTasksKept([keyed("e", "queue")], {
          onDuplicate: [],
          delay: true,
          reason: "not yet",
        }, action),
      {
        name: "TypeError",
        message: /task "e" is keyed with onDuplicate "queue"/,
      },
    );
  });
});

guardedTest(
  "the keyed tasks a backend's enqueue() names as deduplicated end so, each told to onTaskEnd once, the others handed over",
  async () => {
    const warm = defineTask((_context, _page: string) => {}, {
      name: "warm",
      key: (page) => page,
      onDuplicate: "skip",
    });
    const plain = defineTask(() => {}, { name: "plain" });
    const backend: TaskBackend = {
      accept() {},
      // Positions out of range, repeated or not integers are ignored.
      enqueue: () =>
        Promise.resolve({ deduplicated: [3, 1, 1, 7, -1, 0.5, "2"] as never }),
    };
    const ends: unknown[] = [];
    const errors: unknown[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(warm, "/a");
      tasks.addTask(warm, "/a");
      tasks.addTask(plain);
      tasks.addTask(warm, "/b");
      return new Response("ok");
    }, {
      backend,
      onTaskEnd: (event) => void ends.push(event),
      onTaskError: (error) => void errors.push(error),
    });
    const { tasks } = await callHandler(
      handler,
      new Request("http://localhost/save", { method: "POST" }),
    );
    await tasks;
    const told = {
      attempt: 0,
      request: { method: "POST", url: "http://localhost/save" },
      delivered: undefined,
      duration: 0,
      outcome: "deduplicated",
      error: undefined,
      willRetry: false,
    };
    assert.deepEqual(ends, [
      { name: "warm", index: 1, ...told },
      { name: "warm", index: 3, ...told },
    ]);
    assert.deepEqual(errors, []);
    const { pending, storing, handedOver, deduplicated } = handler.stats;
    assert.deepEqual({ pending, storing, handedOver, deduplicated }, {
      pending: 0,
      storing: 0,
      handedOver: 2,
      deduplicated: 2,
    });
    const drained = await handler.drain();
    assert.equal(drained.handedOver, 0);
  },
);

guardedTest(
  "a backend whose enqueue() resolves with something else hands every task over",
  async () => {
    const warm = defineTask((_context, _page: string) => {}, {
      name: "warm",
      key: (page) => page,
    });
    for (
      const result of [
        undefined,
        null,
        42,
        { deduplicated: "0" },
        {
          get deduplicated() {
            throw new Error("hostile");
          },
        },
      ]
    ) {
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(warm, "/a");
        return new Response("ok");
      }, {
        backend: {
          accept() {},
          enqueue: () => Promise.resolve(result as never),
        },
      });
      await (await callHandler(handler, "/")).tasks;
      assert.deepEqual(
        [handler.stats.handedOver, handler.stats.deduplicated],
        [1, 0],
      );
    }
  },
);
