// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { errorText } from "../../src/util/_error_text.ts";
import { isInstance } from "../../src/util/_promise.ts";
import { TaskTimeoutError } from "../../mod.ts";
import { hostileValues } from "../_helpers/common.ts";

Deno.test("errorText() describes what a task may throw", () => {
  const error = new RangeError("out of range");
  const table: [unknown, string, string][] = [
    [error, error.stack!, "out of range"],
    ["plain text", "plain text", "plain text"],
    [{ code: 42 }, '{"code":42}', '{"code":42}'],
    [undefined, "undefined", "undefined"],
    [Symbol("s"), "Symbol(s)", "Symbol(s)"],
    [10n, "10", "10"],
    [Object.assign(new Error(""), { stack: 3 }), "Error", "Error"],
  ];
  for (const [value, stack, message] of table) {
    assert.equal(errorText(value), stack);
    assert.equal(errorText(value, "message"), message);
  }
});

Deno.test("errorText() never throws, whatever the value", () => {
  for (const { label, value, text } of hostileValues()) {
    assert.equal(errorText(value), text, label);
    assert.equal(errorText(value, "message"), text, label);
  }
});

Deno.test("isInstance() answers false where instanceof throws", () => {
  const [, proxy] = hostileValues();
  assert.throws(() => proxy!.value instanceof Error, TypeError);
  assert.equal(isInstance(proxy!.value, Error), false);
  const timeout = new TaskTimeoutError("task", 5);
  assert.equal(isInstance(timeout, TaskTimeoutError), true);
  assert.equal(isInstance(new Error("x"), TaskTimeoutError), false);
});
