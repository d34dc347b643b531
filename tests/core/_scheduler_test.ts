// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// When chains start: one shared timer per turn, then at most `concurrency`
// at once, the rest in order of arrival.

import assert from "node:assert/strict";
import { withBackgroundTasks } from "../../mod.ts";
import { fakeServeHandlerInfo } from "../../testing.ts";
import { Chain } from "../../src/core/_chain.ts";
import { Scheduler } from "../../src/core/_scheduler.ts";
import { guardedTest, microtasks, sentInfo } from "../_helpers/common.ts";

const request = () => new Request("http://localhost/orders?token=secret");

guardedTest(
  "withBackgroundTasks() shares one timer among the chains that become ready in the same turn",
  async () => {
    // setTimeout is an accessor on Deno's globalThis, which mock.method()
    // cannot spy on: a counting wrapper takes its place for the test.
    const realSetTimeout = globalThis.setTimeout;
    let timers = 0;
    globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
      timers++;
      return realSetTimeout(...args);
    }) as typeof setTimeout;
    try {
      let ran = 0;
      const connection = fakeServeHandlerInfo();
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(() => ran++);
        return new Response("ok");
      });
      for (let i = 0; i < 50; i++) {
        handler(request(), connection);
      }
      connection.complete();
      await microtasks();
      assert.equal(timers, 1);
      await handler.drain();
      assert.equal(ran, 50);

      // A later turn gets a timer of its own.
      handler(request(), sentInfo());
      await microtasks();
      assert.equal(timers, 2);
      await handler.drain();
      assert.equal(ran, 51);
    } finally {
      globalThis.setTimeout = realSetTimeout;
    }
  },
);

guardedTest(
  "concurrency runs at most that many chains at once, the others in arrival order",
  async () => {
    const ids = [0, 1, 2, 3, 4];
    const begun = ids.map(() => Promise.withResolvers<void>());
    const gates = ids.map(() => Promise.withResolvers<void>());
    const started: number[] = [];
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const id = Number(new URL(request.url).searchParams.get("id"));
      tasks.addTask(async () => {
        started.push(id);
        begun[id]!.resolve();
        await gates[id]!.promise;
      });
      tasks.addTask(() => {});
      return new Response("ok");
    }, { concurrency: 2 });

    for (const id of ids) {
      handler(
        new Request(`http://localhost/?id=${id}`),
        sentInfo(),
      );
    }
    // All five become ready on the same timer, which starts two and queues
    // three: once both have begun, the rest are known to wait.
    await Promise.all([begun[0]!.promise, begun[1]!.promise]);
    assert.deepEqual(started, [0, 1]);
    assert.deepEqual(
      [handler.stats.running, handler.stats.queued, handler.stats.pending],
      [2, 8, 10],
    );

    gates[1]!.resolve();
    await begun[2]!.promise;
    assert.deepEqual(started, [0, 1, 2]);
    gates[0]!.resolve();
    await begun[3]!.promise;
    assert.deepEqual(started, [0, 1, 2, 3]);
    for (const gate of gates) gate.resolve();
    await handler.drain();
    assert.deepEqual(started, [0, 1, 2, 3, 4]);
    assert.equal(handler.stats.succeeded, 10);
  },
);

guardedTest(
  "concurrency keeps arrival order across batches and thousands of queued chains",
  async () => {
    const order: number[] = [];
    const gate = Promise.withResolvers<void>();
    const first = Promise.withResolvers<void>();
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const id = Number(new URL(request.url).searchParams.get("id"));
      tasks.addTask(() => {
        if (id !== 0) return order.push(id);
        first.resolve();
        return gate.promise;
      });
      return new Response("ok");
    }, { concurrency: 1 });
    const send = (id: number) =>
      handler(
        new Request(`http://localhost/?id=${id}`),
        sentInfo(),
      );
    for (let id = 0; id < 1_500; id++) send(id);
    // The first batch is past its timer: one holds the slot, the rest wait.
    await first.promise;
    assert.deepEqual([handler.stats.running, handler.stats.queued], [1, 1_499]);
    // A second batch arrives while the first still waits for the slot.
    for (let id = 1_500; id < 3_000; id++) send(id);
    gate.resolve();
    await handler.drain();
    assert.deepEqual(order, Array.from({ length: 2_999 }, (_, i) => i + 1));
  },
);

guardedTest(
  "Scheduler.holding() gives the slots freed inside it to queued chains only once it returns",
  async () => {
    const started: string[] = [];
    const first = Promise.withResolvers<void>();
    const scheduler = new Scheduler(1, (chain) => {
      started.push(chain.url!);
      first.resolve();
    });
    const chains = ["first", "second"].map((url) => {
      const chain = new Chain();
      chain.url = url;
      chain.moveTo("waiting");
      return chain;
    });
    for (const chain of chains) scheduler.ready(chain);
    await first.promise;
    // One slot: the first holds it, the second waits for it.
    assert.deepEqual(started, ["first"]);
    scheduler.holding(() => {
      scheduler.freed();
      assert.deepEqual(started, ["first"], "started inside holding()");
    });
    assert.deepEqual(started, ["first", "second"]);
  },
);
