// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One attempt as the hooks see it.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  defineTask,
  type DrainResult,
  TaskTimeoutError,
  withBackgroundTasks,
} from "../../mod.ts";
import { runAttempt } from "../../src/core/_attempt.ts";
import { executionConfig } from "../../src/core/_config.ts";
import { guardedTest, sentInfo } from "../_helpers/common.ts";

const request = () => new Request("http://localhost/orders?token=secret");

guardedTest(
  "onTaskStart and onTaskEnd see every attempt with its duration and outcome",
  async () => {
    const events: string[] = [];
    let duration = -1;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(function first() {});
      tasks.addTask(async function second() {
        await new Promise((resolve) => setTimeout(resolve, 15));
        throw new Error("second failed");
      });
      return new Response("ok");
    }, {
      onTaskStart: ({ name, attempt }) =>
        void events.push(`start ${name} ${attempt}`),
      onTaskEnd: (event) => {
        events.push(`end ${event.name} ${event.outcome}`);
        if (event.name === "second") duration = event.duration;
      },
      onTaskError: (_error, info) => void events.push(`error ${info.name}`),
    });
    handler(request(), sentInfo());
    await handler.drain();
    assert.deepEqual(events, [
      "start first 1",
      "end first succeeded",
      "start second 1",
      "end second failed",
      "error second",
    ]);
    assert.ok(duration >= 10, `duration ${duration}`);
  },
);

guardedTest(
  "hooks that throw or reject are reported and change nothing else",
  async () => {
    // The rejected onTaskEnd is reported once its rejection is handled.
    const reported = Promise.withResolvers<void>();
    let calls = 0;
    const consoleError = mock.method(console, "error", () => {
      if (++calls === 2) reported.resolve();
    });
    try {
      const log: string[] = [];
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(function work() {
          log.push("work");
        });
        return new Response("ok");
      }, {
        onTaskStart: () => {
          throw new Error("start hook");
        },
        onTaskEnd: () => Promise.reject(new Error("end hook")),
      });
      handler(request(), sentInfo());
      await handler.drain();
      await reported.promise;
      assert.deepEqual(log, ["work"]);
      assert.deepEqual(handler.stats.succeeded, 1);
      assert.deepEqual(
        consoleError.mock.calls.map((call) => call.arguments[0]),
        [
          `The 'onTaskStart' handler threw while reporting background task "work" at index 0 of GET /orders:`,
          `The 'onTaskEnd' handler threw while reporting background task "work" at index 0 of GET /orders:`,
        ],
      );
    } finally {
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "each attempt of a defined task has a signal of its own, which follows its chain only while it lasts",
  async () => {
    const stop = new AbortController();
    const fired: string[] = [];
    const signals: AbortSignal[] = [];
    const waiting = Promise.withResolvers<void>();
    const first = defineTask(function first({ signal }) {
      signals.push(signal);
      signal.addEventListener("abort", () => void fired.push("first"));
    });
    const second = defineTask(function second({ signal }) {
      signals.push(signal);
      signal.addEventListener("abort", () => void fired.push("second"));
      waiting.resolve();
      return new Promise<void>(() => {});
    });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(first);
      tasks.addTask(second);
      return new Response("ok");
    });
    handler(request(), sentInfo());
    const drained = handler.drain({ signal: stop.signal });
    await waiting.promise;
    const reason = new Error("deadline");
    stop.abort(reason);
    assert.equal((await drained).abandoned, 1);
    assert.notEqual(signals[0], signals[1]);
    assert.deepEqual(fired, ["second"]);
    assert.equal(signals[0]!.aborted, false);
    assert.equal(signals[1]!.reason, reason);
  },
);

guardedTest(
  "a defined task's signal aborts at its timeout with a TaskTimeoutError",
  async () => {
    let signal: AbortSignal | undefined;
    const slow = defineTask(({ signal: given }) => {
      signal = given;
      return new Promise<void>((resolve) =>
        given.addEventListener("abort", () => resolve())
      );
    }, { name: "slow", timeout: 1 });
    const outcomes: string[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(slow);
      return new Response("ok");
    }, {
      onTaskEnd: ({ outcome }) => void outcomes.push(outcome),
      onTaskError: () => {},
    });
    handler(request(), sentInfo());
    await handler.drain();
    assert.ok(signal!.reason instanceof TaskTimeoutError);
    assert.deepEqual(outcomes, ["timedOut"]);
  },
);

Deno.test("a worker's attempts leave no listener on the shutdown signal they share", async () => {
  const controller = new AbortController();
  const { signal } = controller;
  let listening = 0;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((...args: Parameters<typeof add>) => {
    listening++;
    add(...args);
  }) as typeof add;
  signal.removeEventListener = ((...args: Parameters<typeof remove>) => {
    listening--;
    remove(...args);
  }) as typeof remove;
  const config = executionConfig({ onTaskError: () => {} }, "Testing");
  const listens = defineTask(({ signal }) => {
    signal.addEventListener("abort", () => {});
  }, { name: "listens" });
  const waits = defineTask(async ({ signal }) => {
    signal.addEventListener("abort", () => {});
    await Promise.resolve();
  }, { name: "waits", timeout: 1_000 });
  for (const task of [listens, waits]) {
    for (let attempt = 1; attempt <= 10; attempt++) {
      await runAttempt(
        { fn: task.fn, args: [], defined: task },
        {
          name: task.name,
          index: 0,
          attempt,
          request: undefined,
          delivered: undefined,
        },
        { id: "chain:0", signal, timeout: task.timeout, maxAttempts: 1 },
        config,
      );
    }
  }
  await runAttempt(
    { fn: () => Promise.resolve(), args: [], defined: undefined },
    {
      name: "plain",
      index: 0,
      attempt: 1,
      request: undefined,
      delivered: undefined,
    },
    { id: "chain:0", signal, timeout: undefined, maxAttempts: 1 },
    config,
  );
  assert.equal(listening, 0);
});

guardedTest(
  "an attempt whose hook ends the drain before its retry's wait is told abandoned",
  async () => {
    const events: string[] = [];
    const flaky = defineTask(function flaky() {
      throw new Error("boom");
    }, { retry: { maxAttempts: 3, minDelay: 10 } });
    let ended: Promise<unknown> | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(flaky);
      return new Response("ok");
    }, {
      onTaskError: () => {},
      onTaskEnd: ({ attempt, outcome, willRetry }) => {
        events.push(`${attempt} ${outcome}${willRetry ? " will retry" : ""}`);
        ended ??= handler.drain({ signal: AbortSignal.abort() });
      },
    });
    handler(request(), sentInfo());
    await handler.drain();
    assert.equal((await ended as DrainResult).abandoned, 1);
    assert.deepEqual(events, ["1 failed will retry", "1 abandoned"]);
    assert.equal(handler.stats.abandoned, 1);
  },
);

guardedTest(
  "a defined task that ends its own chain's drain and returns at once is told abandoned, as counted",
  async () => {
    const events: string[] = [];
    let ended: Promise<DrainResult> | undefined;
    const selfish = defineTask(function selfish() {
      ended = handler.drain({ signal: AbortSignal.abort() });
      return 1;
    });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(selfish);
      tasks.addTask(function after() {
        events.push("after ran");
      });
      return new Response("ok");
    }, {
      onTaskEnd: ({ name, outcome }) => void events.push(`${name} ${outcome}`),
    });
    handler(request(), sentInfo());
    await handler.drain();
    assert.deepEqual((await ended!).abandonedTasks, { selfish: 1, after: 1 });
    assert.deepEqual(events, ["selfish abandoned"]);
    assert.equal(handler.stats.abandoned, 2);
  },
);
