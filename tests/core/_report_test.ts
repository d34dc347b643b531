// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { abortTask, hook, report } from "../../src/core/_report.ts";

const info = {
  name: "send",
  index: 0,
  attempt: 1,
  request: undefined,
  delivered: undefined,
};

Deno.test("hook() and report() write what user code throws, and never throw themselves", async () => {
  const lines: unknown[] = [];
  const reported = Promise.withResolvers<void>();
  const consoleError = mock.method(console, "error", (line: unknown) => {
    lines.push(line);
    if (lines.length === 4) reported.resolve();
  });
  try {
    hook("onTaskStart", () => {
      throw new Error("sync");
    }, info);
    hook("onTaskEnd", () => Promise.reject(new Error("async")), info);
    hook("onTaskStart", undefined, info);
    assert.equal(report(() => "fine", new Error("task"), info), undefined);
    const waited = report(() => Promise.resolve(), new Error("task"), info);
    assert.ok(waited instanceof Promise);
    await waited;
    assert.equal(
      report(
        () => {
          throw new Error("handler");
        },
        new Error("task"),
        info,
      ),
      undefined,
    );
    await reported.promise;
  } finally {
    consoleError.mock.restore();
  }
  // The rejected hook is written once its rejection is handled, which the
  // awaited report lets happen first.
  assert.deepEqual(lines, [
    `The 'onTaskStart' handler threw while reporting background task "send" at index 0:`,
    `The 'onTaskEnd' handler threw while reporting background task "send" at index 0:`,
    'Background task "send" at index 0 failed:',
    `The 'onTaskError' handler threw while reporting background task "send" at index 0:`,
  ]);
});

Deno.test("abortTask() writes an abort listener's throw and goes on", () => {
  const consoleError = mock.method(console, "error", () => {});
  try {
    const controller = new AbortController();
    controller.signal.addEventListener("abort", () => {
      throw new Error("listener");
    });
    abortTask(controller, "why", info);
    assert.equal(controller.signal.aborted, true);
    assert.equal(
      consoleError.mock.calls[0]?.arguments[0],
      'An abort listener of background task "send" at index 0 threw:',
    );
  } finally {
    consoleError.mock.restore();
  }
});
