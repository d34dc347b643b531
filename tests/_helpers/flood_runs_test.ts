// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { FloodRuns } from "./flood_runs.ts";

const accepted = new Map([["a", 2], ["b", 1]]);

Deno.test("FloodRuns accepts every task once, in order", async () => {
  const runs = new FloodRuns();
  runs.ran("a:0", "a", 0);
  runs.back();
  runs.ran("a:1", "a", 1);
  runs.ran("b:0", "b", 0);
  await runs.all(3);
  runs.check(accepted, 1);
  assert.equal(runs.twice, 0);
});

Deno.test("FloodRuns accepts a task running at the outage run again right after itself", async () => {
  const runs = new FloodRuns();
  runs.ran("a:0", "a", 0);
  runs.back();
  runs.ran("a:0", "a", 0);
  runs.ran("a:1", "a", 1);
  runs.ran("b:0", "b", 0);
  await runs.all(3);
  runs.check(accepted, 1);
  assert.equal(runs.twice, 1);
});

Deno.test("FloodRuns accepts a task begun while the database was going away, run again", () => {
  const runs = new FloodRuns();
  runs.ran("b:0", "b", 0);
  // The kill has begun: a job whose answer came in before it still starts.
  runs.ran("a:0", "a", 0);
  runs.back();
  runs.ran("a:0", "a", 0);
  runs.ran("a:1", "a", 1);
  runs.check(accepted, 1);
});

Deno.test("FloodRuns refuses a task first run after the database came back and run again", () => {
  const runs = new FloodRuns();
  runs.back();
  runs.ran("a:0", "a", 0);
  runs.ran("a:0", "a", 0);
  runs.ran("a:1", "a", 1);
  runs.ran("b:0", "b", 0);
  assert.throws(() => runs.check(accepted, 4), /not as the outage allows/);
});

Deno.test("FloodRuns refuses more tasks run twice than the worker runs at once", () => {
  const runs = new FloodRuns();
  runs.ran("a:0", "a", 0);
  runs.ran("b:0", "b", 0);
  runs.back();
  runs.ran("a:0", "a", 0);
  runs.ran("b:0", "b", 0);
  runs.ran("a:1", "a", 1);
  assert.throws(() => runs.check(accepted, 1), /ran twice/);
});

Deno.test("FloodRuns refuses tasks out of order, missing, or run three times", () => {
  const outOfOrder = new FloodRuns();
  outOfOrder.ran("a:1", "a", 1);
  outOfOrder.ran("a:0", "a", 0);
  outOfOrder.ran("b:0", "b", 0);
  assert.throws(() => outOfOrder.check(accepted, 4), /a ran 1,0/);
  const missing = new FloodRuns();
  missing.ran("a:0", "a", 0);
  missing.ran("a:1", "a", 1);
  assert.throws(() => missing.check(accepted, 4), /b ran/);
  const thrice = new FloodRuns();
  thrice.ran("a:0", "a", 0);
  thrice.back();
  thrice.ran("a:0", "a", 0);
  thrice.ran("a:0", "a", 0);
  thrice.ran("a:1", "a", 1);
  thrice.ran("b:0", "b", 0);
  assert.throws(() => thrice.check(accepted, 4), /a ran 0,0,0,1/);
});

Deno.test("FloodRuns refuses a task run again under another id", () => {
  const runs = new FloodRuns();
  runs.ran("a:0", "a", 0);
  runs.back();
  runs.ran("a-again:0", "a", 0);
  runs.ran("a:1", "a", 1);
  runs.ran("b:0", "b", 0);
  assert.throws(() => runs.check(accepted, 4), /a ran 0,0,1/);
});
