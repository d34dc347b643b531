// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { Drains } from "../../src/core/_drain.ts";

Deno.test("Drains count only the chains each waits for, and end when the last of them does", async () => {
  const drains = new Drains();
  const giveUp = () => assert.fail("no deadline");
  // The first waits for chains 1 and 2; the second for 1 to 3.
  const first = drains.begin(2, 2, {}, giveUp);
  const second = drains.begin(3, 3, {}, giveUp);
  drains.count(1, "succeeded", 1);
  drains.count(3, "failed", 2);
  drains.abandoned(2, ["a", "b", "a"]);
  drains.ended(1);
  drains.ended(2);
  assert.deepEqual(await first, {
    succeeded: 1,
    failed: 0,
    handedOver: 0,
    abandoned: 3,
    abandonedTasks: { a: 2, b: 1 },
    unstored: 0,
  });
  drains.count(3, "handedOver", 4);
  drains.ended(3);
  assert.deepEqual(await second, {
    succeeded: 1,
    failed: 2,
    handedOver: 4,
    abandoned: 3,
    abandonedTasks: { a: 2, b: 1 },
    unstored: 0,
  });
});

Deno.test("Drains count the abandoned tasks a backend was storing, and say the backend's status", async () => {
  const since = new Date(0);
  const status = {
    state: "down",
    since,
    error: "connect ECONNREFUSED",
  } as const;
  const drains = new Drains({ status });
  const drain = drains.begin(1, 1, {}, () => assert.fail("no deadline"));
  drains.abandoned(1, ["a", "b"], true);
  drains.abandoned(1, ["c"]);
  drains.ended(1);
  assert.deepEqual(await drain, {
    succeeded: 0,
    failed: 0,
    handedOver: 0,
    abandoned: 3,
    abandonedTasks: { a: 1, b: 1, c: 1 },
    unstored: 2,
    backend: status,
  });
});

Deno.test("Drains give up at the deadline, or at once with a signal already aborted", async () => {
  const drains = new Drains();
  const given: [number, unknown][] = [];
  const reason = new Error("stop");
  const controller = new AbortController();
  controller.abort(reason);
  const drained = drains.begin(
    5,
    1,
    { signal: controller.signal },
    (last, why) => {
      given.push([last, why]);
      drains.ended(5);
    },
  );
  assert.equal((await drained).abandoned, 0);
  assert.deepEqual(given, [[5, reason]]);
  // Nothing live: resolved at once, and no timer is left behind.
  assert.equal(
    (await drains.begin(5, 0, { timeout: 60_000 }, () => {})).abandoned,
    0,
  );
});
