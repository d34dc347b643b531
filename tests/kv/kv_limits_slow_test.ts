// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The Deno KV backend with chains filled up to Deno KV's limit on a message:
// hundreds of steps each, so slow (half a minute); run by
// `deno task test:slow`, not the everyday `deno task test`.

import assert from "node:assert/strict";
import { defineTask, withBackgroundTasks } from "../../mod.ts";
import type { KvFailedTask } from "../../kv.ts";
import { callHandler } from "../../testing.ts";
import { guardedTest } from "../_helpers/common.ts";
import { openBackend } from "../_helpers/kv.ts";

/**
 * Fills one chain with `step(i, padding)` until `addTask` refuses, runs it,
 * and resolves once its last task ran, or once a task ran again or out of
 * order (its message was delivered again): the indexes run, in order, and
 * the failed tasks. A task throws what `fail` returns for it, if anything.
 */
async function runFullChain(
  padding: string,
  fail: (index: number, attempt: number, last: number) => Error | undefined =
    () => undefined,
): Promise<{ added: number; ran: number[]; letters: KvFailedTask[] }> {
  const ran: number[] = [];
  const over = Promise.withResolvers<void>();
  let added = 0;
  const step = defineTask(({ attempt }, index: number, _padding: string) => {
    ran.push(index);
    const error = fail(index, attempt, added - 1);
    const expected = ran.length === 1 || index === ran.at(-2)! + 1 ||
      (index === ran.at(-2) && attempt > 1);
    if (!expected || index === added - 1) over.resolve();
    if (error !== undefined) throw error;
  }, {
    name: "step",
    retry: {
      maxAttempts: 2,
      minDelay: 1,
      maxDelay: 1,
      isRetriable: (error) => (error as Error).message === "once",
    },
  });
  // A message whose handler throws comes back after a millisecond.
  await using db = await openBackend({
    tasks: [step],
    redelivery: [1],
    onTaskError: () => {},
  });
  let refused: unknown;
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    try {
      for (;; added++) tasks.addTask(step, added, padding);
    } catch (error) {
      refused = error;
    }
    return new Response("ok");
  }, { backend: db.backend });
  await (await callHandler(handler, "/")).tasks;
  assert.ok(refused instanceof TypeError);
  assert.match(
    refused.message,
    /^Cannot add task "step" as the chain would weigh \d+ bytes, more than the 65536 a Deno KV message may hold$/,
  );
  assert.deepEqual([handler.stats.handedOver, handler.stats.failed], [
    added,
    0,
  ]);
  await over.promise;
  return { added, ran, letters: await db.backend.failed() };
}

guardedTest(
  "kvBackend() runs to its end a chain filled up to Deno KV's limit",
  async () => {
    // Many small tasks: the arrays of the message weigh most. Each step
    // waits about 50 ms for Deno KV's delivery, so both chains run at once.
    const lengths = [400, 100];
    const runs = await Promise.all(
      lengths.map((length) => runFullChain("p".repeat(length))),
    );
    for (const [i, { added, ran, letters }] of runs.entries()) {
      const label = `tasks of ${lengths[i]} characters`;
      assert.ok(added > 100, `${label}: only ${added} fit`);
      assert.deepEqual(
        ran,
        Array.from({ length: added }, (_, i) => i),
        label,
      );
      assert.deepEqual(letters, [], label);
    }
  },
);

guardedTest(
  "kvBackend() retries, and keeps as failed, a chain filled up to Deno KV's limit",
  async () => {
    const { added, ran, letters } = await runFullChain(
      "p".repeat(400),
      (index, attempt, last) =>
        index === 1 && attempt === 1
          ? new Error("once")
          : index === last - 1
          ? new Error(`declined ${"e".repeat(70_000)}`)
          : undefined,
    );
    assert.deepEqual(ran, [
      0,
      1,
      ...Array.from({ length: added - 1 }, (_, i) => i + 1),
    ]);
    assert.equal(letters.length, 1);
    const [letter] = letters;
    assert.deepEqual(
      [letter?.reason, letter?.index, letter?.attempts, letter?.args],
      ["failed", added - 2, 1, [added - 2, "p".repeat(400)]],
    );
    assert.match(
      letter!.error,
      /^Error: declined e+ \[cut to fit in Deno KV\]$/,
    );
  },
);
