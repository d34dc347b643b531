// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  BackgroundTasks,
  defineTask,
  type DefineTaskOptions,
  type RetryOptions,
  type TaskContext,
  type TaskEndEvent,
  type TaskInfo,
  TaskTimeoutError,
} from "../../mod.ts";
import { backoff } from "../../src/core/_retry.ts";
import { guardedTest, microtasks } from "../_helpers/common.ts";

guardedTest(
  "defineTask() passes a context with signal, attempt and name before the arguments",
  async () => {
    const seen: unknown[] = [];
    const task = defineTask((context: TaskContext, a: number, b: string) => {
      seen.push(
        context.signal instanceof AbortSignal,
        context.signal.aborted,
        context.attempt,
        context.name,
        a,
        b,
      );
    }, { name: "record" });
    const tasks = new BackgroundTasks();
    tasks.addTask(task, 1, "two");
    await tasks.run();
    assert.deepEqual(seen, [true, false, 1, "record", 1, "two"]);
  },
);

Deno.test("defineTask() names the task after its option, else its function, else anonymous", () => {
  function sendEmail() {}
  assert.equal(defineTask(sendEmail, { name: "welcome" }).name, "welcome");
  assert.equal(defineTask(sendEmail).name, "sendEmail");
  assert.equal(defineTask((() => () => {})()).name, "anonymous");
});

Deno.test("defineTask() rejects options of the wrong type or out of range", async (t) => {
  const fn = () => {};
  const table: [string, () => unknown, string, string][] = [
    [
      "fn",
      // @ts-expect-error: the point is the runtime check
      () => defineTask("send"),
      "TypeError",
      `Cannot define task as 'fn' must be a function: current value is "send"`,
    ],
    [
      "empty name",
      () => defineTask(fn, { name: "" }),
      "TypeError",
      `Cannot define task as 'name' must be a non-empty string: current value is ""`,
    ],
    [
      "zero timeout",
      () => defineTask(fn, { timeout: 0 }),
      "RangeError",
      "Cannot define task as 'timeout' must be a positive number of milliseconds: current value is 0",
    ],
    [
      "NaN timeout",
      () => defineTask(fn, { timeout: NaN }),
      "RangeError",
      "Cannot define task as 'timeout' must be a positive number of milliseconds: current value is NaN",
    ],
    [
      "string timeout",
      () => defineTask(fn, { timeout: "5s" as unknown as number }),
      "TypeError",
      `Cannot define task as 'timeout' must be a number: current value is "5s"`,
    ],
    [
      "retry",
      () => defineTask(fn, { retry: 3 as unknown as RetryOptions }),
      "TypeError",
      "Cannot define task as 'retry' must be a plain object: current value is 3",
    ],
    [
      "maxAttempts",
      () => defineTask(fn, { retry: { maxAttempts: 0 } }),
      "RangeError",
      "Cannot define task as 'retry.maxAttempts' must be an integer >= 1: current value is 0",
    ],
    [
      "fractional maxAttempts",
      () => defineTask(fn, { retry: { maxAttempts: 2.5 } }),
      "RangeError",
      "Cannot define task as 'retry.maxAttempts' must be an integer >= 1: current value is 2.5",
    ],
    [
      "minDelay",
      () => defineTask(fn, { retry: { minDelay: -1 } }),
      "RangeError",
      "Cannot define task as 'retry.minDelay' must be a finite number >= 0: current value is -1",
    ],
    [
      "maxDelay below minDelay",
      () => defineTask(fn, { retry: { minDelay: 100, maxDelay: 10 } }),
      "RangeError",
      "Cannot define task as 'retry.minDelay' must be <= 'retry.maxDelay': current values are 100 and 10",
    ],
    [
      "maxDelay beyond the longest timer",
      () => defineTask(fn, { retry: { maxDelay: 3e9 } }),
      "RangeError",
      "Cannot define task as 'retry.maxDelay' must be <= 2147483647, the longest timer: current value is 3000000000",
    ],
    [
      "multiplier",
      () => defineTask(fn, { retry: { multiplier: 0.5 } }),
      "RangeError",
      "Cannot define task as 'retry.multiplier' must be a finite number >= 1: current value is 0.5",
    ],
    [
      "jitter",
      () => defineTask(fn, { retry: { jitter: 2 } }),
      "RangeError",
      "Cannot define task as 'retry.jitter' must be between 0 and 1: current value is 2",
    ],
    [
      "jitter of the wrong type",
      () => defineTask(fn, { retry: { jitter: "0.5" as unknown as number } }),
      "TypeError",
      `Cannot define task as 'retry.jitter' must be a number: current value is "0.5"`,
    ],
    [
      "options that are not an object",
      () => defineTask(fn, null as unknown as DefineTaskOptions),
      "TypeError",
      "Cannot define task as 'options' must be a plain object: current value is null",
    ],
    [
      "a misspelt option",
      () => defineTask(fn, { timout: 100 } as DefineTaskOptions),
      "TypeError",
      "Cannot define task as 'timout' is not one of its options: did you mean 'timeout'?",
    ],
    [
      "a misspelt retry option",
      () => defineTask(fn, { retry: { maxAtempts: 5 } as RetryOptions }),
      "TypeError",
      "Cannot define task as 'retry.maxAtempts' is not one of its options: did you mean 'retry.maxAttempts'?",
    ],
    [
      "isRetriable",
      () =>
        defineTask(fn, {
          retry: { isRetriable: true as unknown as () => boolean },
        }),
      "TypeError",
      "Cannot define task as 'retry.isRetriable' must be a function: current value is true",
    ],
  ];
  for (const [name, call, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(call, { name: errorName, message });
    });
  }
});

guardedTest(
  "a task that outlives its timeout is reported as a TaskTimeoutError, its signal aborted, and the chain goes on",
  async () => {
    let signal: AbortSignal | undefined;
    const hang = defineTask(({ signal: taskSignal }) => {
      signal = taskSignal;
      return new Promise(() => {});
    }, { name: "hang", timeout: 20 });
    const reported: unknown[] = [];
    const tasks = new BackgroundTasks();
    tasks.addTask(hang);
    tasks.addTask(() => "next");
    const results = await tasks.run({
      onTaskError: (error) => void reported.push(error),
    });

    assert.equal(reported.length, 1);
    const error = reported[0];
    assert.ok(error instanceof TaskTimeoutError);
    assert.equal(error.name, "TaskTimeoutError");
    assert.equal(error.message, 'Background task "hang" timed out after 20 ms');
    assert.equal(error.task, "hang");
    assert.equal(error.timeout, 20);
    assert.equal(signal?.aborted, true);
    assert.equal(signal?.reason, error);
    assert.deepEqual(results.map((result) => result.status), [
      "rejected",
      "fulfilled",
    ]);
  },
);

guardedTest(
  "the runner's timeout applies to plain functions, and a defined task can override it",
  async () => {
    const late = Promise.withResolvers<string>();
    const reported: string[] = [];
    const tasks = new BackgroundTasks();
    tasks.addTask(function slowPlain() {
      return late.promise;
    });
    tasks.addTask(
      defineTask(async () => {
        await new Promise((resolve) => setTimeout(resolve, 40));
        return "patient";
      }, { name: "slowDefined", timeout: 10_000 }),
    );
    const results = await tasks.run({
      timeout: 20,
      onTaskError: (error, info) => {
        assert.ok(error instanceof TaskTimeoutError);
        reported.push(`${info.name} ${error.timeout}`);
      },
    });
    // The abandoned promise may still settle, even by rejecting: it is handled.
    late.reject(new Error("too late to matter"));
    assert.deepEqual(reported, ["slowPlain 20"]);
    assert.equal(results[1]?.status, "fulfilled");
  },
);

guardedTest(
  "a synchronous task is not interrupted by its timeout",
  async () => {
    const tasks = new BackgroundTasks();
    tasks.addTask(
      defineTask(() => {
        const until = performance.now() + 30;
        while (performance.now() < until) {
          // Busy past the timeout: nothing can interrupt synchronous code.
        }
        return "finished";
      }, { timeout: 5 }),
    );
    const [result] = await tasks.run();
    assert.equal(result?.status, "fulfilled");
  },
);

guardedTest(
  "a retried task reports every failed attempt to onTaskEnd and only the last to onTaskError",
  async () => {
    let calls = 0;
    const flaky = defineTask(({ attempt }) => {
      calls++;
      if (attempt < 3) throw new Error(`attempt ${attempt} failed`);
      return "third time lucky";
    }, { name: "flaky", retry: { maxAttempts: 5, minDelay: 1, maxDelay: 1 } });
    const starts: number[] = [];
    const ends: Partial<TaskEndEvent>[] = [];
    const errors: unknown[] = [];
    const tasks = new BackgroundTasks();
    tasks.addTask(flaky);
    const [result] = await tasks.run({
      onTaskStart: (event) => void starts.push(event.attempt),
      onTaskEnd: ({ attempt, outcome, willRetry, error }) =>
        void ends.push({
          attempt,
          outcome,
          willRetry,
          error: (error as Error | undefined)?.message,
        }),
      onTaskError: (error) => void errors.push(error),
    });
    assert.equal(calls, 3);
    assert.deepEqual(starts, [1, 2, 3]);
    assert.deepEqual(ends, [
      {
        attempt: 1,
        outcome: "failed",
        willRetry: true,
        error: "attempt 1 failed",
      },
      {
        attempt: 2,
        outcome: "failed",
        willRetry: true,
        error: "attempt 2 failed",
      },
      { attempt: 3, outcome: "succeeded", willRetry: false, error: undefined },
    ]);
    assert.deepEqual(errors, []);
    assert.deepEqual(result, {
      status: "fulfilled",
      name: "flaky",
      index: 0,
      value: "third time lucky",
    });
  },
);

guardedTest(
  "a task that fails every attempt reaches onTaskError once, with its last error and attempt",
  async () => {
    let calls = 0;
    const failing = defineTask(({ attempt }) => {
      calls++;
      return Promise.reject(new Error(`attempt ${attempt}`));
    }, {
      name: "failing",
      retry: { maxAttempts: 3, minDelay: 1, maxDelay: 1 },
    });
    const reported: [unknown, TaskInfo][] = [];
    const tasks = new BackgroundTasks();
    tasks.addTask(failing);
    tasks.addTask(() => "next");
    const results = await tasks.run({
      onTaskError: (error, info) => void reported.push([error, info]),
    });
    assert.equal(calls, 3);
    assert.equal(reported.length, 1);
    assert.equal((reported[0]![0] as Error).message, "attempt 3");
    assert.equal(reported[0]![1].attempt, 3);
    assert.equal(results[1]?.status, "fulfilled");
  },
);

guardedTest(
  "isRetriable decides which failures are retried, and one that throws stops the retries",
  async (t) => {
    const table: [string, (error: unknown) => boolean, number, number][] = [
      ["retriable", () => true, 3, 0],
      ["not retriable", (error) => !(error instanceof TypeError), 1, 0],
      [
        "throws",
        () => {
          throw new Error("predicate broken");
        },
        1,
        1,
      ],
    ];
    for (const [name, isRetriable, expectedCalls, hookReports] of table) {
      await t.step(name, async () => {
        const consoleError = mock.method(console, "error", () => {});
        try {
          let calls = 0;
          const tasks = new BackgroundTasks();
          tasks.addTask(
            defineTask(() => {
              calls++;
              throw new TypeError("bad input");
            }, {
              name: "validate",
              retry: { maxAttempts: 3, minDelay: 1, maxDelay: 1, isRetriable },
            }),
          );
          await tasks.run({ onTaskError: () => {} });
          assert.equal(calls, expectedCalls);
          assert.equal(consoleError.mock.callCount(), hookReports);
          if (hookReports > 0) {
            assert.equal(
              consoleError.mock.calls[0]!.arguments[0],
              `The 'isRetriable' handler threw while reporting background task "validate" at index 0:`,
            );
          }
        } finally {
          consoleError.mock.restore();
        }
      });
    }
  },
);

guardedTest("a timeout is retried like any failure", async () => {
  const task = defineTask(
    ({ attempt }) =>
      attempt === 1
        ? new Promise(() => {})
        : Promise.resolve(`attempt ${attempt}`),
    {
      timeout: 10,
      retry: { maxAttempts: 2, minDelay: 1, maxDelay: 1 },
    },
  );
  const outcomes: string[] = [];
  const tasks = new BackgroundTasks();
  tasks.addTask(task);
  const [result] = await tasks.run({
    onTaskEnd: (event) => void outcomes.push(event.outcome),
  });
  assert.deepEqual(outcomes, ["timedOut", "succeeded"]);
  assert.equal(result?.status === "fulfilled" && result.value, "attempt 2");
});

guardedTest("retries wait the backoff delay between attempts", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const attempts: number[] = [];
    const task = defineTask(({ attempt }) => {
      attempts.push(attempt);
      throw new Error("again");
    }, {
      retry: {
        maxAttempts: 3,
        minDelay: 100,
        maxDelay: 1_000,
        multiplier: 2,
        jitter: 0,
      },
    });
    const tasks = new BackgroundTasks();
    tasks.addTask(task);
    const run = tasks.run({ onTaskError: () => {} });
    await microtasks();
    assert.deepEqual(attempts, [1]);
    mock.timers.tick(99);
    await microtasks();
    assert.deepEqual(attempts, [1], "retried before minDelay");
    mock.timers.tick(1);
    await microtasks();
    assert.deepEqual(attempts, [1, 2]);
    mock.timers.tick(199);
    await microtasks();
    assert.deepEqual(attempts, [1, 2], "the second wait did not double");
    mock.timers.tick(1);
    await microtasks();
    assert.deepEqual(attempts, [1, 2, 3]);
    await run;
  } finally {
    mock.timers.reset();
  }
});

Deno.test("backoff() grows by the multiplier up to maxDelay, less the jitter's random share", () => {
  const policy = {
    maxAttempts: 10,
    minDelay: 100,
    maxDelay: 1_000,
    multiplier: 3,
    jitter: 0,
    isRetriable: () => true,
  };
  assert.deepEqual(
    [1, 2, 3, 4].map((retry) => backoff(policy, retry)),
    [100, 300, 900, 1_000],
  );
  const jittered = { ...policy, jitter: 0.5 };
  assert.equal(backoff(jittered, 1, 0), 100);
  assert.equal(backoff(jittered, 1, 0.5), 75);
  assert.equal(backoff({ ...policy, jitter: 1 }, 2, 0.999), 300 * (1 - 0.999));
});

Deno.test("defineTask() keeps a key, its onDuplicate and delay, with their defaults", () => {
  const reindex = defineTask((_context, userId: string) => userId, {
    name: "reindex",
    key: (userId) => `user:${userId}`,
  });
  assert.equal(reindex.key?.("u42"), "user:u42");
  assert.deepEqual([reindex.onDuplicate, reindex.delay], ["queue", 0]);
  const debounced = defineTask((_context, _userId: string) => {}, {
    name: "debounced",
    key: (userId) => userId,
    onDuplicate: "replace",
    delay: 2_000,
  });
  assert.deepEqual([debounced.onDuplicate, debounced.delay], [
    "replace",
    2_000,
  ]);
  const plain = defineTask(() => {});
  assert.deepEqual([plain.key, plain.onDuplicate, plain.delay], [
    undefined,
    undefined,
    undefined,
  ]);
  assert.equal(
    defineTask(function longest() {}, { key: () => "k", delay: 2 ** 31 - 1 })
      .delay,
    2 ** 31 - 1,
  );
});

Deno.test("defineTask() refuses a key, onDuplicate or delay it cannot keep", async (t) => {
  const fn = (_context: unknown, _id: string) => {};
  const key = (id: string) => id;
  const table: [string, () => unknown, string, string][] = [
    [
      "onDuplicate without key",
      () => defineTask(fn, { onDuplicate: "skip" }),
      "TypeError",
      "Cannot define task as 'onDuplicate' needs a 'key': without one, a task has no duplicate and starts once its response is sent",
    ],
    [
      "delay without key",
      () => defineTask(fn, { delay: 100 }),
      "TypeError",
      "Cannot define task as 'delay' needs a 'key': without one, a task has no duplicate and starts once its response is sent",
    ],
    [
      'a key without a name: every such task would be "anonymous", and a duplicate of the others',
      () => defineTask((_context, _id: string) => {}, { key }),
      "TypeError",
      `Cannot define task as a keyed task needs a 'name' (or a named function): its duplicates are the tasks of the same name and key, and a function without a name would be "anonymous", as every other`,
    ],
    [
      "a key that is not a function",
      () => defineTask(fn, { key: "id" as unknown as typeof key }),
      "TypeError",
      `Cannot define task as 'key' must be a function: current value is "id"`,
    ],
    [
      "an unknown onDuplicate",
      () =>
        defineTask(fn, {
          key,
          onDuplicate: "drop" as unknown as "skip",
        }),
      "TypeError",
      `Cannot define task as 'onDuplicate' must be "queue", "skip" or "replace": current value is "drop"`,
    ],
    [
      "a negative delay",
      () => defineTask(fn, { key, delay: -1 }),
      "RangeError",
      "Cannot define task as 'delay' must be an integer >= 0: current value is -1",
    ],
    [
      "a fractional delay",
      () => defineTask(fn, { key, delay: 1.5 }),
      "RangeError",
      "Cannot define task as 'delay' must be an integer >= 0: current value is 1.5",
    ],
    [
      "a delay of the wrong type",
      () => defineTask(fn, { key, delay: "2s" as unknown as number }),
      "TypeError",
      `Cannot define task as 'delay' must be a number: current value is "2s"`,
    ],
    [
      "a delay beyond the longest timer",
      () => defineTask(fn, { key, delay: 2 ** 31 }),
      "RangeError",
      "Cannot define task as 'delay' must be <= 2147483647, the longest timer: current value is 2147483648",
    ],
  ];
  for (const [name, call, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(call, { name: errorName, message });
    });
  }
});

Deno.test("a key function is typed by the task's arguments", () => {
  const task = defineTask((_context, a: number, b: string) => `${a}${b}`, {
    name: "pair",
    key: (a, b) => `${b}:${a.toFixed(0)}`,
  });
  assert.equal(task.key?.(1, "x"), "x:1");
  const byId = (id: string) => `user:${id}`;
  const reindex = defineTask(({ signal }, id: string) => {
    signal.throwIfAborted();
    return id;
  }, { name: "reindex", key: byId });
  assert.equal(reindex.key?.("u42"), "user:u42");
  // @ts-expect-error: a key is a string
  defineTask((_context, a: number) => a, { name: "n", key: (a) => a });
  // @ts-expect-error: the task's first argument is a number
  defineTask((_context, _a: number) => {}, {
    name: "n",
    key: (a: string) => a,
  });
});
