// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The job store of a shard on Redis (one `queue.add()` per one-task chain),
// against a queue whose answers the test gives, on a clock it moves.

import assert from "node:assert/strict";
import { mock } from "node:test";
import type { FlowJob } from "npm:bullmq@^6";
import { type JobQueue, jobStore, STALL } from "../../src/bullmq/_job_store.ts";
import { ConnectionWatch } from "../../src/bullmq/_connection_watch.ts";
import type { Datastore } from "../../src/bullmq/_shared.ts";
import type { GroupCommit } from "../../src/durable/_group_commit.ts";
import type { BackendStatus } from "../../mod.ts";

function flow(chain: string): FlowJob {
  return {
    name: "step",
    queueName: "q",
    data: { chain, index: 0, args: [] },
    opts: { jobId: `${chain}.0` },
  };
}

/** A group commit that settles each chain as the test says. */
function fallback(): {
  again: GroupCommit<FlowJob>;
  handed: PromiseWithResolvers<void>[];
} {
  const handed: PromiseWithResolvers<void>[] = [];
  const again = (_flow: FlowJob): Promise<void> => {
    const stored = Promise.withResolvers<void>();
    handed.push(stored);
    return stored.promise;
  };
  again.idle = () => Promise.resolve();
  return { again, handed };
}

/**
 * Timers and `performance.now()` on a clock that moves only by `tick()`;
 * `Deno.unrefTimer()` takes no fake timer, so it is left out.
 */
function clocked(): Disposable & { tick(ms: number): void } {
  const timers = mock.timers;
  timers.enable({ apis: ["setTimeout"] });
  let now = 0;
  mock.method(performance, "now", () => now);
  mock.method(Deno, "unrefTimer", () => {});
  return {
    tick(ms) {
      now += ms;
      timers.tick(ms);
    },
    [Symbol.dispose]() {
      timers.reset();
      mock.restoreAll();
    },
  };
}

Deno.test("jobStore() keeps Redis down when the store it found stalled is answered with a refusal, until the group commit stores the chain", async () => {
  using clock = clocked();
  const answer = Promise.withResolvers<unknown>();
  const queue = {
    backend: {},
    closing: undefined,
    add: () => answer.promise,
  } as unknown as JobQueue;
  const told: BackendStatus["state"][] = [];
  const watch = new ConnectionWatch((status) => void told.push(status.state));
  const datastore = { name: "Redis", forget() {} } as unknown as Datastore;
  const { again, handed } = fallback();
  const store = jobStore(queue, datastore, watch, again, () => false);

  const stored = store(flow("busy"));
  clock.tick(STALL);
  assert.deepEqual(told, ["down"]);
  // A script that runs too long: Redis answers BUSY to what waited behind
  // it, and refuses the group commit's store as well.
  answer.reject(new Error("BUSY Redis is busy running a script"));
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(handed.length, 1);
  assert.deepEqual(told, ["down"], "said up while the chain waits for Redis");
  handed[0]!.resolve();
  await stored;
  assert.deepEqual(told, ["down", "up"]);
});

Deno.test("jobStore() keeps Redis down while another store has waited 5 s, when the chain of the stalled one is stored", async () => {
  using clock = clocked();
  const answers: PromiseWithResolvers<unknown>[] = [];
  const queue = {
    backend: {},
    closing: undefined,
    add: () => {
      const answer = Promise.withResolvers<unknown>();
      answers.push(answer);
      return answer.promise;
    },
  } as unknown as JobQueue;
  const told: BackendStatus["state"][] = [];
  const watch = new ConnectionWatch((status) => void told.push(status.state));
  const datastore = { name: "Redis", forget() {} } as unknown as Datastore;
  const { again, handed } = fallback();
  const store = jobStore(queue, datastore, watch, again, () => false);

  const first = store(flow("first"));
  clock.tick(1_000);
  const second = store(flow("second"));
  clock.tick(STALL - 1_000);
  answers[0]!.reject(new Error("BUSY Redis is busy running a script"));
  await Promise.resolve();
  await Promise.resolve();
  // The second store has waited 5 s since the first's answer.
  clock.tick(STALL);
  handed[0]!.resolve();
  await first;
  assert.deepEqual(told, ["down"], "said up while a store is unanswered");
  answers[1]!.resolve("second.0");
  await second;
  assert.deepEqual(told, ["down", "up"]);
});
