// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { describeTask, escapeControls } from "../../src/api/_describe_task.ts";

Deno.test("describeTask() names the task, its index and METHOD /path, never the query", () => {
  const base = { name: "send", index: 2, attempt: 1, delivered: undefined };
  assert.equal(
    describeTask({ ...base, request: undefined }),
    '"send" at index 2',
  );
  assert.equal(
    describeTask({
      ...base,
      request: { method: "POST", url: "http://h/a/b?token=secret#x" },
      delivered: false,
    }),
    '"send" at index 2 of POST /a/b (response not delivered)',
  );
  assert.equal(
    describeTask({
      ...base,
      request: { method: "GET", url: "not a url?token=secret" },
    }),
    '"send" at index 2 of GET not a url',
  );
});

Deno.test("escapeControls() escapes C0, DEL, C1, line separators and bidirectional controls, and keeps other text", () => {
  const table: [string, string][] = [
    ["plain name", "plain name"],
    [
      "caf\u00e9 \u65e5\u672c \u{1f600} \u00a0",
      "caf\u00e9 \u65e5\u672c \u{1f600} \u00a0",
    ],
    ["a\\nb", "a\\nb"],
    ["a\nb\rc\td", "a\\nb\\rc\\td"],
    ["\u0000\u0007\u001b[31m\u007f", "\\x00\\x07\\x1b[31m\\x7f"],
    ["\u0080\u0085\u009b2J\u009f", "\\u0080\\u0085\\u009b2J\\u009f"],
    ["a\u2028b\u2029c", "a\\u2028b\\u2029c"],
    ["\u202eevil\u202c \u2066x\u2069", "\\u202eevil\\u202c \\u2066x\\u2069"],
  ];
  for (const [text, escaped] of table) {
    assert.equal(escapeControls(text), escaped);
  }
});
