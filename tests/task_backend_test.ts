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
