// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Giving up on chains at a deadline: giveUpLive() for the chains a drain
// waits for, giveUpOpen() for those whose handler still runs at a shutdown.
// The books (states, counts, drains, lists, slots: the runner's `close`)
// are done for every chain first; only then are signals aborted, since
// abort listeners are user code that may end other drains. Then the same
// through drain(), ended from inside a task, a hook or an abort listener.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { defineTask, withBackgroundTasks } from "../../mod.ts";
import { Chain, type ChainState } from "../../src/core/_chain.ts";
import { taskOf } from "../../src/core/_task.ts";
import { ChainList } from "../../src/core/_chain_list.ts";
import { Drains } from "../../src/core/_drain.ts";
import { giveUpLive, giveUpOpen } from "../../src/core/_give_up.ts";
import { Tally } from "../../src/core/_tally.ts";
import { guardedTest, sentInfo } from "../_helpers/common.ts";

/** A chain of tasks named `names`, moved along `path`, numbered `sequence`. */
function chainOf(
  names: string[],
  path: ChainState[],
  sequence = 0,
): Chain {
  const chain = new Chain();
  for (const name of names) {
    chain.add(
      taskOf(Object.defineProperty(() => {}, "name", { value: name }), []),
    );
  }
  for (const state of path) chain.moveTo(state);
  chain.sequence = sequence;
  chain.url = "http://localhost/orders?token=secret";
  chain.method = "POST";
  return chain;
}

/**
 * The runner's books over `chains`, all pending, those running counted, and
 * `close`, which abandons a chain as the runner's own does: its state, the
 * counts, the drains, its list, and the slots it held (counted in `slots`).
 */
function booksOf(chains: Chain[], drains = new Drains()) {
  const list = new ChainList();
  const tally = new Tally();
  for (const chain of chains) {
    list.push(chain);
    for (let task = 0; task < chain.remaining; task++) tally.added();
    if (chain.state === "running" || chain.state === "storing") {
      tally.started(chain.state, chain.remaining);
    }
  }
  const books = {
    list,
    tally,
    slots: 0,
    close(chain: Chain): void {
      const from = chain.state;
      const n = chain.remaining;
      chain.moveTo("abandoned");
      tally.closed(from, "abandoned", n);
      list.remove(chain);
      if (from === "open") return;
      drains.abandoned(chain.sequence, chain.unfinished(), from === "storing");
      drains.ended(chain.sequence);
      if (from === "running" || from === "storing") books.slots++;
    },
  };
  return books;
}

function members(list: ChainList): Chain[] {
  const chains: Chain[] = [];
  for (let chain = list.first; chain !== undefined; chain = chain.next) {
    chains.push(chain);
  }
  return chains;
}

const noDeadline = () => assert.fail("no deadline in this test");

guardedTest(
  "giveUpLive() abandons the live chains up to `last`, counts them, and frees the slots they held",
  async () => {
    const running = chainOf(["a1", "a2"], ["waiting", "queued", "running"], 1);
    const queued = chainOf(["b"], ["waiting", "queued"], 2);
    const storing = chainOf(["c"], ["waiting", "queued", "storing"], 3);
    const waiting = chainOf(["d"], ["waiting"], 4);
    const later = chainOf(["e"], ["waiting", "queued", "running"], 5);
    const drains = new Drains();
    const books = booksOf([running, queued, storing, waiting, later], drains);
    const { list, tally } = books;
    const drained = drains.begin(4, 4, {}, noDeadline);
    const reason = new Error("deadline");

    giveUpLive(list, 4, reason, books.close);
    assert.equal(books.slots, 2);

    assert.deepEqual(
      [running, queued, storing, waiting].map((chain) => chain.state),
      ["abandoned", "abandoned", "abandoned", "abandoned"],
    );
    assert.equal(later.state, "running");
    assert.deepEqual(members(list), [later]);
    const { pending, running: stillRunning, abandoned, storing: stillStoring } =
      tally.snapshot();
    assert.deepEqual({ pending, stillRunning, abandoned, stillStoring }, {
      pending: 1,
      stillRunning: 1,
      abandoned: 5,
      stillStoring: 0,
    });
    assert.deepEqual(await drained, {
      succeeded: 0,
      failed: 0,
      handedOver: 0,
      abandoned: 5,
      abandonedTasks: { a1: 1, a2: 1, b: 1, c: 1, d: 1 },
      unstored: 1,
    });
    // Those that may be in an attempt are told to stop; the others never
    // made a signal, and will not.
    assert.equal(running.signal.reason, reason);
    assert.equal(storing.signal.reason, reason);
    assert.deepEqual([queued.controller, waiting.controller], [
      undefined,
      undefined,
    ]);
    assert.equal(later.controller, undefined);
  },
);

Deno.test("giveUpLive() does the books of every chain before it aborts a signal", () => {
  const first = chainOf(["a"], ["waiting", "queued", "running"], 1);
  const second = chainOf(["b"], ["waiting", "queued", "running"], 2);
  const { list, tally, close } = booksOf([first, second]);
  const seen: unknown[] = [];
  // An abort listener is user code: it sees the books done.
  first.signal.addEventListener("abort", () => {
    const { pending, running } = tally.snapshot();
    seen.push(second.state, list.size, pending, running);
  });
  giveUpLive(list, 2, new Error("deadline"), close);
  assert.deepEqual(seen, ["abandoned", 0, 0, 0]);
});

Deno.test("giveUpLive() reports an abort listener that throws, naming its task, and aborts the next chain", () => {
  const consoleError = mock.method(console, "error", () => {});
  try {
    const first = chainOf(["x", "charge"], ["waiting", "queued", "running"], 1);
    first.advance();
    const second = chainOf(["b"], ["waiting", "queued", "running"], 2);
    const { list, close } = booksOf([first, second]);
    const failure = new Error("listener failed");
    first.signal.addEventListener("abort", () => {
      throw failure;
    });
    giveUpLive(list, 2, new Error("deadline"), close);
    assert.equal(second.signal.aborted, true);
    assert.deepEqual(
      consoleError.mock.calls.map((call) => call.arguments),
      [[
        `An abort listener of background task "charge" at index 1 of POST /orders threw:`,
        failure,
      ]],
    );
  } finally {
    consoleError.mock.restore();
  }
});

Deno.test("giveUpOpen() abandons every chain whose handler still runs, adding its tasks to the drain's result", () => {
  const open = [chainOf(["a", "b"], []), chainOf(["a"], [])];
  const { list, tally, close } = booksOf(open);
  const drained = {
    succeeded: 2,
    failed: 1,
    handedOver: 0,
    abandoned: 1,
    abandonedTasks: { a: 1 },
    unstored: 0,
  };
  assert.deepEqual(giveUpOpen(list, drained, close), {
    succeeded: 2,
    failed: 1,
    handedOver: 0,
    abandoned: 4,
    abandonedTasks: { a: 3, b: 1 },
    unstored: 0,
  });
  // The drain's own result is left as it was.
  assert.deepEqual(drained.abandonedTasks, { a: 1 });
  assert.deepEqual(open.map((chain) => chain.state), [
    "abandoned",
    "abandoned",
  ]);
  assert.deepEqual([list.size, list.first, list.last], [
    0,
    undefined,
    undefined,
  ]);
  assert.deepEqual([tally.pending, tally.snapshot().abandoned], [0, 3]);
});

guardedTest(
  "a drain ended from inside a task, a hook or an abort listener abandons each task once",
  async (t) => {
    await t.step(
      "by a synchronous task: the rest of its chain does not run",
      async () => {
        const ran: string[] = [];
        const stop = new AbortController();
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(function first() {
            ran.push("first");
            stop.abort();
          });
          tasks.addTask(function second() {
            ran.push("second");
          });
          return new Response("ok");
        });
        await (await handler(new Request("http://localhost/"), sentInfo()))
          .body?.cancel();
        const result = await handler.drain({ signal: stop.signal });
        assert.deepEqual(ran, ["first"]);
        assert.deepEqual(result.abandonedTasks, { first: 1, second: 1 });
        const { pending, running, abandoned } = handler.stats;
        assert.deepEqual({ pending, running, abandoned }, {
          pending: 0,
          running: 0,
          abandoned: 2,
        });
      },
    );

    await t.step(
      "by onTaskStart: the task does not run, and its end is told",
      async () => {
        const events: string[] = [];
        const stop = new AbortController();
        const charge = defineTask(() => void events.push("ran"), {
          name: "charge",
        });
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(charge);
          return new Response("ok");
        }, {
          onTaskStart: () => stop.abort(),
          onTaskEnd: ({ outcome }) => void events.push(outcome),
        });
        await (await handler(new Request("http://localhost/"), sentInfo()))
          .body?.cancel();
        const result = await handler.drain({ signal: stop.signal });
        assert.deepEqual(events, ["abandoned"]);
        assert.equal(result.abandoned, 1);
        assert.deepEqual([handler.stats.pending, handler.stats.running], [
          0,
          0,
        ]);
      },
    );

    await t.step(
      "by an abort listener, for another drain: counted once",
      async () => {
        const inner = new AbortController();
        const started = [
          Promise.withResolvers<void>(),
          Promise.withResolvers<void>(),
        ];
        const hang = defineTask(
          ({ signal }) =>
            new Promise<void>((resolve) => {
              started[0]!.resolve();
              signal.addEventListener("abort", () => {
                inner.abort();
                resolve();
              });
            }),
          { name: "hang" },
        );
        const stuck = Promise.withResolvers<void>();
        const other = defineTask(() => {
          started[1]!.resolve();
          return stuck.promise;
        }, { name: "other" });
        let requests = 0;
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(requests++ === 0 ? hang : other);
          return new Response("ok");
        });
        for (let i = 0; i < 2; i++) {
          await (await handler(new Request("http://localhost/"), sentInfo()))
            .body?.cancel();
        }
        const innerDrain = handler.drain({ signal: inner.signal });
        const outer = new AbortController();
        const outerDrain = handler.drain({ signal: outer.signal });
        await Promise.all(started.map((each) => each.promise));
        outer.abort();
        assert.equal((await outerDrain).abandoned, 2);
        assert.equal((await innerDrain).abandoned, 2);
        stuck.resolve();
        const { pending, running, abandoned } = handler.stats;
        assert.deepEqual({ pending, running, abandoned }, {
          pending: 0,
          running: 0,
          abandoned: 2,
        });
      },
    );
  },
);
