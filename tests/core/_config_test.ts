// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The options of the wrapper, serve() and the workers, checked where they
// enter: executionConfig() (hooks, timeout, reporting) and runnerConfig()
// (limits, the backend and its hand-over), their defaults, and their
// refusals as withBackgroundTasks() shows them.

import assert from "node:assert/strict";
import {
  type ExecutionOptions,
  logTaskError,
  type TaskBackend,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../../mod.ts";
import {
  EXECUTION_OPTIONS,
  executionConfig,
  runnerConfig,
  WITH_BACKGROUND_TASKS_OPTIONS,
} from "../../src/core/_config.ts";
import { MAX_TIMER_DELAY } from "../../src/util/_assert.ts";

const action = "Cannot test options";

/** A backend that stores every chain at once. */
function storingBackend(): TaskBackend {
  return { accept() {}, enqueue: () => Promise.resolve() };
}

Deno.test("the lists of option names are the keys of the options' types", () => {
  // Each type checks that every key is listed, and no other.
  const run: Record<keyof ExecutionOptions, true> = {
    onTaskError: true,
    timeout: true,
    onTaskStart: true,
    onTaskEnd: true,
    telemetry: true,
  };
  const wrapper: Record<keyof WithBackgroundTasksOptions, true> = {
    ...run,
    skipUndelivered: true,
    concurrency: true,
    maxPending: true,
    ambient: true,
    backend: true,
    handOver: true,
  };
  assert.deepEqual([...EXECUTION_OPTIONS].sort(), Object.keys(run).sort());
  assert.deepEqual(
    [...WITH_BACKGROUND_TASKS_OPTIONS].sort(),
    Object.keys(wrapper).sort(),
  );
});

Deno.test("executionConfig() applies its defaults, and takes a timeout no timer can express as none", () => {
  assert.deepEqual(executionConfig({}, action), {
    onTaskError: logTaskError,
    timeout: undefined,
    onTaskStart: undefined,
    onTaskEnd: undefined,
    telemetry: undefined,
  });
  const onTaskError = () => {};
  const onTaskStart = () => {};
  const onTaskEnd = () => {};
  assert.deepEqual(
    executionConfig(
      { onTaskError, onTaskStart, onTaskEnd, timeout: 250 },
      action,
    ),
    { onTaskError, timeout: 250, onTaskStart, onTaskEnd, telemetry: undefined },
  );
  assert.equal(
    executionConfig({ timeout: MAX_TIMER_DELAY }, action).timeout,
    MAX_TIMER_DELAY,
  );
  for (const timeout of [MAX_TIMER_DELAY + 1, Infinity]) {
    assert.equal(executionConfig({ timeout }, action).timeout, undefined);
  }
});

Deno.test("executionConfig() rejects hooks and timeouts it cannot use", async (t) => {
  const table: [string, ExecutionOptions, string, string][] = [
    [
      "an onTaskError that is not a function",
      { onTaskError: "log" as unknown as () => void },
      "TypeError",
      `${action} as 'onTaskError' must be a function: current value is "log"`,
    ],
    [
      "a timeout that is not a number",
      { timeout: "100" as unknown as number },
      "TypeError",
      `${action} as 'timeout' must be a number: current value is "100"`,
    ],
    [
      "a timeout of NaN",
      { timeout: NaN },
      "RangeError",
      `${action} as 'timeout' must be a positive number of milliseconds: current value is NaN`,
    ],
    [
      "a timeout of zero",
      { timeout: 0 },
      "RangeError",
      `${action} as 'timeout' must be a positive number of milliseconds: current value is 0`,
    ],
  ];
  for (const [name, options, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(() => executionConfig(options, action), {
        name: errorName,
        message,
      });
    });
  }
});

Deno.test("runnerConfig() applies its defaults: no limits, no backend, tasks run here", () => {
  assert.deepEqual(runnerConfig({}, action), {
    onTaskError: logTaskError,
    timeout: undefined,
    onTaskStart: undefined,
    onTaskEnd: undefined,
    telemetry: undefined,
    skipUndelivered: false,
    concurrency: Infinity,
    maxPending: Infinity,
    ambient: undefined,
    backend: undefined,
    storeFirst: false,
  });
  const config = runnerConfig({
    concurrency: 4,
    maxPending: 100,
    skipUndelivered: true,
  }, action);
  assert.deepEqual(
    [config.concurrency, config.maxPending, config.skipUndelivered],
    [4, 100, true],
  );
});

Deno.test("runnerConfig() stores chains before the response with a backend, unless told after", () => {
  const backend = storingBackend();
  const before = runnerConfig({ backend }, action);
  assert.deepEqual([before.backend, before.storeFirst], [backend, true]);
  const after = runnerConfig({
    backend,
    handOver: "after-response",
    skipUndelivered: true,
  }, action);
  assert.deepEqual([after.backend, after.storeFirst, after.skipUndelivered], [
    backend,
    false,
    true,
  ]);
  assert.equal(
    runnerConfig({ backend, handOver: "before-response" }, action).storeFirst,
    true,
  );
});

Deno.test("runnerConfig() rejects a backend without accept() and enqueue()", async (t) => {
  const table: [string, unknown, string][] = [
    ["null", null, "null"],
    ["a function", () => {}, "a function"],
    ["no enqueue()", { accept() {} }, "an object"],
    ["an enqueue() that is not a function", {
      accept() {},
      enqueue: "redis",
    }, "an object"],
  ];
  for (const [name, backend, described] of table) {
    await t.step(name, () => {
      assert.throws(
        () => runnerConfig({ backend: backend as TaskBackend }, action),
        {
          name: "TypeError",
          message:
            `${action} as 'backend' must have accept() and enqueue() methods: current value is ${described}`,
        },
      );
    });
  }
});

Deno.test("withBackgroundTasks() rejects runner options out of range", async (t) => {
  const table: [string, WithBackgroundTasksOptions, string, string][] = [
    [
      "concurrency",
      { concurrency: 0 },
      "RangeError",
      "Cannot wrap handler as 'concurrency' must be an integer >= 1 or Infinity: current value is 0",
    ],
    [
      "maxPending",
      { maxPending: 1.5 },
      "RangeError",
      "Cannot wrap handler as 'maxPending' must be an integer >= 1 or Infinity: current value is 1.5",
    ],
    [
      "timeout",
      { timeout: -5 },
      "RangeError",
      "Cannot wrap handler as 'timeout' must be a positive number of milliseconds: current value is -5",
    ],
    [
      "onTaskStart",
      { onTaskStart: "log" as unknown as () => void },
      "TypeError",
      `Cannot wrap handler as 'onTaskStart' must be a function: current value is "log"`,
    ],
    [
      "onTaskEnd",
      { onTaskEnd: {} as unknown as () => void },
      "TypeError",
      "Cannot wrap handler as 'onTaskEnd' must be a function: current value is an object",
    ],
  ];
  for (const [name, options, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(() => withBackgroundTasks(() => new Response(), options), {
        name: errorName,
        message,
      });
    });
  }
});

Deno.test("withBackgroundTasks() refuses a handOver that cannot apply", async (t) => {
  const backend = storingBackend();
  const cases: [string, WithBackgroundTasksOptions, string][] = [
    [
      "an unknown value",
      { backend, handOver: "later" as "after-response" },
      `Cannot wrap handler as 'handOver' must be "before-response" or "after-response": current value is "later"`,
    ],
    [
      "no backend",
      { handOver: "after-response" },
      "Cannot wrap handler as 'handOver' needs a 'backend': without one, tasks run in this process",
    ],
    [
      "skipUndelivered before the response",
      { backend, skipUndelivered: true },
      `Cannot wrap handler as 'skipUndelivered' needs 'handOver: "after-response"' with a backend: chains are stored before their response is sent`,
    ],
  ];
  for (const [name, options, message] of cases) {
    await t.step(name, () => {
      assert.throws(
        () => withBackgroundTasks(() => new Response("ok"), options),
        { name: "TypeError", message },
      );
    });
  }
});

Deno.test("executionConfig() takes telemetry as a boolean, which acts only when Deno's telemetry is on", () => {
  // OTEL_DENO is not set for the tests: Deno's telemetry is off.
  assert.equal(
    executionConfig({ telemetry: true }, action).telemetry,
    undefined,
  );
  assert.equal(
    executionConfig({ telemetry: false }, action).telemetry,
    undefined,
  );
  assert.throws(
    () => executionConfig({ telemetry: "on" as never }, action),
    {
      name: "TypeError",
      message:
        `${action} as 'telemetry' must be a boolean: current value is "on"`,
    },
  );
});
