// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A keyed task's lane on an in-memory Deno KV, message by message: what a
// store writes (Lanes), what an "ended" message moves on, and what the
// watch does with a head whose claim is renewed, lapsed, or whose step
// Deno KV gave up delivering. kvBackend() as a whole is kv_keyed_test.ts's.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { type DefinedTask, defineTask, type OnDuplicate } from "../../mod.ts";
import type { BackendChain } from "../../backend.ts";
import { type Consumer, runStep } from "../../src/kv/_consumer.ts";
import { Lanes } from "../../src/kv/_keyed.ts";
import {
  isLaneMessage,
  type LaneEntry,
  type LaneMessage,
  type LaneRecord,
  runLaneMessage,
} from "../../src/kv/_lane.ts";
import { kvKeys, type Progress, type Step } from "../../src/kv/_step.ts";
import { listFailed } from "../../src/kv/_failed.ts";
import { workerConfig } from "../../src/durable/_worker.ts";
import { counter, guardedTest } from "../_helpers/common.ts";
import { openKv } from "../_helpers/kv.ts";
import { batchWrites } from "../../src/kv/_batch_writes.ts";

const keys = kvKeys(["test"]);
const LEASE = 1_000;

const tasks = {
  queue: keyed("queue"),
  skip: keyed("skip"),
  replace: keyed("replace"),
};

function keyed(onDuplicate: OnDuplicate): DefinedTask {
  return defineTask((_context, _key: string, _label: string) => {}, {
    name: "reindex",
    key: (key) => key,
    onDuplicate,
  }) as unknown as DefinedTask;
}

function consumerOf(kv: Deno.Kv): Consumer {
  return {
    kv,
    keys,
    redelivery: [1_000],
    config: workerConfig({ tasks: [tasks.queue] }, "Cannot create consumer"),
    shutdown: new AbortController(),
    queueName: "test",
    closing: false,
    holder: "this",
    lease: LEASE,
    claimed: new Map(),
    batch: batchWrites({ kv, keys, redelivery: [1_000] }, {
      limit: 50,
      idle: 5,
      maxWait: 20,
      bytes: 60_000,
    }),
  };
}

/** A chain `id` of keyed tasks, each `[key, label]`, of `mode`. */
function chainOf(
  id: string,
  mode: OnDuplicate,
  ...labels: [key: string, label: string][]
): BackendChain {
  const task = tasks[mode];
  return {
    id,
    tasks: labels.map(([key, label]) => ({
      name: task.name,
      args: [key, label],
      timeout: undefined,
      retry: undefined,
      key,
      onDuplicate: mode,
      delay: 0,
      task,
    })),
    request: undefined,
    delivered: undefined,
  };
}

/** The lane `key`: its record, and its entries' labels by number. */
async function laneOf(
  kv: Deno.Kv,
  key: string,
): Promise<{ record: LaneRecord | null; entries: Record<number, string> }> {
  const record = (await kv.get<LaneRecord>(keys.lane("reindex", key))).value;
  const entries: Record<number, string> = {};
  for await (
    const entry of kv.list<LaneEntry>({ prefix: keys.lane("reindex", key) })
  ) {
    entries[entry.key.at(-1) as number] = entry.value.step.tasks[0]!
      .args[1] as string;
  }
  return { record, entries };
}

/** What `run` asked Deno KV to queue, with the delays. */
async function queuedBy(
  run: () => Promise<unknown>,
): Promise<[Step | LaneMessage, number][]> {
  const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
  try {
    await run();
    return enqueue.mock.calls.map((call) => {
      const [message, options] = call.arguments as [
        Step | LaneMessage,
        { delay: number },
      ];
      return [message, options.delay];
    });
  } finally {
    enqueue.mock.restore();
  }
}

/** A queued message, told apart: a step's chain and attempt, or a lane event. */
function describeMessage([message, delay]: [Step | LaneMessage, number]) {
  return isLaneMessage(message)
    ? `${message.event} ${message.chain} after ${delay}`
    : `step ${message.chain} attempt ${message.attempt} after ${delay}`;
}

guardedTest(
  "a store makes the first task its lane's head (its step and its watch queued), and puts the next behind it",
  async () => {
    await using kv = await openKv();
    const lanes = new Lanes(consumerOf(kv));
    const queued = await queuedBy(() =>
      lanes.enqueue(chainOf("c1", "queue", ["u", "a"], ["u", "b"]))
    );
    assert.deepEqual(queued.map(describeMessage), [
      "step c1:0 attempt 1 after 0",
      `watch c1:0 after ${LEASE}`,
    ]);
    assert.deepEqual(await laneOf(kv, "u"), {
      record: { active: "c1:0", seq: 0, tail: 2 },
      entries: { 0: "a", 1: "b" },
    });
  },
);

guardedTest(
  '"skip" and "replace" see whether a task waits: the head not started, or a task behind it',
  async () => {
    await using kv = await openKv();
    const lanes = new Lanes(consumerOf(kv));
    await lanes.enqueue(chainOf("c1", "queue", ["u", "a"]));
    assert.deepEqual(
      await lanes.enqueue(chainOf("c2", "skip", ["u", "b"], ["v", "x"])),
      { deduplicated: [0] },
    );
    // The head is replaced while it waits: its step is gone with it.
    await lanes.enqueue(chainOf("c3", "replace", ["u", "c"]));
    assert.equal((await kv.get(keys.progress("c1:0"))).value, null);
    assert.deepEqual(await laneOf(kv, "u"), {
      record: { active: "c3:0", seq: 0, tail: 1 },
      entries: { 0: "c" },
    });
    // Started: a duplicate waits behind it, and is the one replaced.
    await kv.set(
      keys.progress("c3:0"),
      {
        index: 0,
        attempt: 1,
        lease: { holder: "this", until: Date.now() + LEASE },
      } satisfies Progress,
    );
    await lanes.enqueue(chainOf("c4", "replace", ["u", "d"]));
    assert.deepEqual(
      await lanes.enqueue(chainOf("c5", "replace", ["u", "e"], ["u", "f"])),
      { deduplicated: [0] },
    );
    assert.deepEqual(await laneOf(kv, "u"), {
      record: { active: "c3:0", seq: 0, tail: 2 },
      entries: { 0: "c", 1: "f" },
    });
  },
);

guardedTest(
  'an "ended" message makes the next entry the head, or ends the lane; delivered again, it does nothing',
  async () => {
    await using kv = await openKv();
    const consumer = consumerOf(kv);
    const lanes = new Lanes(consumer);
    await lanes.enqueue(chainOf("c1", "queue", ["u", "a"], ["u", "b"]));
    // The head's chain ended: its progress is gone.
    await kv.delete(keys.progress("c1:0"));
    const ended: LaneMessage = {
      afterwardLane: 1,
      name: "reindex",
      key: "u",
      chain: "c1:0",
      event: "ended",
    };
    const moved = await queuedBy(() => runLaneMessage(ended, consumer));
    assert.deepEqual(moved.map(describeMessage), [
      "step c1:1 attempt 1 after 0",
      `watch c1:1 after ${LEASE}`,
    ]);
    assert.deepEqual(await laneOf(kv, "u"), {
      record: { active: "c1:1", seq: 1, tail: 2 },
      entries: { 1: "b" },
    });
    assert.deepEqual(await queuedBy(() => runLaneMessage(ended, consumer)), []);
    await kv.delete(keys.progress("c1:1"));
    await runLaneMessage({ ...ended, chain: "c1:1" }, consumer);
    assert.deepEqual(await laneOf(kv, "u"), { record: null, entries: {} });
  },
);

guardedTest(
  "a watch comes back when the head's claim would lapse, and once it has lapsed, queues the head's step again",
  async () => {
    await using kv = await openKv();
    const consumer = consumerOf(kv);
    await new Lanes(consumer).enqueue(chainOf("c1", "queue", ["u", "a"]));
    const watch: LaneMessage = {
      afterwardLane: 1,
      name: "reindex",
      key: "u",
      chain: "c1:0",
      event: "watch",
    };
    const until = Date.now() + 600;
    await kv.set(
      keys.progress("c1:0"),
      {
        index: 0,
        attempt: 2,
        lease: { holder: "gone", until },
      } satisfies Progress,
    );
    const [live] = await queuedBy(() => runLaneMessage(watch, consumer));
    assert.match(describeMessage(live!), /^watch c1:0 after \d+$/);
    assert.ok(live![1] > 0 && live![1] <= 600, `after ${live![1]}`);

    await kv.set(
      keys.progress("c1:0"),
      {
        index: 0,
        attempt: 2,
        lease: { holder: "gone", until: Date.now() - 1 },
      } satisfies Progress,
    );
    const lapsed = await queuedBy(() => runLaneMessage(watch, consumer));
    assert.deepEqual(lapsed.map(describeMessage), [
      "step c1:0 attempt 2 after 0",
      `watch c1:0 after ${LEASE}`,
    ]);
    assert.deepEqual((await kv.get(keys.progress("c1:0"))).value, {
      index: 0,
      attempt: 2,
      begun: true,
    });
    // Not claimed since: it comes back a lease later.
    const waiting = await queuedBy(() => runLaneMessage(watch, consumer));
    assert.deepEqual(waiting.map(describeMessage), [
      `watch c1:0 after ${LEASE}`,
    ]);
    // A head the lane no longer has: nothing.
    assert.deepEqual(
      await queuedBy(() =>
        runLaneMessage({ ...watch, chain: "c0:0" }, consumer)
      ),
      [],
    );
  },
);

guardedTest(
  'a head whose process died in its first attempt, queued again by its watch, still counts as running: a "replace" waits behind it, it runs again',
  async () => {
    await using kv = await openKv();
    const consumer = consumerOf(kv);
    const lanes = new Lanes(consumer);
    await lanes.enqueue(chainOf("c1", "replace", ["u", "a"]));
    await kv.set(
      keys.progress("c1:0"),
      {
        index: 0,
        attempt: 1,
        lease: { holder: "gone", until: Date.now() - 1 },
      } satisfies Progress,
    );
    const watch: LaneMessage = {
      afterwardLane: 1,
      name: "reindex",
      key: "u",
      chain: "c1:0",
      event: "watch",
    };
    const lapsed = await queuedBy(() => runLaneMessage(watch, consumer));
    assert.deepEqual(lapsed.map(describeMessage), [
      "step c1:0 attempt 1 after 0",
      `watch c1:0 after ${LEASE}`,
    ]);
    const result = await lanes.enqueue(chainOf("c2", "replace", ["u", "b"]));
    assert.deepEqual(result, { deduplicated: [] });
    const lane = await laneOf(kv, "u");
    assert.equal(lane.record?.active, "c1:0");
    assert.deepEqual(lane.entries, { 0: "a", 1: "b" });
    assert.notEqual((await kv.get(keys.progress("c1:0"))).value, null);
  },
);

guardedTest(
  "a watch ends a head whose step Deno KV gave up delivering: the lane moves on, and failed() lists the task",
  async () => {
    await using kv = await openKv();
    const consumer = consumerOf(kv);
    await new Lanes(consumer).enqueue(chainOf("c1", "queue", ["u", "a"]));
    const entry = await kv.get<LaneEntry>(keys.lane("reindex", "u", 0));
    await kv.set(keys.undelivered("c1:0", 0, 1), entry.value!.step);
    const watch: LaneMessage = {
      afterwardLane: 1,
      name: "reindex",
      key: "u",
      chain: "c1:0",
      event: "watch",
    };
    const queued = await queuedBy(() => runLaneMessage(watch, consumer));
    assert.deepEqual(queued.map(describeMessage), ["ended c1:0 after 0"]);
    assert.equal((await kv.get(keys.progress("c1:0"))).value, null);
    const [failed] = await listFailed(consumer);
    assert.deepEqual(
      {
        id: failed?.value.id,
        reason: failed?.value.reason,
        key: failed?.value.key,
      },
      { id: "c1:0", reason: "undelivered", key: "u" },
    );
  },
);

guardedTest(
  "stores racing into one lane from two processes each decide against the lane as the commit finds it",
  async () => {
    await using kv = await openKv();
    // Two backends on one database: their stores conflict in Deno KV only.
    const two = [new Lanes(consumerOf(kv)), new Lanes(consumerOf(kv))];
    const skipped = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) => two[i % 2]!.enqueue(chainOf(`s${i}`, "skip", ["u", `s${i}`])),
      ),
    );
    assert.equal(
      skipped.filter(({ deduplicated }) => deduplicated?.length === 0).length,
      1,
    );
    const queued = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) =>
          two[i % 2]!.enqueue(chainOf(`q${i}`, "queue", ["v", `q${i}`])),
      ),
    );
    assert.ok(queued.every(({ deduplicated }) => deduplicated?.length === 0));
    const { record, entries } = await laneOf(kv, "v");
    assert.equal(record?.tail, 20);
    assert.deepEqual(
      Object.values(entries).sort(),
      Array.from({ length: 20 }, (_, i) => `q${i}`).sort(),
    );
  },
);

guardedTest(
  "a process that puts a task behind another's head watches that head too, once",
  async () => {
    await using kv = await openKv();
    const first = new Lanes(consumerOf(kv));
    const second = new Lanes(consumerOf(kv));
    await first.enqueue(chainOf("c1", "queue", ["u", "a"]));
    const until = Date.now() + 600;
    await kv.set(
      keys.progress("c1:0"),
      {
        index: 0,
        attempt: 1,
        lease: { holder: "first", until },
      } satisfies Progress,
    );
    const [watch, ...rest] = await queuedBy(() =>
      second.enqueue(chainOf("c2", "queue", ["u", "b"]))
    );
    assert.deepEqual(rest, []);
    assert.match(describeMessage(watch!), /^watch c1:0 after \d+$/);
    assert.ok(watch![1] > 0 && watch![1] <= 600, `after ${watch![1]}`);
    assert.deepEqual(
      await queuedBy(() => second.enqueue(chainOf("c3", "queue", ["u", "c"]))),
      [],
    );
  },
);

guardedTest(
  'a watch that finds its head\'s chain ended moves the lane on, as its "ended" message would',
  async () => {
    await using kv = await openKv();
    const consumer = consumerOf(kv);
    await new Lanes(consumer).enqueue(
      chainOf("c1", "queue", ["u", "a"], ["u", "b"]),
    );
    await kv.delete(keys.progress("c1:0"));
    const watch: LaneMessage = {
      afterwardLane: 1,
      name: "reindex",
      key: "u",
      chain: "c1:0",
      event: "watch",
    };
    const queued = await queuedBy(() => runLaneMessage(watch, consumer));
    assert.deepEqual(queued.map(describeMessage), [
      "step c1:1 attempt 1 after 0",
      `watch c1:1 after ${LEASE}`,
    ]);
    assert.deepEqual(await laneOf(kv, "u"), {
      record: { active: "c1:1", seq: 1, tail: 2 },
      entries: { 1: "b" },
    });
  },
);

guardedTest(
  "heads of lanes run together share the listener's commits, each checked on its own: a head taken over meanwhile writes nothing, and its lane stays",
  async () => {
    await using kv = await openKv();
    const started = counter(3);
    const gate = Promise.withResolvers<void>();
    const gated = defineTask(async (_context, _key: string, _label: string) => {
      started.tick();
      await gate.promise;
    }, { name: "reindex", key: (key) => key }) as unknown as DefinedTask;
    const consumer: Consumer = {
      ...consumerOf(kv),
      config: workerConfig({ tasks: [gated] }, "Cannot create consumer"),
      // Long enough for the three outcomes to come in on a loaded machine.
      batch: batchWrites({ kv, keys, redelivery: [1_000] }, {
        limit: 50,
        idle: 200,
        maxWait: 60_000,
        bytes: 60_000,
      }),
    };
    const lanes = new Lanes(consumer);
    await lanes.enqueue(chainOf("c1", "queue", ["u", "a"], ["u", "b"]));
    await lanes.enqueue(chainOf("c2", "queue", ["v", "x"]));
    await lanes.enqueue(chainOf("c3", "queue", ["w", "p"]));
    const heads: Step[] = [];
    for (const key of ["u", "v", "w"]) {
      const entry = await kv.get<LaneEntry>(keys.lane("reindex", key, 0));
      heads.push(entry.value!.step);
    }
    const commit = mock.method(Deno.AtomicOperation.prototype, "commit");
    let claims: number;
    const other: Progress = {
      index: 0,
      attempt: 1,
      lease: { holder: "other", until: Date.now() + LEASE },
    };
    try {
      const runs = Promise.all(heads.map((step) => runStep(step, consumer)));
      await started.done;
      claims = commit.mock.callCount();
      // Another process took c3:0 over, its claim having lapsed.
      await kv.set(keys.progress("c3:0"), other);
      gate.resolve();
      await runs;
    } finally {
      commit.mock.restore();
    }
    // The three claims in one commit.
    assert.equal(claims, 1);
    // Each outcome ends its chain and queues its "ended" message in one
    // operation: c3:0's, its check failed, did neither.
    assert.equal((await kv.get(keys.progress("c1:0"))).value, null);
    assert.equal((await kv.get(keys.progress("c2:0"))).value, null);
    assert.deepEqual((await kv.get(keys.progress("c3:0"))).value, other);
    assert.deepEqual(await laneOf(kv, "w"), {
      record: { active: "c3:0", seq: 0, tail: 1 },
      entries: { 0: "p" },
    });
  },
);
