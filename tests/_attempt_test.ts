// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One attempt as the hooks see it.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { withBackgroundTasks } from "../mod.ts";
import { guardedTest, sentInfo } from "./_helpers.ts";

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
