// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import {
  NAMES_STALE_AFTER,
  quoteNames,
  unknownNames,
} from "../../src/durable/_unknown_tasks.ts";

Deno.test("unknownNames() lists the names a worker lacks, sorted, leaving out those no web process wrote for a week", () => {
  const now = Date.UTC(2026, 0, 8);
  const known = new Map([["sendEmail", {}]]);
  assert.deepEqual(
    unknownNames(
      [
        ["sendEmail", now],
        ["resize", now - 1000],
        ["charge", now - NAMES_STALE_AFTER],
        ["retired", now - NAMES_STALE_AFTER - 1],
      ],
      known,
      now,
    ),
    ["charge", "resize"],
  );
  assert.equal(NAMES_STALE_AFTER, 7 * 24 * 60 * 60 * 1000);
  assert.deepEqual(unknownNames([], known, now), []);
});

Deno.test("quoteNames() quotes each name for a line", () => {
  assert.equal(quoteNames(["a", "b"]), `"a", "b"`);
});
