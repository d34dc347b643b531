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
  "a chain being handed to a backend refuses further tasks instead of losing them",
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
    assert.throws(() => tasks!.addTask(step, 2), {
      name: "Error",
      message:
        "Cannot add task as the request's tasks have been handed to the backend",
    });
    stored.resolve();
    await settled;
    assert.deepEqual(received.map((chain) => chain.tasks.length), [1]);
    assert.deepEqual([handler.pending, handler.stats.enqueued], [0, 1]);
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
