// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { ENVELOPE_BYTES, MessageBudget } from "../../src/kv/_message_budget.ts";
import {
  messageSize,
  structuredSizeBound,
} from "../../src/durable/_structured_size.ts";
import type { RequestSummary } from "../../src/api/task_info.ts";

const LIMIT = 64 * 1024;
const request: RequestSummary = {
  method: "POST",
  url: "http://localhost/orders?id=42",
};

/** A task as a backend receives it: only its name and arguments count. */
function task(name: string, ...args: unknown[]) {
  return { name, args };
}

/** What the whole message weighs, as the budget measures it near the limit. */
function exact(
  tasks: { name: string; args: unknown[] }[],
  summary: RequestSummary | undefined = request,
): number {
  return ENVELOPE_BYTES + messageSize({ tasks, request: summary });
}

Deno.test("MessageBudget bounds tasks cheaply far from the limit", () => {
  const budget = new MessageBudget(LIMIT);
  assert.equal(budget.bytes, 0);
  const tasks = [task("a", "x".repeat(1_000), 1), task("b", { to: "a@b.c" })];
  budget.add(tasks[0]!, request);
  budget.add(tasks[1]!, request);
  // The sum of the bounds, not a measure: the bound counts two bytes per
  // ASCII character, where the message holds one.
  const bounds = ENVELOPE_BYTES + structuredSizeBound(request) +
    structuredSizeBound(tasks[0]) + structuredSizeBound(tasks[1]);
  assert.equal(budget.bytes, bounds);
  assert.ok(exact(tasks) < bounds - 1_000, `${exact(tasks)} vs ${bounds}`);
});

Deno.test("MessageBudget counts only a task's name and arguments", () => {
  const budget = new MessageBudget(LIMIT);
  // A backend receives more: the definition, its retry policy, its timeout.
  const received = { ...task("a", 1), retry: { maxAttempts: 3 }, timeout: 5 };
  budget.add(received, request);
  const bare = new MessageBudget(LIMIT);
  bare.add(task("a", 1), request);
  assert.equal(budget.bytes, bare.bytes);
});

Deno.test("MessageBudget measures the chain exactly once its bounds near the limit", () => {
  const budget = new MessageBudget(LIMIT);
  // Each 20,000-character ASCII string weighs about 20 KB but is bounded at
  // 40 KB: the bounds of three are past the limit, their measure is not.
  const text = "x".repeat(20_000);
  const tasks = [task("keep", text), task("keep", text), task("keep", text)];
  budget.add(tasks[0]!, request);
  assert.ok(budget.bytes > 40_000);
  budget.add(tasks[1]!, request);
  assert.equal(budget.bytes, exact(tasks.slice(0, 2)));
  budget.add(tasks[2]!, request);
  assert.equal(budget.bytes, exact(tasks));
  assert.ok(budget.bytes < LIMIT);
  // After a measure, the next task is bounded on top of it.
  const small = task("small", 7);
  budget.add(small, request);
  assert.equal(budget.bytes, exact(tasks) + structuredSizeBound(small));
});

Deno.test("MessageBudget refuses a task that takes the message past the limit, and does not count it", () => {
  const budget = new MessageBudget(LIMIT);
  const text = "x".repeat(20_000);
  const tasks = [task("keep", text), task("keep", text), task("keep", text)];
  for (const each of tasks) budget.add(each, request);
  const before = budget.bytes;
  const over = task("keep", text);
  assert.throws(() => budget.add(over, request), {
    name: "TypeError",
    message: `Cannot add task "keep" as the chain would weigh ${
      exact([...tasks, over])
    } bytes, more than the ${LIMIT} a Deno KV message may hold`,
  });
  assert.equal(budget.bytes, before);
  // The next measure holds the three tasks and the new one only.
  const fits = task("fits", "y".repeat(3_000));
  assert.ok(exact([...tasks, fits]) <= LIMIT);
  budget.add(fits, request);
  assert.equal(budget.bytes, exact([...tasks, fits]));
});

Deno.test("MessageBudget refuses against the limit it was given, the request included", () => {
  const long: RequestSummary = {
    method: "GET",
    url: "http://x/" + "q".repeat(600),
  };
  const small = task("a", "z".repeat(100));
  const budget = new MessageBudget(1_000);
  assert.throws(() => budget.add(small, long), {
    name: "TypeError",
    message: `Cannot add task "a" as the chain would weigh ${
      exact([small], long)
    } bytes, more than the 1000 a Deno KV message may hold`,
  });
  // Without the request's weight, the same task fits.
  const bare = new MessageBudget(1_000);
  bare.add(small, undefined);
  assert.ok(bare.bytes <= 1_000, `${bare.bytes}`);
});

Deno.test("ENVELOPE_BYTES holds what a step carries besides its tasks and request, a traceparent included", () => {
  const envelope = {
    afterwardStep: 1,
    chain: crypto.randomUUID(),
    index: 2 ** 31,
    attempt: 2 ** 31,
    tasks: [],
    delivered: true,
    trace: `00-${"a".repeat(32)}-${"b".repeat(16)}-01`,
  };
  const size = messageSize(envelope);
  assert.ok(size <= 250, `${size} bytes`);
  assert.ok(size * 2 <= ENVELOPE_BYTES);
});
