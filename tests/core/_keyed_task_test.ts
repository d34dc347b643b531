// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A keyed task's key, worked out at addTask() from its own arguments: a key
// function that throws or returns anything but a short non-empty string is
// refused there (a TypeError naming `key`), reported through onTaskError
// past the handler; a backend receives the key with the task's modes.

import assert from "node:assert/strict";
import {
  BackgroundTasks,
  defineTask,
  type TaskBackend,
  type TaskInfo,
  withBackgroundTasks,
} from "../../mod.ts";
import type { BackendChain, BackendTask } from "../../backend.ts";
import { callHandler } from "../../testing.ts";
import { guardedTest } from "../_helpers/common.ts";

/** What addTask() threw for `key(arg)` inside a handler, and the handler's stats. */
async function refusal(
  key: (arg: unknown) => unknown,
  arg: unknown = "u42",
): Promise<{ thrown: unknown; pending: number; ran: number }> {
  let ran = 0;
  const task = defineTask((_context, _arg: unknown) => void ran++, {
    name: "reindex",
    key: key as (arg: unknown) => string,
  });
  let thrown: unknown;
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    try {
      tasks.addTask(task, arg);
    } catch (error) {
      thrown = error;
    }
    return new Response("ok");
  });
  await (await callHandler(handler, "/")).tasks;
  return { thrown, pending: handler.stats.pending, ran };
}

Deno.test("addTask() refuses a key that is not a non-empty string of at most 256 characters with a TypeError that names key", async (t) => {
  const table: [string, (arg: unknown) => unknown, string][] = [
    ["a number", () => 42, "current value is 42"],
    ["undefined", () => undefined, "current value is undefined"],
    ["an empty string", () => "", 'current value is ""'],
    ["an object", () => ({ id: 1 }), "current value is an object"],
    [
      "a string of 257 characters",
      () => "k".repeat(257),
      "current value is a string of 257 characters",
    ],
  ];
  for (const [name, key, value] of table) {
    await t.step(name, async () => {
      const { thrown, pending, ran } = await refusal(key);
      assert.ok(thrown instanceof TypeError);
      assert.equal(
        thrown.message,
        `Cannot add task "reindex" as its 'key' must return a non-empty string of at most 256 characters: ${value}`,
      );
      assert.deepEqual([pending, ran], [0, 0]);
    });
  }
});

Deno.test("addTask() refuses a key function that throws, with its error as the cause", async () => {
  const cause = new Error("no user in the arguments");
  const { thrown, ran } = await refusal(() => {
    throw cause;
  });
  assert.ok(thrown instanceof TypeError);
  assert.equal(
    thrown.message,
    `Cannot add task "reindex" as its 'key' threw: no user in the arguments`,
  );
  assert.equal(thrown.cause, cause);
  assert.equal(ran, 0);
});

Deno.test("addTask() calls the key function with the task's own arguments, and takes a key of 256 characters", async () => {
  const seen: unknown[][] = [];
  const task = defineTask((_context, _a: string, _b: number) => {}, {
    name: "pair",
    key: (...args) => {
      seen.push(args);
      return "k".repeat(256);
    },
  });
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(task, "a", 1);
    return new Response("ok");
  });
  await (await callHandler(handler, "/")).tasks;
  assert.deepEqual(seen, [["a", 1]]);
  assert.deepEqual([handler.stats.succeeded, handler.stats.pending], [1, 0]);
});

guardedTest(
  "a key refused past the handler is reported through onTaskError",
  async () => {
    const task = defineTask((_context, _n: number) => {}, {
      name: "late",
      key: (n) => (n > 0 ? String(n) : "") as string,
    });
    const reported: [unknown, TaskInfo][] = [];
    const late = Promise.withResolvers<void>();
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      setTimeout(() => {
        tasks.addTask(task, 0);
        late.resolve();
      }, 0);
      return new Response("ok");
    }, { onTaskError: (error, info) => void reported.push([error, info]) });
    await (await callHandler(handler, "/")).tasks;
    await late.promise;
    assert.equal(reported.length, 1);
    const [[error, info]] = reported as [[unknown, TaskInfo]];
    assert.ok(error instanceof TypeError);
    assert.match(error.message, /^Cannot add task "late" as its 'key' must/);
    assert.deepEqual([info.name, info.attempt], ["late", 0]);
    assert.equal(handler.stats.pending, 0);
  },
);

Deno.test("new BackgroundTasks() refuses a keyed task: its lanes are a handler's runner's", () => {
  const task = defineTask((_context, _id: string) => {}, {
    name: "reindex",
    key: (id) => id,
  });
  const tasks = new BackgroundTasks();
  assert.throws(() => tasks.addTask(task, "u42"), {
    name: "TypeError",
    message:
      `Cannot add task "reindex" as a keyed task needs a handler's runner, which keeps the lanes of its keys (withBackgroundTasks(), serve(), the Hono middleware; callHandler() in a test): new BackgroundTasks() has none`,
  });
  assert.equal(tasks.size, 0);
});

guardedTest(
  "a backend receives a keyed task's key, onDuplicate and delay, and undefined for a task without key",
  async () => {
    const reindex = defineTask((_context, _id: string) => {}, {
      name: "reindex",
      key: (id) => `user:${id}`,
      onDuplicate: "replace",
      delay: 2_000,
    });
    const ping = defineTask(() => {}, { name: "ping" });
    const accepted: BackendTask[] = [];
    const stored: BackendChain[] = [];
    const backend: TaskBackend = {
      accept: (task) => void accepted.push(task),
      enqueue: (chain) => {
        stored.push(chain);
        return Promise.resolve();
      },
    };
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(reindex, "u42");
      tasks.addTask(ping);
      return new Response("ok");
    }, { backend });
    await (await callHandler(handler, "/")).tasks;
    const modes = (task: BackendTask) => [
      task.name,
      task.key,
      task.onDuplicate,
      task.delay,
    ];
    const expected = [
      ["reindex", "user:u42", "replace", 2_000],
      ["ping", undefined, undefined, undefined],
    ];
    assert.deepEqual(accepted.map(modes), expected);
    assert.deepEqual(stored[0]?.tasks.map(modes), expected);
  },
);
