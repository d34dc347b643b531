// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { BackgroundTasks, type TaskInfo } from "../../mod.ts";
import { guardedTest } from "../_helpers/common.ts";

function quiet(): (error: unknown, info: TaskInfo) => void {
  return () => {};
}

guardedTest(
  "addTask() runs tasks in the order they were added, each awaited",
  async () => {
    const log: string[] = [];
    const tasks = new BackgroundTasks();
    tasks.addTask(async (label: string) => {
      log.push(`${label} start`);
      await new Promise((resolve) => setTimeout(resolve, 5));
      log.push(`${label} end`);
    }, "slow");
    tasks.addTask((label: string) => log.push(label), "sync");
    tasks.addTask(async (label: string) => {
      await Promise.resolve();
      log.push(label);
    }, "async");

    await tasks.run();

    assert.deepEqual(log, ["slow start", "slow end", "sync", "async"]);
  },
);

guardedTest(
  "addTask() passes the arguments and calls the function without a this",
  async () => {
    const calls: unknown[][] = [];
    const tasks = new BackgroundTasks();
    tasks.addTask(
      function record(this: unknown, a: number, b?: string) {
        calls.push([this, a, b]);
      },
      1,
      "two",
    );
    tasks.addTask(function record(this: unknown, a: number, b?: string) {
      calls.push([this, a, b]);
    }, 3);

    await tasks.run();

    assert.deepEqual(calls, [[undefined, 1, "two"], [undefined, 3, undefined]]);
  },
);

Deno.test("addTask() rejects a value that is not a function", async (t) => {
  const table: [unknown, string][] = [
    [undefined, "undefined"],
    [null, "null"],
    ["sendEmail", '"sendEmail"'],
    [42, "42"],
    [{ fn() {} }, "an object"],
    [[() => {}], "an array"],
  ];
  for (const [value, shown] of table) {
    await t.step(shown, () => {
      const tasks = new BackgroundTasks();
      assert.throws(
        // @ts-expect-error: the point is the runtime check
        () => tasks.addTask(value),
        {
          name: "TypeError",
          message:
            `Cannot add task as 'fn' must be a function or a defined task: current value is ${shown}`,
        },
      );
      assert.equal(tasks.size, 0);
    });
  }
});

Deno.test("addTask() given a promise says to pass the function, or use waitUntil()", () => {
  const tasks = new BackgroundTasks();
  async function sendEmail(_to: string): Promise<void> {}
  const sending = sendEmail("a@example.com");
  assert.throws(
    // @ts-expect-error: the point is the runtime check
    () => tasks.addTask(sending),
    {
      name: "TypeError",
      message:
        "Cannot add task as 'fn' is a promise, which has started already: pass the function and its arguments, or use waitUntil() for a promise",
    },
  );
  assert.equal(tasks.size, 0);
});

Deno.test("size counts every task added, including those that have run", async () => {
  const tasks = new BackgroundTasks();
  assert.equal(tasks.size, 0);
  tasks.addTask(() => {});
  tasks.addTask(() => {});
  assert.equal(tasks.size, 2);
  await tasks.run();
  assert.equal(tasks.size, 2);
});

guardedTest(
  "run() isolates every kind of failure, reports it and runs the next task",
  async () => {
    const error = new Error("sync throw");
    const rejection = new Error("async reject");
    const thenableReason = new Error("thenable reject");
    const tasks = new BackgroundTasks();
    tasks.addTask(function throwsSync() {
      throw error;
    });
    tasks.addTask(async function rejects() {
      await Promise.resolve();
      throw rejection;
    });
    tasks.addTask(function rejectsString() {
      return Promise.reject("a string");
    });
    tasks.addTask(function rejectsUndefined() {
      return Promise.reject(undefined);
    });
    tasks.addTask(function rejectsNull() {
      return Promise.reject(null);
    });
    tasks.addTask(function rejectingThenable() {
      return {
        then(_resolve: unknown, reject: (reason: unknown) => void) {
          reject(thenableReason);
        },
      };
    });
    tasks.addTask(function thenThrows() {
      return {
        then() {
          throw "then threw";
        },
      };
    });
    tasks.addTask(function succeeds() {
      return "done";
    });

    const reported: [unknown, TaskInfo][] = [];
    const results = await tasks.run({
      onTaskError: (reason, info) => {
        reported.push([reason, info]);
      },
    });

    const reasons = [
      error,
      rejection,
      "a string",
      undefined,
      null,
      thenableReason,
      "then threw",
    ];
    assert.deepEqual(
      reported.map(([reason]) => reason),
      reasons,
    );
    assert.deepEqual(
      reported.map(([, info]) => info),
      [
        "throwsSync",
        "rejects",
        "rejectsString",
        "rejectsUndefined",
        "rejectsNull",
        "rejectingThenable",
        "thenThrows",
      ].map((name, index) => ({
        name,
        index,
        attempt: 1,
        request: undefined,
        delivered: undefined,
      })),
    );
    assert.deepEqual(results, [
      ...reasons.map((reason, index) => ({
        status: "rejected",
        name: reported[index]![1].name,
        index,
        reason,
      })),
      { status: "fulfilled", name: "succeeds", index: 7, value: "done" },
    ]);
  },
);

guardedTest('run() names a task without a name "anonymous"', async () => {
  const tasks = new BackgroundTasks();
  tasks.addTask((() => () => {})());
  tasks.addTask(function named() {});
  const results = await tasks.run();
  assert.deepEqual(results.map((result) => result.name), [
    "anonymous",
    "named",
  ]);
});

guardedTest(
  "run() reports failures with the default reporter when no onTaskError is given",
  async () => {
    const consoleError = mock.method(console, "error", () => {});
    try {
      const tasks = new BackgroundTasks();
      const error = new Error("boom");
      tasks.addTask(function failing(_secret: string) {
        throw error;
      }, "s3cr3t-token");
      await tasks.run();
      assert.equal(consoleError.mock.callCount(), 1);
      assert.deepEqual(consoleError.mock.calls[0]!.arguments, [
        'Background task "failing" at index 0 failed:',
        error,
      ]);
    } finally {
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "run() waits for an asynchronous onTaskError before the next task",
  async () => {
    const log: string[] = [];
    const tasks = new BackgroundTasks();
    tasks.addTask(() => {
      throw new Error("first");
    });
    tasks.addTask(() => log.push("second task"));
    await tasks.run({
      onTaskError: async () => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        log.push("reported");
      },
    });
    assert.deepEqual(log, ["reported", "second task"]);
  },
);

guardedTest(
  "run() reports an onTaskError that throws or rejects with the default reporter and goes on",
  async (t) => {
    const hookError = new Error("hook failed");
    const table: [string, () => void | Promise<void>][] = [
      ["throws", () => {
        throw hookError;
      }],
      ["rejects", () => Promise.reject(hookError)],
    ];
    for (const [how, onTaskError] of table) {
      await t.step(how, async () => {
        const consoleError = mock.method(console, "error", () => {});
        try {
          const taskError = new Error("task failed");
          const tasks = new BackgroundTasks();
          tasks.addTask(function failing() {
            throw taskError;
          });
          tasks.addTask(() => "next");
          const results = await tasks.run({ onTaskError });
          assert.equal(results[1]?.status, "fulfilled");
          assert.deepEqual(
            consoleError.mock.calls.map((call) => call.arguments),
            [
              ['Background task "failing" at index 0 failed:', taskError],
              [
                "The 'onTaskError' handler threw while reporting background task " +
                '"failing" at index 0:',
                hookError,
              ],
            ],
          );
        } finally {
          consoleError.mock.restore();
        }
      });
    }
  },
);

guardedTest("run() survives a console.error that throws", async () => {
  const consoleError = mock.method(console, "error", () => {
    throw new Error("console is broken");
  });
  try {
    const tasks = new BackgroundTasks();
    tasks.addTask(() => {
      throw new Error("task failed");
    });
    tasks.addTask(() => "next");
    const results = await tasks.run();
    assert.deepEqual(results.map((result) => result.status), [
      "rejected",
      "fulfilled",
    ]);
  } finally {
    consoleError.mock.restore();
  }
});

guardedTest(
  "run() runs the tasks once and returns the same promise when called again",
  async () => {
    let calls = 0;
    const tasks = new BackgroundTasks();
    tasks.addTask(() => calls++);
    const first = tasks.run();
    const second = tasks.run();
    assert.equal(first, second);
    await first;
    assert.equal(calls, 1);
  },
);

guardedTest(
  "addTask() from a running task joins the end of the same chain",
  async () => {
    const log: string[] = [];
    const tasks = new BackgroundTasks();
    tasks.addTask(() => {
      log.push("first");
      tasks.addTask(() => log.push("added by first"));
    });
    tasks.addTask(async () => {
      await Promise.resolve();
      log.push("second");
      tasks.addTask(() => log.push("added by second"));
    });

    const results = await tasks.run();

    assert.deepEqual(log, [
      "first",
      "second",
      "added by first",
      "added by second",
    ]);
    assert.equal(results.length, 4);
    assert.equal(tasks.size, 4);
  },
);

guardedTest("addTask() after the chain has finished throws", async () => {
  const tasks = new BackgroundTasks();
  tasks.addTask(() => {});
  await tasks.run();
  assert.throws(() => tasks.addTask(() => {}), {
    name: "Error",
    message: "Cannot add task as the request's tasks have already run",
  });
  assert.equal(tasks.size, 1);
});

guardedTest("run() with no task resolves with no result", async () => {
  const tasks = new BackgroundTasks();
  assert.deepEqual(await tasks.run(), []);
});

guardedTest(
  "run() gets through 10,000 tasks without overflowing the stack",
  async () => {
    let count = 0;
    const tasks = new BackgroundTasks();
    for (let i = 0; i < 10_000; i++) {
      tasks.addTask(
        i % 2 === 0 ? () => count++ : async () => {
          await Promise.resolve();
          count++;
        },
      );
    }
    const results = await tasks.run({ onTaskError: quiet() });
    assert.equal(count, 10_000);
    assert.equal(results.length, 10_000);
    assert.ok(results.every((result) => result.status === "fulfilled"));
  },
);

Deno.test("run() rejects an onTaskError that is not a function", () => {
  const tasks = new BackgroundTasks();
  assert.throws(
    // @ts-expect-error: the point is the runtime check
    () => tasks.run({ onTaskError: "log" }),
    {
      name: "TypeError",
      message:
        "Cannot run tasks as 'onTaskError' must be a function: current value is \"log\"",
    },
  );
});

Deno.test("BackgroundTasks inspects as its size and state, never its arguments", async () => {
  const gate = Promise.withResolvers<void>();
  const tasks = new BackgroundTasks();
  tasks.addTask((_password: string) => gate.promise, "hunter2");
  assert.equal(
    Deno.inspect(tasks),
    'BackgroundTasks { size: 1, state: "open" }',
  );
  const running = tasks.run();
  assert.equal(
    Deno.inspect(tasks),
    'BackgroundTasks { size: 1, state: "running" }',
  );
  gate.resolve();
  await running;
  assert.equal(
    Deno.inspect(tasks),
    'BackgroundTasks { size: 1, state: "closed" }',
  );
});

guardedTest(
  "waitUntil() keeps a started promise in the chain and reports its rejection",
  async () => {
    const order: string[] = [];
    const gate = Promise.withResolvers<void>();
    const tasks = new BackgroundTasks();
    tasks.addTask(() => order.push("task before"));
    tasks.waitUntil(gate.promise.then(() => order.push("tracked")));
    tasks.addTask(() => order.push("task after"));
    const early = Promise.reject(new Error("rejected before its turn"));
    tasks.waitUntil(early);

    const reported: [string, number][] = [];
    const running = tasks.run({
      onTaskError: (_error, info) =>
        void reported.push([info.name, info.index]),
    });
    // Let the rejection be noticed before the chain reaches it.
    await new Promise((resolve) => setTimeout(resolve, 0));
    gate.resolve();
    const results = await running;
    assert.deepEqual(order, ["task before", "tracked", "task after"]);
    assert.deepEqual(reported, [["waitUntil", 3]]);
    assert.equal(results.length, 4);
  },
);

Deno.test("waitUntil() rejects a value that is not a promise", () => {
  const tasks = new BackgroundTasks();
  assert.throws(
    () => tasks.waitUntil("later" as unknown as Promise<unknown>),
    {
      name: "TypeError",
      message:
        `Cannot wait until as 'promise' must be a promise: current value is "later"`,
    },
  );
});

Deno.test("BackgroundTasks has the shape of Hono's and Workers' ExecutionContext", () => {
  const tasks = new BackgroundTasks();
  tasks.passThroughOnException();
  assert.deepEqual(tasks.props, {});
  assert.ok(Object.isFrozen(tasks.props));
  assert.equal(tasks.props, new BackgroundTasks().props);
});

guardedTest(
  "addTask() takes a revoked proxy of a function, which fails when it runs",
  async () => {
    const { proxy, revoke } = Proxy.revocable(() => {}, {});
    revoke();
    const tasks = new BackgroundTasks();
    tasks.addTask(proxy);
    const [result] = await tasks.run({ onTaskError: () => {} });
    assert.equal(result?.status, "rejected");
  },
);
