// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { describeTask } from "../src/_describe_task.ts";

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
