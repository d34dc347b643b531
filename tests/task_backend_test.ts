// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import {
  type BackgroundTasks,
  defineTask,
  type HandedChain,
  type TaskBackend,
  withBackgroundTasks,
} from "../mod.ts";
import { callHandler } from "../testing.ts";
import { guardedTest } from "./_helpers.ts";

guardedTest(
  "a task added while a chain is being handed to a backend is handed over as a chain of its own",
  async () => {
    const step = defineTask((_context, _n: number) => {}, { name: "step" });
    const received: HandedChain[] = [];
    const handing = Promise.withResolvers<void>();
    const stored = Promise.withResolvers<void>();
    const backend: TaskBackend = {
      accept() {},
      enqueue(chain) {
        received.push(chain);
        handing.resolve();
        return stored.promise;
      },
    };
    let tasks: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, given) => {
      tasks = given;
      given.addTask(step, 1);
      return new Response("ok");
    }, { backend });
    const { tasks: settled } = await callHandler(handler, "/");
    await handing.promise;
    tasks!.addTask(step, 2);
    assert.equal(handler.pending, 2);
    stored.resolve();
    await settled;
    await handler.drain();
    assert.deepEqual(
      received.map((chain) => chain.tasks.map((task) => task.args)),
      [[[1]], [[2]]],
    );
    assert.deepEqual([handler.pending, handler.stats.enqueued], [0, 2]);
  },
);

guardedTest(
  "a chain abandoned while a backend stores it leaves exact counters",
  async () => {
    const job = defineTask(() => {}, { name: "job" });
    const never = Promise.withResolvers<void>();
    const handing = Promise.withResolvers<void>();
    const backend: TaskBackend = {
      accept() {},
      enqueue() {
        handing.resolve();
        return never.promise;
      },
    };
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job);
      tasks.addTask(job);
      return new Response("ok");
    }, { backend });
    await callHandler(handler, "/");
    await handing.promise;
    const stop = new AbortController();
    const drained = handler.drain({ signal: stop.signal });
    stop.abort();
    assert.deepEqual((await drained).abandonedTasks, { job: 2 });
    const { pending, queued, running, abandoned } = handler.stats;
    assert.deepEqual({ pending, queued, running, abandoned }, {
      pending: 0,
      queued: 0,
      running: 0,
      abandoned: 2,
    });
    never.resolve();
  },
);
