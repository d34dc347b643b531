// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Keyed tasks on the KV backend, in one process: each onDuplicate mode and
// delay kept in the task's lane, what the web side and the backend's hooks
// are told of the tasks deduplicated, the lane's head watched, retries, and
// what is refused at addTask(). Two processes on one file are
// kv_keyed_processes_test.ts's; a worker killed while it holds a key,
// kv_keyed_kill_slow_test.ts's.

import assert from "node:assert/strict";
import {
  defineTask,
  type OnDuplicate,
  type TaskEndEvent,
  withBackgroundTasks,
} from "../../mod.ts";
import { kvBackend } from "../../kv.ts";
import { callHandler } from "../../testing.ts";
import { addTaskError, guardedTest } from "../_helpers/common.ts";
import { openBackend, openKv } from "../_helpers/kv.ts";
import { kvKeys } from "../../src/kv/_step.ts";

/**
 * What keyed tasks did, in order: `start <label>`, `end <label>`; a task
 * whose label is held waits for its release before it ends.
 */
function journal(): {
  events: string[];
  /** Resolves once `event` has happened. */
  seen(event: string): Promise<void>;
  hold(label: string): void;
  release(label: string): void;
  /** What a task of the journal does: starts, waits if held, ends. */
  run(label: string): Promise<void>;
  /** A keyed task of `mode`, whose key and label are its arguments. */
  task(
    name: string,
    onDuplicate: OnDuplicate,
    delay?: number,
  ): ReturnType<typeof defineTask<[string, string]>>;
} {
  const events: string[] = [];
  const waiting = new Map<string, PromiseWithResolvers<void>>();
  const held = new Map<string, PromiseWithResolvers<void>>();
  const push = (event: string) => {
    events.push(event);
    waiting.get(event)?.resolve();
  };
  return {
    events,
    seen(event) {
      if (events.includes(event)) return Promise.resolve();
      const wait = waiting.get(event) ?? Promise.withResolvers<void>();
      waiting.set(event, wait);
      return wait.promise;
    },
    hold(label) {
      held.set(label, Promise.withResolvers<void>());
    },
    release(label) {
      held.get(label)!.resolve();
    },
    async run(label) {
      push(`start ${label}`);
      await held.get(label)?.promise;
      push(`end ${label}`);
    },
    task(name, onDuplicate, delay) {
      return defineTask(
        (_context, _key: string, label: string) => this.run(label),
        {
          name,
          key: (key) => key,
          onDuplicate,
          ...(delay === undefined ? {} : { delay }),
        },
      );
    },
  };
}

/** A handler that adds `task(key, label)` per `?add=key:label`, in order. */
function keyedHandler(
  task: ReturnType<typeof defineTask<[string, string]>>,
  backend: ReturnType<typeof kvBackend>,
  onTaskEnd?: (event: TaskEndEvent) => void,
) {
  return withBackgroundTasks((request, _info, tasks) => {
    for (const pair of new URL(request.url).searchParams.getAll("add")) {
      const [key, label] = pair.split(":");
      tasks.addTask(task, key!, label!);
    }
    return new Response("ok");
  }, { backend, ...(onTaskEnd === undefined ? {} : { onTaskEnd }) });
}

async function add(
  handler: ReturnType<typeof keyedHandler>,
  ...pairs: string[]
): Promise<void> {
  const query = pairs.map((pair) => `add=${pair}`).join("&");
  const { response, tasks } = await callHandler(handler, `/?${query}`);
  assert.equal(response.status, 200);
  await tasks;
}

guardedTest(
  'kvBackend() runs "queue" duplicates one at a time, in the order they were added, and other keys alongside',
  async () => {
    const log = journal();
    const reindex = log.task("reindex", "queue");
    await using db = await openBackend({ tasks: [reindex] });
    const handler = keyedHandler(reindex, db.backend);
    log.hold("a1");
    await add(handler, "a:a1");
    await log.seen("start a1");
    await add(handler, "a:a2");
    await add(handler, "a:a3", "b:b1");
    // Stored after the duplicates: the queue had the time to run them.
    await log.seen("end b1");
    assert.deepEqual(log.events, ["start a1", "start b1", "end b1"]);
    log.release("a1");
    await log.seen("end a3");
    assert.deepEqual(log.events.slice(3), [
      "end a1",
      "start a2",
      "end a2",
      "start a3",
      "end a3",
    ]);
    assert.equal(handler.stats.handedOver, 4);
    assert.equal(handler.stats.deduplicated, 0);
  },
);

guardedTest(
  'kvBackend() keeps the order of "queue" duplicates handed over at once, a process\'s first stores included',
  async () => {
    const log = journal();
    const reindex = log.task("reindex", "queue");
    await using db = await openBackend({ tasks: [reindex] });
    const handler = keyedHandler(reindex, db.backend);
    await Promise.all(
      ["a:1", "a:2", "a:3"].map((pair) => add(handler, pair)),
    );
    await log.seen("end 3");
    assert.deepEqual(log.events, [
      "start 1",
      "end 1",
      "start 2",
      "end 2",
      "start 3",
      "end 3",
    ]);
  },
);

guardedTest(
  'kvBackend() does not add a "skip" task while a duplicate waits: the handler counts it deduplicated and tells onTaskEnd',
  async () => {
    const log = journal();
    const warm = log.task("warm", "skip");
    await using db = await openBackend({ tasks: [warm] });
    const ends: Partial<TaskEndEvent>[] = [];
    const handler = keyedHandler(warm, db.backend, (event) => {
      if (event.outcome === "deduplicated") {
        const { name, index, attempt, outcome, duration } = event;
        ends.push({ name, index, attempt, outcome, duration });
      }
    });
    log.hold("w1");
    await add(handler, "p:w1");
    await log.seen("start w1");
    // Running, not waiting: a duplicate is added behind it.
    await add(handler, "p:w2");
    // One waits now: these are not added, one request's second either.
    await add(handler, "p:w3");
    await add(handler, "q:x1", "p:w4", "q:x2");
    await log.seen("end x1");
    assert.deepEqual(ends, [
      {
        name: "warm",
        index: 0,
        attempt: 0,
        outcome: "deduplicated",
        duration: 0,
      },
      {
        name: "warm",
        index: 1,
        attempt: 0,
        outcome: "deduplicated",
        duration: 0,
      },
      {
        name: "warm",
        index: 2,
        attempt: 0,
        outcome: "deduplicated",
        duration: 0,
      },
    ]);
    const { handedOver, deduplicated, pending } = handler.stats;
    assert.deepEqual({ handedOver, deduplicated, pending }, {
      handedOver: 3,
      deduplicated: 3,
      pending: 0,
    });
    log.release("w1");
    await log.seen("end w2");
    assert.deepEqual(log.events, [
      "start w1",
      "start x1",
      "end x1",
      "end w1",
      "start w2",
      "end w2",
    ]);
  },
);

guardedTest(
  "kvBackend() lets a \"replace\" task take the waiting duplicate's place: its arguments win, the replaced one is told to the backend's onTaskEnd",
  async () => {
    const log = journal();
    const reindex = log.task("reindex", "replace");
    const told: TaskEndEvent[] = [];
    await using db = await openBackend({
      tasks: [reindex],
      onTaskEnd: (event) => {
        if (event.outcome === "deduplicated") told.push(event);
      },
    });
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const label = new URL(request.url).searchParams.get("label")!;
      tasks.addTask(reindex, "u42", label);
      return new Response("ok");
    }, { backend: db.backend });
    const replace = async (label: string) => {
      await (await callHandler(handler, `/?label=${label}`)).tasks;
    };
    log.hold("r1");
    await replace("r1");
    await log.seen("start r1");
    // Behind the running one: r2 waits, r3 then r4 take its place.
    for (const label of ["r2", "r3", "r4"]) await replace(label);
    assert.deepEqual(
      told.map(({ name, index, attempt, outcome }) => ({
        name,
        index,
        attempt,
        outcome,
      })),
      [
        { name: "reindex", index: 0, attempt: 0, outcome: "deduplicated" },
        { name: "reindex", index: 0, attempt: 0, outcome: "deduplicated" },
      ],
    );
    assert.equal(new Set(told.map(({ id }) => id)).size, 2);
    // Handed over: the handler counts them so; the backend told the rest.
    assert.deepEqual(
      [handler.stats.handedOver, handler.stats.deduplicated],
      [4, 0],
    );
    log.release("r1");
    await log.seen("end r4");
    assert.deepEqual(log.events, ["start r1", "end r1", "start r4", "end r4"]);
  },
);

guardedTest(
  'kvBackend() starts a keyed task no earlier than its delay after its store, and a "replace" restarts the wait: a burst runs once, with the last arguments',
  async () => {
    const DELAY = 500;
    const started: { label: string; at: number }[] = [];
    const ran = Promise.withResolvers<void>();
    const reindex = defineTask((_context, _key: string, label: string) => {
      started.push({ label, at: Date.now() });
      if (label === "last") ran.resolve();
    }, {
      name: "reindex",
      key: (key) => key,
      onDuplicate: "replace",
      delay: DELAY,
    });
    await using db = await openBackend({ tasks: [reindex] });
    const handler = keyedHandler(reindex, db.backend);
    for (let i = 0; i < 5; i++) await add(handler, `k:${i}`);
    const before = Date.now();
    await add(handler, "k:last");
    await ran.promise;
    assert.deepEqual(started.map(({ label }) => label), ["last"]);
    assert.ok(
      started[0]!.at >= before + DELAY,
      `started ${started[0]!.at - before} ms after its store`,
    );
  },
);

guardedTest(
  "kvBackend() keeps a request's other tasks out of its keyed task's lane: they run without waiting for it, and every task keeps its position in its id",
  async () => {
    const log = journal();
    const reindex = log.task("reindex", "queue");
    const ids: string[] = [];
    const other = defineTask(({ id }) => void ids.push(id), { name: "other" });
    const othersRan = Promise.withResolvers<void>();
    const last = defineTask(({ id }) => {
      ids.push(id);
      othersRan.resolve();
    }, { name: "last" });
    const keyedIds: string[] = [];
    await using db = await openBackend({
      tasks: [reindex, other, last],
      onTaskStart: ({ name, id }) => {
        if (name === "reindex") keyedIds.push(id!);
      },
    });
    const blocking = keyedHandler(reindex, db.backend);
    log.hold("first");
    await add(blocking, "u:first");
    await log.seen("start first");
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(other);
      tasks.addTask(reindex, "u", "second");
      tasks.addTask(other);
      tasks.addTask(last);
      return new Response("ok");
    }, { backend: db.backend });
    const { tasks } = await callHandler(handler, "/");
    await tasks;
    // The keyed task waits behind "first"; the others ran.
    await othersRan.promise;
    assert.deepEqual(log.events, ["start first"]);
    const chain = ids[0]!.slice(0, ids[0]!.lastIndexOf(":"));
    assert.deepEqual(ids, [`${chain}:0`, `${chain}:2`, `${chain}:3`]);
    log.release("first");
    await log.seen("end second");
    assert.equal(keyedIds[1], `${chain}:1`);
  },
);

guardedTest(
  "kvBackend() keeps a keyed task that failed with its key, and retry() puts it back in its lane, behind a duplicate running",
  async () => {
    const log = journal();
    let failures = 1;
    const reindex = defineTask(
      async (_context, _key: string, label: string) => {
        if (label === "flaky" && failures-- > 0) throw new Error("down");
        await log.run(label);
      },
      { name: "reindex", key: (key) => key },
    );
    const failed = Promise.withResolvers<string>();
    await using db = await openBackend({
      tasks: [reindex],
      onTaskError: (_error, info) => failed.resolve(info.id!),
    });
    const handler = keyedHandler(reindex, db.backend);
    await add(handler, "u:flaky");
    // Its failed task is written after onTaskError, with the step's
    // outcome (in the listener's write batch): under the step's chain, the
    // task's id.
    const written = [
      kvKeys(["background-tasks"]).failed(await failed.promise, 0),
    ];
    for await (const [entry] of db.kv.watch(written)) {
      if (entry?.value != null) break;
    }
    const [kept] = await db.backend.failed();
    assert.deepEqual(
      { name: kept?.name, key: kept?.key, args: kept?.args },
      { name: "reindex", key: "u", args: ["u", "flaky"] },
    );
    log.hold("running");
    await add(handler, "u:running");
    await log.seen("start running");
    assert.equal(await db.backend.retry(kept!.id), true);
    assert.equal(await db.backend.retry(kept!.id), false);
    await add(handler, "v:other");
    await log.seen("end other");
    assert.deepEqual(log.events, ["start running", "start other", "end other"]);
    log.release("running");
    await log.seen("end flaky");
    assert.deepEqual(log.events.slice(3), [
      "end running",
      "start flaky",
      "end flaky",
    ]);
    assert.deepEqual(await db.backend.failed(), []);
  },
);

guardedTest(
  "kvBackend() refuses at addTask() a keyed task that would not fit: its own message, its lane's key, or its request's one atomic operation",
  async (t) => {
    const key = "✓".repeat(256);
    const big = defineTask((_context, _key: string, _data: string) => {}, {
      name: "big",
      key: (key) => key,
    });
    const named = defineTask((_context, _key: string) => {}, {
      name: "n".repeat(2_100),
      key: (key) => key,
    });
    const many = defineTask((_context, _key: string) => {}, {
      name: "many",
      key: (key) => key,
    });
    await using kv = await openKv();
    const backend = kvBackend({ kv, tasks: [big, named, many], listen: false });
    await t.step("its own message, which holds its key and id", async () => {
      // The largest argument its chain's message holds, which its own
      // message, with the key and the id besides, does not.
      let low = 60_000;
      let high = 66_000;
      while (high - low > 1) {
        const middle = Math.floor((low + high) / 2);
        const error = await addTaskError(
          backend,
          (tasks) => tasks.addTask(big, key, "x".repeat(middle)),
        ) as Error | undefined;
        if (error?.message.includes("the chain would weigh")) high = middle;
        else low = middle;
      }
      const error = await addTaskError(
        backend,
        (tasks) => tasks.addTask(big, key, "x".repeat(low)),
      );
      assert.ok(error instanceof TypeError);
      assert.match(
        error.message,
        /^Cannot add task "big" as its message would weigh 6\d{4} bytes, more than the 65536 a Deno KV message may hold$/,
      );
    });
    await t.step("its lane's key", async () => {
      const error = await addTaskError(
        backend,
        (tasks) => tasks.addTask(named, "k"),
      );
      assert.ok(error instanceof TypeError);
      assert.match(
        error.message,
        /^Cannot add task "n+" as its lane's Deno KV key \(its prefix, name and key\) would weigh 21\d\d bytes, more than the 2048 Deno KV allows$/,
      );
    });
    await t.step("its request's 33rd", async () => {
      const errors: unknown[] = [];
      await addTaskError(backend, (tasks) => {
        for (let i = 0; i < 33; i++) {
          try {
            tasks.addTask(many, `k${i}`);
          } catch (error) {
            errors.push(error);
          }
        }
      });
      assert.equal(errors.length, 1);
      assert.ok(errors[0] instanceof TypeError);
      assert.equal(
        errors[0].message,
        `Cannot add task "many" as its request's keyed tasks would not fit in the one Deno KV atomic operation that stores them: at most 32 keyed tasks, of 327680 bytes in all`,
      );
    });
    await t.step("not a task the chain's own 64 KiB refused", async () => {
      const errors: unknown[] = [];
      await addTaskError(backend, (tasks) => {
        tasks.addTask(big, "a", "x".repeat(60_000));
        // Refused by the chain's message, then 31 more: 32 keyed tasks.
        assert.throws(
          () => tasks.addTask(big, "b", "x".repeat(10_000)),
          /the chain would weigh/,
        );
        for (let i = 0; i < 31; i++) {
          try {
            tasks.addTask(many, `k${i}`);
          } catch (error) {
            errors.push(error);
          }
        }
      });
      assert.deepEqual(errors, []);
    });
    await t.step("its request's keys, long ones before the 33rd", async () => {
      const errors: unknown[] = [];
      let added = 0;
      await addTaskError(backend, (tasks) => {
        for (let i = 0; i < 32; i++) {
          try {
            tasks.addTask(many, `${i}`.padStart(256, "✓"));
            added++;
          } catch (error) {
            errors.push(error);
          }
        }
      });
      // Each lane's key weighs about 800 bytes: 8 such keys a task, within
      // the 65536 bytes of keys an operation is given.
      assert.equal(added, 10);
      assert.ok(errors[0] instanceof TypeError);
      assert.match(
        errors[0].message,
        /^Cannot add task "many" as its request's keyed tasks would not fit in the one Deno KV atomic operation that stores them: their lanes' keys would weigh \d+ bytes \(8 keys a task, each about as long as its lane's, this one's \d+ bytes\), more than the 65536 allowed$/,
      );
    });
    await backend.close();
  },
);
