// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Handing a chain to a backend, when the runner's books move under it.

import assert from "node:assert/strict";
import {
  defineTask,
  type TaskBackend,
  type TaskEndEvent,
  withBackgroundTasks,
} from "../../mod.ts";
import { callHandler } from "../../testing.ts";
import { guardedTest } from "../_helpers/common.ts";

const job = defineTask(function job() {}, { name: "job" });

guardedTest(
  "a chain lost after its response is forgotten before its failures are reported, which may end drains",
  async () => {
    const stop = new AbortController();
    let calls = 0;
    const backend: TaskBackend = {
      accept() {},
      enqueue(_chain, options) {
        // The first chain cannot be stored; the second waits for its signal.
        if (++calls === 1) return Promise.reject(new Error("store down"));
        const signal = options!.signal!;
        return new Promise((_resolve, reject) =>
          signal.addEventListener("abort", () => reject(signal.reason))
        );
      },
    };
    const reported: string[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job);
      return new Response("ok");
    }, {
      backend,
      handOver: "after-response",
      onTaskError(error) {
        reported.push(String(error));
        // An operator's kill switch, say: the drain gives up on the rest.
        stop.abort(new Error("give up"));
      },
    });
    await callHandler(handler, "/1");
    await callHandler(handler, "/2");
    const result = await handler.drain({ signal: stop.signal });
    assert.deepEqual(reported, ["Error: store down"]);
    assert.equal(result.failed, 1);
    assert.equal(result.abandoned, 1);
    assert.equal(handler.stats.pending, 0);
  },
);

guardedTest(
  "a chain given up on inside enqueue() fails its response, whatever enqueue() then says",
  async () => {
    const late = new Error("late");
    const backend: TaskBackend = {
      accept() {},
      enqueue() {
        void handler.drain({ signal: AbortSignal.abort(late) });
        return Promise.resolve();
      },
    };
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job);
      return new Response("ok");
    }, { backend });
    await assert.rejects(callHandler(handler, "/"), {
      message:
        "Cannot respond as the backend could not store the request's tasks",
      cause: late,
    });
    assert.equal(handler.stats.abandoned, 1);
    assert.equal(handler.stats.handedOver, 0);
  },
);

guardedTest(
  "what a backend's store deduplicated is counted and told onTaskEnd: the chain's own tasks instead of handed over; the tasks they replaced told, not counted again",
  async () => {
    const reindex = defineTask((_context, _id: string) => {}, {
      name: "reindex",
      key: (id) => id,
      onDuplicate: "skip",
    });
    const entered = Promise.withResolvers<void>();
    const store = Promise.withResolvers<void>();
    const backend: TaskBackend = {
      accept() {},
      async enqueue() {
        entered.resolve();
        await store.promise;
        return {
          // An index twice, an unkeyed task's, one past the end: told once,
          // and only for the keyed task.
          deduplicated: [1, 1, 0, 7],
          replaced: [{
            name: "reindex",
            index: 3,
            attempt: 0,
            id: "earlier:3",
            request: { method: "POST", url: "http://localhost/earlier" },
            delivered: true,
          }],
        };
      },
    };
    const ends: TaskEndEvent[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(job);
      tasks.addTask(reindex, "u1");
      return new Response("ok");
    }, { backend, onTaskEnd: (event) => void ends.push(event) });
    const called = callHandler(handler, new Request("http://localhost/now"));
    await entered.promise;
    const drained = handler.drain();
    store.resolve();
    await called;
    const result = await drained;
    assert.deepEqual(
      ends.map(({ name, index, attempt, id, request, outcome, duration }) => ({
        name,
        index,
        attempt,
        id,
        url: request?.url,
        outcome,
        duration,
      })),
      [
        {
          name: "reindex",
          index: 1,
          attempt: 0,
          id: undefined,
          url: "http://localhost/now",
          outcome: "deduplicated",
          duration: 0,
        },
        {
          name: "reindex",
          index: 3,
          attempt: 0,
          id: "earlier:3",
          url: "http://localhost/earlier",
          outcome: "deduplicated",
          duration: 0,
        },
      ],
    );
    assert.equal(handler.stats.handedOver, 1);
    // The replaced task was counted as handed over where it was stored.
    assert.equal(handler.stats.deduplicated, 1);
    assert.equal(handler.stats.pending, 0);
    assert.equal(result.handedOver, 1);
  },
);
