// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The worker side of the backends: workerConfig() checks a worker's options
// and indexes its tasks by name; runQueued() runs one queued attempt
// through the attempt engine, with the attempts the queue fixed, when it
// fixed them, winning over the task's own policy; combineExecutionOptions() makes
// one set of options of a backend's and its handlers'.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type DefinedTask,
  defineTask,
  logTaskError,
  type TaskInfo,
  TaskTimeoutError,
} from "../../mod.ts";
import type { WorkerOptions } from "../../backend.ts";
import {
  combineExecutionOptions,
  type QueuedAttempt,
  runQueued,
  type WorkerConfig,
  workerConfig,
} from "../../src/durable/_worker.ts";
import { guardedTest, microtasks } from "../_helpers/common.ts";

const action = "Cannot start test worker";

/** `task`'s first attempt, as a queue would hand it to a worker. */
function queuedAttempt(
  task: DefinedTask,
  more: Partial<QueuedAttempt> = {},
): QueuedAttempt {
  return {
    task,
    args: [],
    id: "chain-1:0",
    index: 0,
    attempt: 1,
    request: undefined,
    delivered: undefined,
    ...more,
  };
}

/** A worker's config that collects what reaches onTaskError. */
function collecting(
  tasks: WorkerOptions["tasks"],
  options: Omit<WorkerOptions, "tasks"> = {},
): { config: WorkerConfig; reported: [unknown, TaskInfo][] } {
  const reported: [unknown, TaskInfo][] = [];
  const config = workerConfig({
    tasks,
    onTaskError: (error, info) => void reported.push([error, info]),
    ...options,
  }, action);
  return { config, reported };
}

Deno.test("workerConfig() indexes the tasks by name, with the execution defaults", () => {
  const email = defineTask(() => {}, { name: "email" });
  const resize = defineTask(() => {}, { name: "resize" });
  const config = workerConfig({ tasks: [email, resize] }, action);
  assert.deepEqual([...config.registry.keys()], ["email", "resize"]);
  assert.equal(config.registry.get("email"), email);
  assert.equal(config.registry.get("resize"), resize);
  assert.equal(config.onTaskError, logTaskError);
  assert.deepEqual(
    [config.timeout, config.onTaskStart, config.onTaskEnd],
    [undefined, undefined, undefined],
  );
  const onTaskEnd = () => {};
  const timed = workerConfig({ tasks: [], timeout: 500, onTaskEnd }, action);
  assert.deepEqual([timed.registry.size, timed.timeout], [0, 500]);
  assert.equal(timed.onTaskEnd, onTaskEnd);
});

Deno.test("workerConfig() rejects tasks it could not find by name, and bad execution options", async (t) => {
  const task = defineTask(() => {}, { name: "task" });
  const table: [string, WorkerOptions, string, string][] = [
    [
      "tasks that are not an array",
      { tasks: new Set([task]) as unknown as WorkerOptions["tasks"] },
      "TypeError",
      `${action} as 'tasks' must be an array of defined tasks: current value is a Set`,
    ],
    [
      "no tasks",
      {} as WorkerOptions,
      "TypeError",
      `${action} as 'tasks' must be an array of defined tasks: current value is undefined`,
    ],
    [
      "a plain function among them",
      {
        tasks: [task, function sendEmail() {}] as unknown as WorkerOptions[
          "tasks"
        ],
      },
      "TypeError",
      `${action} as 'tasks[1]' must be made by defineTask: current value is a function`,
    ],
    [
      "two tasks of one name",
      { tasks: [task, defineTask(() => {}, { name: "task" })] },
      "TypeError",
      `${action} as two tasks are named "task": names must be unique`,
    ],
    [
      "a timeout out of range",
      { tasks: [task], timeout: 0 },
      "RangeError",
      `${action} as 'timeout' must be a positive number of milliseconds: current value is 0`,
    ],
    [
      "an onTaskError that is not a function",
      { tasks: [task], onTaskError: null as unknown as () => void },
      "TypeError",
      `${action} as 'onTaskError' must be a function: current value is null`,
    ],
  ];
  for (const [name, options, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(() => workerConfig(options, action), {
        name: errorName,
        message,
      });
    });
  }
});

guardedTest(
  "runQueued() runs the task with the queued attempt's id, attempt and request",
  async () => {
    const seen: unknown[] = [];
    const task = defineTask((context, order: string) => {
      const { id, attempt, name } = context;
      seen.push({ id, attempt, name, order });
      return "sent";
    }, { name: "email" });
    const starts: TaskInfo[] = [];
    const { config } = collecting([task], {
      onTaskStart: (info) => void starts.push(info),
    });
    const request = { method: "POST", url: "http://localhost/orders" };
    const result = await runQueued(
      queuedAttempt(task as DefinedTask, {
        args: ["order-7"],
        id: "chain-9:2",
        index: 2,
        attempt: 3,
        request,
        delivered: true,
      }),
      config,
    );
    assert.deepEqual(result, {
      outcome: "succeeded",
      value: "sent",
      willRetry: false,
      delay: 0,
      // Nobody needed the clock: no onTaskEnd, no timeout.
      startedAt: 0,
    });
    assert.deepEqual(seen, [{
      id: "chain-9:2",
      attempt: 3,
      name: "email",
      order: "order-7",
    }]);
    assert.deepEqual(starts, [{
      name: "email",
      index: 2,
      attempt: 3,
      id: "chain-9:2",
      request,
      delivered: true,
    }]);
  },
);

guardedTest(
  "runQueued() retries as the queue fixed the attempts, else as the task's policy says",
  async (t) => {
    const error = new Error("gateway down");
    const retry = { maxAttempts: 3, minDelay: 100, maxDelay: 100, jitter: 0 };
    const withPolicy = defineTask(() => {
      throw error;
    }, { name: "withPolicy", retry }) as DefinedTask;
    const withoutPolicy = defineTask(() => {
      throw error;
    }, { name: "withoutPolicy" }) as DefinedTask;
    const table: [string, DefinedTask, Partial<QueuedAttempt>, boolean][] = [
      ["the task's policy, with no word from the queue", withPolicy, {}, true],
      ["the queue's one attempt over the task's three", withPolicy, {
        maxAttempts: 1,
      }, false],
      ["the queue's two attempts over the task's one", withoutPolicy, {
        maxAttempts: 2,
      }, true],
      ["no policy and no word from the queue: one attempt", withoutPolicy, {
        attempt: 1,
      }, false],
      ["the task's policy, at its last attempt", withPolicy, {
        attempt: 3,
      }, false],
    ];
    for (const [name, task, more, willRetry] of table) {
      await t.step(name, async () => {
        const { config, reported } = collecting([task]);
        const result = await runQueued(queuedAttempt(task, more), config);
        assert.deepEqual([result.outcome, result.value], ["failed", error]);
        assert.equal(result.willRetry, willRetry);
        // A failure that will be retried is not reported; the last one is.
        assert.deepEqual(
          reported.map(([reason, info]) => [reason, info.attempt]),
          willRetry ? [] : [[error, more.attempt ?? 1]],
        );
      });
    }
    // The delay before the retry is the task's backoff.
    const { config } = collecting([withPolicy]);
    assert.equal(
      (await runQueued(queuedAttempt(withPolicy), config)).delay,
      100,
    );
  },
);

guardedTest(
  "runQueued() bounds an attempt by the task's timeout, else the worker's",
  async (t) => {
    const never = () => new Promise<void>(() => {});
    const table: [string, DefinedTask, number][] = [
      [
        "the task's own, over the worker's",
        defineTask(never, { name: "slow", timeout: 50 }) as DefinedTask,
        50,
      ],
      [
        "the worker's, for a task without one",
        defineTask(never, { name: "slow" }) as DefinedTask,
        70,
      ],
    ];
    for (const [name, task, expected] of table) {
      await t.step(name, async () => {
        mock.timers.enable({ apis: ["setTimeout"] });
        try {
          const { config } = collecting([task], { timeout: 70 });
          const running = runQueued(queuedAttempt(task), config);
          mock.timers.runAll();
          const result = await running;
          assert.equal(result.outcome, "timedOut");
          assert.ok(result.value instanceof TaskTimeoutError);
          assert.equal(result.value.timeout, expected);
        } finally {
          mock.timers.reset();
        }
      });
    }
  },
);

guardedTest(
  "runQueued() ends at once as abandoned when the worker's shutdown gives up on the task",
  async () => {
    const started = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    const task = defineTask(() => {
      started.resolve();
      return gate.promise;
    }, { name: "slow" }) as DefinedTask;
    const shutdown = new AbortController();
    const ends: string[] = [];
    const { config, reported } = collecting([task], {
      onTaskEnd: ({ outcome }) => void ends.push(outcome),
    });
    const running = runQueued(
      queuedAttempt(task, {
        signal: shutdown.signal,
      }),
      config,
    );
    await started.promise;
    const reason = new Error("closing");
    shutdown.abort(reason);
    // Without waiting for the task, which has not settled.
    const result = await Promise.race([
      running,
      microtasks().then(() => "still running" as const),
    ]);
    gate.resolve();
    if (result === "still running") assert.fail("it waited for the task");
    assert.deepEqual(
      [result.outcome, result.value, result.willRetry],
      ["abandoned", reason, false],
    );
    assert.deepEqual(ends, ["abandoned"]);
    assert.deepEqual(reported, []);
  },
);

guardedTest(
  "combineExecutionOptions() calls every hook given, each isolated, and reports a failure to each reporter given",
  async () => {
    const calls: string[] = [];
    const consoleError = mock.method(console, "error", () => {});
    try {
      const combined = combineExecutionOptions([
        {
          onTaskStart: () => {
            calls.push("backend start");
            throw new Error("hook failed");
          },
          onTaskError: () => void calls.push("backend error"),
          timeout: 100,
        },
        {},
        {
          onTaskStart: () => void calls.push("handler start"),
          onTaskEnd: () => void calls.push("handler end"),
          onTaskError: () => {
            calls.push("handler error");
            return Promise.reject(new Error("reporter failed"));
          },
          timeout: 200,
          telemetry: false,
        },
      ]);
      const info: TaskInfo = {
        name: "task",
        index: 0,
        attempt: 1,
        request: undefined,
        delivered: undefined,
      };
      combined.onTaskStart!(info);
      combined.onTaskEnd!({
        ...info,
        duration: 1,
        outcome: "failed",
        error: new Error("boom"),
        willRetry: false,
      });
      await combined.onTaskError!(new Error("boom"), info);
      assert.deepEqual(calls, [
        "backend start",
        "handler start",
        "handler end",
        "backend error",
        "handler error",
      ]);
      // Each failing hook is written by the default reporter, and stops
      // nothing else.
      assert.deepEqual(
        consoleError.mock.calls.map((call) =>
          String(call.arguments[0]).split(" handler ")[0]
        ),
        [
          "The 'onTaskStart'",
          'Background task "task" at index 0 failed:',
          "The 'onTaskError'",
        ],
      );
      assert.equal(combined.timeout, 100);
      assert.equal(combined.telemetry, false);
    } finally {
      consoleError.mock.restore();
    }
  },
);

Deno.test("combineExecutionOptions() leaves out what nobody gave, so that the defaults apply once", () => {
  assert.deepEqual(combineExecutionOptions([{}, { telemetry: true }]), {});
  const onTaskError = () => {};
  assert.equal(
    combineExecutionOptions([{}, { onTaskError }]).onTaskError,
    onTaskError,
  );
});
