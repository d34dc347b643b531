// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { uuidV7 } from "../../src/util/_uuid_v7.ts";

Deno.test("uuidV7() makes a UUID of version 7 that holds the time it was made", () => {
  const now = Date.now();
  const id = uuidV7();
  assert.match(
    id,
    /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
  );
  const made = parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
  assert.ok(made >= now && made <= Date.now(), `${made} against ${now}`);
});

Deno.test("uuidV7() ids sort by the millisecond they were made in, and differ within one", () => {
  mock.timers.enable({ apis: ["Date"], now: 1_700_000_000_000 });
  try {
    const first = Array.from({ length: 100 }, uuidV7);
    mock.timers.tick(1);
    const second = uuidV7();
    assert.equal(new Set(first).size, 100);
    for (const id of first) assert.ok(id < second, `${id} < ${second}`);
    assert.equal(first[0]!.slice(0, 13), "018bcfe5-6800");
  } finally {
    mock.timers.reset();
  }
});
