// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  BackgroundTasks,
  defineTask,
  logTaskError,
  QueueFullError,
  type TaskInfo,
  TaskTimeoutError,
} from "../../mod.ts";

function logged(error: unknown, info: TaskInfo): unknown[] {
  const consoleError = mock.method(console, "error", () => {});
  try {
    logTaskError(error, info);
    assert.equal(consoleError.mock.callCount(), 1);
    return consoleError.mock.calls[0]!.arguments;
  } finally {
    consoleError.mock.restore();
  }
}

Deno.test("logTaskError() writes one entry naming the task, its index and METHOD /path", async (t) => {
  const error = new Error("boom");
  const table: [string, Partial<TaskInfo>, string][] = [
    ["outside a request", {}, 'Background task "sendEmail" at index 2 failed:'],
    [
      "with a request",
      { request: { method: "POST", url: "http://localhost/a/b?token=x#h" } },
      'Background task "sendEmail" at index 2 of POST /a/b failed:',
    ],
    [
      "with an undelivered response",
      {
        request: { method: "GET", url: "http://localhost/" },
        delivered: false,
      },
      'Background task "sendEmail" at index 2 of GET / (response not delivered) failed:',
    ],
    [
      "after several attempts",
      { attempt: 3 },
      'Background task "sendEmail" at index 2 failed after 3 attempts:',
    ],
    [
      "with a URL that does not parse",
      { request: { method: "GET", url: "/relative?token=x" } },
      'Background task "sendEmail" at index 2 of GET /relative failed:',
    ],
  ];
  for (const [name, fields, message] of table) {
    await t.step(name, () => {
      const info: TaskInfo = {
        name: "sendEmail",
        index: 2,
        attempt: 1,
        request: undefined,
        delivered: undefined,
        ...fields,
      };
      assert.deepEqual(logged(error, info), [message, error]);
    });
  }
});

Deno.test("logTaskError() passes values that are not errors through unchanged", () => {
  const info: TaskInfo = {
    name: "anonymous",
    index: 0,
    attempt: 1,
    request: undefined,
    delivered: undefined,
  };
  for (const value of ["a string", undefined, null, 42]) {
    assert.deepEqual(logged(value, info), [
      'Background task "anonymous" at index 0 failed:',
      value,
    ]);
  }
});

Deno.test("logTaskError() writes a value the console cannot inspect as text, and never blames onTaskError", async () => {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  const lines: string[] = [];
  // Like the real console, this one inspects what it is given, which
  // throws for a revoked proxy.
  const consoleError = mock.method(
    console,
    "error",
    (...args: unknown[]) =>
      void lines.push(
        args.map((arg) => typeof arg === "string" ? arg : Deno.inspect(arg))
          .join(" "),
      ),
  );
  try {
    assert.throws(() => Deno.inspect(proxy), TypeError);
    logTaskError(proxy, {
      name: "t",
      index: 0,
      attempt: 1,
      request: undefined,
      delivered: undefined,
    });
    const tasks = new BackgroundTasks();
    tasks.addTask(function hostile() {
      return Promise.reject(proxy);
    });
    await tasks.run();
  } finally {
    consoleError.mock.restore();
  }
  assert.deepEqual(lines, [
    'Background task "t" at index 0 failed: [object that cannot be described]',
    'Background task "hostile" at index 0 failed: [object that cannot be described]',
  ]);
});

/** Control characters, which a terminal or a log reader acts on. */
// deno-lint-ignore no-control-regex
const CONTROLS = /[\u0000-\u001f\u007f-\u009f]/;

Deno.test("the default reporter escapes control characters in a task's name, so that a name cannot forge or recolour a line", async () => {
  const forged =
    "send\nShutdown drained every background task: 0 succeeded and 0 failed while draining\x1b[31m\u009b";
  const sendEmail = defineTask(() => {
    throw new Error("boom");
  }, { name: forged });
  const plain = Object.defineProperty(
    () => {
      throw new Error("boom");
    },
    "name",
    { value: forged },
  );
  const consoleError = mock.method(console, "error", () => {});
  try {
    const tasks = new BackgroundTasks();
    tasks.addTask(sendEmail);
    tasks.addTask(plain);
    await tasks.run();
  } finally {
    consoleError.mock.restore();
  }
  const lines = consoleError.mock.calls.map((call) => call.arguments[0]);
  const escaped =
    "send\\nShutdown drained every background task: 0 succeeded and 0 failed while draining\\x1b[31m\\u009b";
  assert.deepEqual(lines, [
    `Background task "${escaped}" at index 0 failed:`,
    `Background task "${escaped}" at index 1 failed:`,
  ]);
  for (const line of lines) assert.doesNotMatch(String(line), CONTROLS);
});

Deno.test("the default reporter escapes control characters in the request's method and path, and keeps other Unicode", async (t) => {
  const table: [string, string, string, string][] = [
    [
      "a URL that does not parse",
      "GET",
      "/a\r\nGET /forged\x1b[2K\x7f?token=secret",
      "GET /a\\r\\nGET /forged\\x1b[2K\\x7f",
    ],
    [
      "a method of controls",
      "GET\n\x1b[31m",
      "http://localhost/caf\u00e9/\u65e5",
      "GET\\n\\x1b[31m /caf%C3%A9/%E6%97%A5",
    ],
    [
      "a parsed URL, whose controls are percent-encoded",
      "POST",
      "http://localhost/a\u009b\u0085b\tc",
      "POST /a%C2%9B%C2%85bc",
    ],
  ];
  for (const [name, method, url, described] of table) {
    await t.step(name, () => {
      const [line] = logged(new Error("boom"), {
        name: "caf\u00e9 \u65e5\u672c",
        index: 0,
        attempt: 1,
        request: { method, url },
        delivered: undefined,
      });
      assert.equal(
        line,
        `Background task "caf\u00e9 \u65e5\u672c" at index 0 of ${described} failed:`,
      );
    });
  }
});

Deno.test("a failing hook's report escapes control characters in the task's name", async () => {
  const consoleError = mock.method(console, "error", () => {});
  try {
    const tasks = new BackgroundTasks();
    tasks.addTask(defineTask(() => {}, { name: "a\nb" }));
    await tasks.run({
      onTaskStart() {
        throw new Error("hook failed");
      },
    });
  } finally {
    consoleError.mock.restore();
  }
  assert.deepEqual(
    consoleError.mock.calls.map((call) => call.arguments[0]),
    [
      `The 'onTaskStart' handler threw while reporting background task "a\\nb" at index 0:`,
    ],
  );
});

Deno.test("the default reporter writes a timeout as its message, without the timer's stack", async () => {
  const slow = defineTask(() => new Promise<void>(() => {}), {
    name: "slow\x1b[31m",
    timeout: 10,
  });
  const consoleError = mock.method(console, "error", () => {});
  try {
    const tasks = new BackgroundTasks();
    tasks.addTask(slow);
    await tasks.run();
  } finally {
    consoleError.mock.restore();
  }
  assert.deepEqual(consoleError.mock.calls.map((call) => call.arguments), [[
    'Background task "slow\\x1b[31m" at index 0 failed:',
    'TaskTimeoutError: Background task "slow\\x1b[31m" timed out after 10 ms',
  ]]);
});

Deno.test("the library's own errors escape control characters in a task's name, and keep it whole in their fields", () => {
  const name = "a\nb\x1b[31m";
  const full = new QueueFullError(name, 10);
  assert.equal(
    full.message,
    `Cannot add task "a\\nb\\x1b[31m" as 10 tasks are already pending, the 'maxPending' limit`,
  );
  assert.equal(full.task, name);
  const timeout = new TaskTimeoutError(name, 5);
  assert.equal(
    timeout.message,
    'Background task "a\\nb\\x1b[31m" timed out after 5 ms',
  );
  assert.equal(timeout.task, name);
});

Deno.test("the default reporter escapes control characters in what a task threw: an error's message, a string", () => {
  const info: TaskInfo = {
    name: "chargeCard",
    index: 0,
    attempt: 1,
    request: undefined,
    delivered: undefined,
  };
  const forged = "declined\nShutdown drained every background task\x1b[31m";
  const error = new Error(forged);
  const [, written] = logged(error, info);
  const text = typeof written === "string" ? written : Deno.inspect(written);
  const [first, ...frames] = text.split("\n");
  assert.equal(
    first,
    "Error: declined\\nShutdown drained every background task\\x1b[31m",
  );
  assert.ok(frames.length > 0 && frames.every((line) => /^ {4}at /.test(line)));
  assert.equal(error.message, forged, "the error itself is left as it is");
  // A subclass that names itself after its stack was made.
  class CardError extends Error {
    constructor(message: string) {
      super(message);
      this.name = "CardError";
    }
  }
  const [, subclass] = logged(new CardError(forged), info);
  const [head, ...more] = String(subclass).split("\n");
  assert.equal(
    head,
    "CardError: declined\\nShutdown drained every background task\\x1b[31m",
  );
  assert.ok(more.length > 0 && more.every((line) => /^ {4}at /.test(line)));
  assert.deepEqual(
    logged(forged, info)[1],
    "declined\\nShutdown drained every background task\\x1b[31m",
  );
});
