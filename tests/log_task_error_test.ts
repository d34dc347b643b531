// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { BackgroundTasks, logTaskError, type TaskInfo } from "../mod.ts";

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
