// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The runner of one wrapped handler, driven directly: what accept() admits
// and refuses under maxPending and with a backend, the chains it follows
// from their handler (open, returned, discarded, stored) to their end, the
// slots a chain handed to a backend frees however its store ends, and the
// open chains a shutdown deadline gives up on.

import assert from "node:assert/strict";
import {
  type BackgroundTasks,
  defineTask,
  QueueFullError,
  type TaskBackend,
  type TaskInfo,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../../mod.ts";
import type { BackendChain, BackendTask } from "../../backend.ts";
import type { Chain } from "../../src/core/_chain.ts";
import { runnerConfig } from "../../src/core/_config.ts";
import { Runner } from "../../src/core/_runner.ts";
import { guardedTest, microtasks, sentInfo } from "../_helpers/common.ts";

const request = () => new Request("http://localhost/orders?token=secret");

/** A runner made as withBackgroundTasks() makes one. */
function runnerWith(options: WithBackgroundTasksOptions = {}): Runner {
  return new Runner(runnerConfig(options, "Cannot test runner"));
}

/** A request's tasks and chain, as the wrapper opens them. */
function open(
  runner: Runner,
): { tasks: BackgroundTasks; chain: Chain; request: Request } {
  const made = request();
  const chain = runner.open(made);
  return {
    tasks: chain.facade as unknown as BackgroundTasks,
    chain,
    request: made,
  };
}

/** A backend whose stores the test settles, in the order they came. */
function gatedBackend() {
  const accepted: [BackendTask, unknown][] = [];
  const stores: {
    chain: BackendChain;
    settle: PromiseWithResolvers<void>;
  }[] = [];
  let onStore = () => {};
  const backend: TaskBackend = {
    accept: (task, chain) => void accepted.push([task, chain]),
    enqueue(chain) {
      const settle = Promise.withResolvers<void>();
      stores.push({ chain, settle });
      onStore();
      return settle.promise;
    },
  };
  return {
    backend,
    accepted,
    stores,
    /** Resolves once `count` stores have begun. */
    stored(count: number): Promise<void> {
      if (stores.length >= count) return Promise.resolve();
      return new Promise((resolve) => {
        onStore = () => {
          if (stores.length >= count) resolve();
        };
      });
    },
  };
}

const job = defineTask((_context, _n: number) => {}, { name: "job" });

guardedTest(
  "Runner.accept() refuses a task past maxPending with a QueueFullError while the handler runs",
  async () => {
    const runner = runnerWith({ maxPending: 2 });
    const { tasks, chain } = open(runner);
    tasks.addTask(function first() {});
    // waitUntil() adds no work, only a wait: it is never refused.
    tasks.waitUntil(Promise.resolve());
    assert.equal(runner.stats.pending, 2);
    assert.throws(() => tasks.addTask(function second() {}), (error) => {
      assert.ok(error instanceof QueueFullError);
      assert.equal(
        error.message,
        `Cannot add task "second" as 2 tasks are already pending, the 'maxPending' limit`,
      );
      return true;
    });
    tasks.waitUntil(Promise.resolve());
    assert.deepEqual(
      [chain.added, runner.stats.pending, runner.stats.refused],
      [
        3,
        3,
        1,
      ],
    );
    runner.discard(chain);
    await runner.drain();
    assert.deepEqual([runner.stats.pending, runner.stats.discarded], [0, 3]);
  },
);

guardedTest(
  "withBackgroundTasks() reports a late task that maxPending refuses, instead of throwing where nobody catches",
  async () => {
    const reported: [string, string, number][] = [];
    let captured: BackgroundTasks | undefined;
    const hold = Promise.withResolvers<void>();
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      captured = tasks;
      tasks.addTask(() => hold.promise);
      return new Response("ok");
    }, {
      maxPending: 1,
      onTaskError: (error, info) =>
        void reported.push([(error as Error).name, info.name, info.index]),
    });
    await (await handler(request(), sentInfo())).text();
    // From a timer the handler left behind: no throw, a report.
    captured!.addTask(function late() {});
    // waitUntil() adds no work, only a wait: it is never refused.
    captured!.waitUntil(Promise.resolve());
    assert.deepEqual(reported, [["QueueFullError", "late", 1]]);
    assert.deepEqual([handler.stats.refused, handler.stats.pending], [1, 2]);
    hold.resolve();
    await handler.drain();
    assert.equal(handler.stats.pending, 0);
  },
);

guardedTest(
  "Runner.accept() with a backend tells it of each task, and refuses what it could not store",
  () => {
    const { backend, accepted } = gatedBackend();
    const runner = runnerWith({ backend });
    const { tasks, chain } = open(runner);
    // The request is read at once: the backend weighs it with each task.
    assert.deepEqual(chain.request, {
      method: "GET",
      url: "http://localhost/orders?token=secret",
    });
    tasks.addTask(job, 7);
    assert.deepEqual(accepted, [[{
      name: "job",
      args: [7],
      timeout: undefined,
      retry: undefined,
      task: job,
    }, chain]]);
    assert.throws(() => tasks.addTask(function sendEmail() {}), {
      name: "TypeError",
      message:
        `Cannot add task "sendEmail" as the handler's backend runs only tasks made by defineTask: make it one and list it in the backend's 'tasks', or add it to tasks.inProcess to run it in this process`,
    });
    assert.deepEqual([accepted.length, runner.stats.pending], [1, 1]);
    runner.discard(chain);
    assert.equal(runner.stats.discarded, 1);

    // Without a backend, only a chain with tasks reads its request, later.
    const { chain: plain } = open(runnerWith());
    assert.equal(plain.request, undefined);
  },
);

guardedTest(
  "Runner.discard() drops a failed handler's tasks once, even after a deadline gave up on them",
  async () => {
    const runner = runnerWith();
    const failed = open(runner);
    failed.tasks.addTask(function one() {});
    failed.tasks.addTask(function two() {});
    runner.discard(failed.chain);
    assert.equal(failed.chain.state, "discarded");

    // Given up on at a shutdown deadline while its handler ran, then failed.
    const late = open(runner);
    late.tasks.addTask(function three() {});
    const result = await runner.drain({
      open: true,
      signal: AbortSignal.abort(),
    });
    // The discarded chain had left the open list: only the other is given up.
    assert.deepEqual(result.abandonedTasks, { three: 1 });
    runner.discard(late.chain);
    assert.equal(late.chain.state, "abandoned");
    const { pending, discarded, abandoned } = runner.stats;
    assert.deepEqual({ pending, discarded, abandoned }, {
      pending: 0,
      discarded: 2,
      abandoned: 1,
    });
  },
);

guardedTest(
  "Runner.drain({ open }) leaves the chains whose handler runs alone unless its deadline comes",
  async () => {
    const runner = runnerWith();
    const { tasks, chain } = open(runner);
    tasks.addTask(function pending() {});
    assert.deepEqual((await runner.drain({ open: true })).abandoned, 0);
    assert.equal(chain.state, "open");
    const stop = new AbortController();
    const draining = runner.drain({ open: true, signal: stop.signal });
    stop.abort();
    assert.deepEqual((await draining).abandonedTasks, { pending: 1 });
    assert.equal(chain.state, "abandoned");
    assert.equal(runner.stats.pending, 0);
  },
);

guardedTest(
  "Runner.schedule() keeps a chain without tasks until one is added, which reports with the request",
  async () => {
    const reported: TaskInfo[] = [];
    const runner = runnerWith({
      onTaskError: (_error, info) => void reported.push(info),
    });
    const { tasks, chain, request } = open(runner);
    runner.schedule(chain, request, sentInfo());
    assert.equal(chain.state, "returned");
    assert.equal(runner.stats.pending, 0);
    // From a timer the handler left behind, say.
    tasks.addTask(function late() {
      throw new Error("late failed");
    });
    assert.equal(chain.state, "waiting");
    const result = await runner.drain();
    assert.deepEqual([result.failed, chain.state], [1, "finished"]);
    assert.deepEqual(
      reported.map(({ name, index, request }) => ({
        name,
        index,
        request,
      })),
      [{
        name: "late",
        index: 0,
        request: { method: "GET", url: "http://localhost/orders?token=secret" },
      }],
    );
  },
);

guardedTest(
  "Runner.successor() continues a request whose chain has ended, its tasks numbered after the earlier ones",
  async () => {
    const runner = runnerWith();
    const { tasks, chain, request } = open(runner);
    tasks.addTask(function one() {});
    tasks.addTask(function two() {});
    runner.schedule(chain, request, sentInfo());
    await runner.drain();
    assert.deepEqual([chain.state, chain.delivered], ["finished", true]);
    const next = runner.successor(chain);
    assert.equal(next.owner, runner);
    assert.equal(next.facade, tasks);
    assert.deepEqual(
      [next.state, next.added, next.position, next.remaining],
      ["returned", 2, 2, 0],
    );
    assert.deepEqual([next.request, next.delivered], [chain.request, true]);
  },
);

guardedTest(
  "Runner.store() refuses a chain given up on while its handler ran, without storing it",
  async () => {
    const { backend, stores } = gatedBackend();
    const runner = runnerWith({ backend });
    const { tasks, chain, request } = open(runner);
    tasks.addTask(job, 1);
    await runner.drain({ open: true, signal: AbortSignal.abort() });
    await assert.rejects(runner.store(chain, request), (error) => {
      assert.ok(error instanceof DOMException);
      assert.equal(error.name, "AbortError");
      assert.equal(
        error.message,
        "Background task abandoned at a shutdown deadline",
      );
      return true;
    });
    assert.deepEqual([stores.length, runner.stats.abandoned], [0, 1]);
  },
);

guardedTest(
  "Runner frees the slot of a chain handed to a backend once it is stored, or lost, and the next one starts",
  async () => {
    const gated = gatedBackend();
    const reported: unknown[] = [];
    const runner = runnerWith({
      backend: gated.backend,
      handOver: "after-response",
      concurrency: 1,
      onTaskError: (error) => void reported.push(error),
    });
    for (let n = 0; n < 3; n++) {
      const { tasks, chain, request } = open(runner);
      tasks.addTask(job, n);
      runner.schedule(chain, request, sentInfo());
    }
    await gated.stored(1);
    // One slot: the others wait for it.
    assert.equal(gated.stores.length, 1);
    // A slot freed goes to the next chain at once.
    gated.stores[0]!.settle.resolve();
    await microtasks();
    assert.equal(gated.stores.length, 2);
    const lost = new Error("store down");
    gated.stores[1]!.settle.reject(lost);
    await microtasks();
    assert.equal(gated.stores.length, 3);
    gated.stores[2]!.settle.resolve();
    await runner.drain();
    assert.deepEqual(
      gated.stores.map(({ chain }) => chain.tasks[0]!.args),
      [[0], [1], [2]],
    );
    assert.deepEqual(reported, [lost]);
    const { pending, handedOver, failed } = runner.stats;
    assert.deepEqual({ pending, handedOver, failed }, {
      pending: 0,
      handedOver: 2,
      failed: 1,
    });
  },
);

guardedTest(
  "a keyed task added once its request's chain has ended runs in its lane, and leaves the open list as it was: a shutdown deadline still gives up on the handlers running",
  async () => {
    const runner = runnerWith();
    const ran: string[] = [];
    const reindex = defineTask(
      (_context, user: string) => void ran.push(user),
      {
        name: "reindex",
        key: (user) => user,
      },
    );
    // A request whose chain has run and ended.
    const done = open(runner);
    done.tasks.addTask(function first() {});
    runner.schedule(done.chain, done.request, sentInfo());
    await runner.drain();
    assert.equal(done.chain.state, "finished");
    // Two handlers still running, with tasks.
    const running = [open(runner), open(runner)];
    running[0]!.tasks.addTask(function second() {});
    running[1]!.tasks.addTask(function third() {});
    // A late keyed task: a successor of the ended chain, and a lane.
    done.tasks.addTask(reindex, "u42");
    await runner.drain();
    assert.deepEqual(ran, ["u42"]);
    const result = await runner.drain({
      open: true,
      signal: AbortSignal.abort(),
    });
    assert.deepEqual(result.abandonedTasks, { second: 1, third: 1 });
    assert.deepEqual(
      [runner.stats.abandoned, runner.stats.pending],
      [2, 0],
    );
  },
);
