// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { Tally } from "../../src/core/_tally.ts";
import type { TaskStats } from "../../mod.ts";

Deno.test("Tally keeps pending equal to queued plus running, and counts the rest", () => {
  const tally = new Tally();
  for (let task = 0; task < 6; task++) tally.added();
  tally.started("running", 1);
  assert.deepEqual([tally.snapshot().queued, tally.snapshot().running], [5, 1]);
  tally.settled("succeeded");
  tally.settled("timedOut");
  tally.settled("failed");
  tally.retried();
  tally.refused();
  tally.closed("waiting", "skipped", 1);
  tally.started("storing", 1);
  tally.closed("storing", "handedOver", 1);
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
    deduplicated: 0,
    abandoned: 0,
    handedOver: 1,
    storing: 0,
  });
  for (let task = 0; task < 3; task++) tally.added();
  tally.started("storing", 3);
  const status = { state: "up", since: new Date(0) } as const;
  assert.deepEqual(tally.snapshot(status).storing, 3);
  assert.equal(tally.snapshot(status).backend, status);
  assert.ok(!("backend" in tally.snapshot()));
});

Deno.test("Tally counts what a chain held when it ended by the state it ended in", () => {
  const table: [string, Parameters<Tally["closed"]>, Partial<TaskStats>][] = [
    ["discarded while its handler ran", ["open", "discarded", 2], {
      discarded: 2,
    }],
    ["abandoned while its handler ran", ["open", "abandoned", 2], {
      abandoned: 2,
    }],
    ["skipped, its response not delivered", ["waiting", "skipped", 2], {
      skipped: 2,
    }],
    ["abandoned while queued", ["queued", "abandoned", 2], { abandoned: 2 }],
    ["keyed tasks whose place a duplicate took", [
      "waiting",
      "deduplicated",
      2,
    ], { deduplicated: 2 }],
    ["finished running", ["running", "finished", 0], { running: 0 }],
    ["abandoned running", ["running", "abandoned", 2], {
      running: 0,
      abandoned: 2,
    }],
    ["stored", ["storing", "handedOver", 2], { storing: 0, handedOver: 2 }],
    ["lost before its response", ["storing", "discarded", 2], {
      storing: 0,
      discarded: 2,
    }],
    ["lost after its response", ["storing", "finished", 2], {
      storing: 0,
      failed: 2,
    }],
    ["abandoned storing", ["storing", "abandoned", 2], {
      storing: 0,
      abandoned: 2,
    }],
  ];
  for (const [name, [from, to, n], expected] of table) {
    const tally = new Tally();
    tally.added();
    tally.added();
    if (from === "running" || from === "storing") tally.started(from, 2);
    // A chain that finished running has settled its tasks first.
    if (to === "finished" && n === 0) {
      tally.settled("succeeded");
      tally.settled("succeeded");
    }
    tally.closed(from, to, n);
    const stats = tally.snapshot();
    assert.equal(stats.pending, 0, name);
    assert.equal(stats.queued, 0, name);
    for (const [key, value] of Object.entries(expected)) {
      assert.equal(stats[key as keyof TaskStats], value, `${name}: ${key}`);
    }
  }
});
