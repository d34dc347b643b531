// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { Tally } from "../../src/core/_tally.ts";

Deno.test("Tally keeps pending equal to queued plus running, and counts the rest", () => {
  const tally = new Tally();
  tally.pending += 6;
  tally.running = 1;
  assert.deepEqual([tally.snapshot().queued, tally.snapshot().running], [5, 1]);
  tally.settled("succeeded");
  tally.settled("timedOut");
  tally.settled("failed");
  tally.retried();
  tally.dropped("refused", 1);
  tally.dropped("skipped", 1);
  tally.dropped("enqueued", 1);
  assert.deepEqual(tally.snapshot(), {
    pending: 1,
    queued: 0,
    running: 1,
    succeeded: 1,
    failed: 2,
    timedOut: 1,
    retried: 1,
    refused: 1,
    discarded: 0,
    skipped: 1,
    abandoned: 0,
    enqueued: 1,
    storing: 0,
  });
  tally.storing += 3;
  const status = { state: "up", since: new Date(0) } as const;
  assert.deepEqual(tally.snapshot(status).storing, 3);
  assert.equal(tally.snapshot(status).backend, status);
  assert.ok(!("backend" in tally.snapshot()));
});
