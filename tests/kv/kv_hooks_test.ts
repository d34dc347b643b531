// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The hooks of a handler whose backend runs its tasks in this process (the
// Deno KV listener): told of every attempt, with the backend's own, and a
// failure reported once unless both were given a reporter.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  defineTask,
  serve,
  type TaskEndEvent,
  withBackgroundTasks,
} from "../../mod.ts";
import { kvBackend } from "../../kv.ts";
import { callHandler } from "../../testing.ts";
import { guardedTest } from "../_helpers/common.ts";
import { openBackend } from "../_helpers/kv.ts";

/** A chain of `charge` (which fails) then `notify`, whose run ends the test. */
function failingChain() {
  const over = Promise.withResolvers<void>();
  const charge = defineTask((_context, order: string) => {
    throw new Error(`card declined for ${order}`);
  }, { name: "charge" });
  const notify = defineTask(() => over.resolve(), { name: "notify" });
  return { charge, notify, over: over.promise };
}

guardedTest(
  "withBackgroundTasks() hooks are told of every attempt the KV backend runs in this process",
  async () => {
    const { charge, notify, over } = failingChain();
    const consoleError = mock.method(console, "error", () => {});
    try {
      await using db = await openBackend({ tasks: [charge, notify] });
      const started: string[] = [];
      const ended: string[] = [];
      const reported: string[] = [];
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(charge, "order-7");
        tasks.addTask(notify);
        return new Response("ok");
      }, {
        backend: db.backend,
        onTaskStart: ({ name, index }) => void started.push(`${name} ${index}`),
        onTaskEnd: ({ name, outcome }) => void ended.push(`${name} ${outcome}`),
        onTaskError: (error, { name }) =>
          void reported.push(`${name}: ${(error as Error).message}`),
      });
      await (await callHandler(handler, "/")).tasks;
      await over;
      assert.deepEqual(started, ["charge 0", "notify 1"]);
      assert.deepEqual(ended.slice(0, 1), ["charge failed"]);
      assert.deepEqual(reported, ["charge: card declined for order-7"]);
      // The backend has no reporter of its own: the handler's replaces the
      // default one, which wrote nothing.
      assert.deepEqual(
        consoleError.mock.calls.map((call) => call.arguments),
        [],
      );
    } finally {
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "a failure the KV backend runs is reported once by default, and to each reporter given",
  async (t) => {
    await t.step("no reporter anywhere: the default one, once", async () => {
      const { charge, notify, over } = failingChain();
      const consoleError = mock.method(console, "error", () => {});
      try {
        await using db = await openBackend({ tasks: [charge, notify] });
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(charge, "order-7");
          tasks.addTask(notify);
          return new Response("ok");
        }, { backend: db.backend });
        await (await callHandler(handler, "/")).tasks;
        await over;
        const lines = consoleError.mock.calls.map((call) =>
          String(call.arguments[0])
        );
        assert.equal(lines.length, 1, lines.join("\n"));
        assert.match(lines[0]!, /^Background task "charge" at index 0 /);
      } finally {
        consoleError.mock.restore();
      }
    });

    await t.step(
      "one on the backend and one on the handler: both, once each",
      async () => {
        const { charge, notify, over } = failingChain();
        const reported: string[] = [];
        await using db = await openBackend({
          tasks: [charge, notify],
          onTaskError: (_error, { name }) =>
            void reported.push(`backend ${name}`),
          onTaskEnd: ({ name }) => void reported.push(`backend end ${name}`),
        });
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(charge, "order-7");
          tasks.addTask(notify);
          return new Response("ok");
        }, {
          backend: db.backend,
          onTaskError: (_error, { name }) =>
            void reported.push(`handler ${name}`),
        });
        await (await callHandler(handler, "/")).tasks;
        await over;
        assert.deepEqual(reported.filter((line) => line.endsWith("charge")), [
          "backend end charge",
          "backend charge",
          "handler charge",
        ]);
      },
    );
  },
);

guardedTest(
  "serve() gives its hooks and timeout to the attempts its KV backend runs",
  async () => {
    const over = Promise.withResolvers<void>();
    // Ends by itself after 5 s: only a timeout of 20 ms ends it sooner.
    const hang = defineTask(({ signal }) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 5_000);
        signal.addEventListener("abort", () => clearTimeout(timer));
      }), { name: "hang" });
    const after = defineTask(() => over.resolve(), { name: "after" });
    const kv = await Deno.openKv(":memory:");
    const backend = kvBackend({ kv, tasks: [hang, after] });
    const ends: Partial<TaskEndEvent>[] = [];
    const errors: string[] = [];
    const server = serve({
      hostname: "127.0.0.1",
      port: 0,
      shutdownSignals: [],
      onListen() {},
      onShutdown() {},
      backend,
      timeout: 20,
      onTaskEnd: ({ name, outcome }) => void ends.push({ name, outcome }),
      onTaskError: (error) => void errors.push((error as Error).name),
    }, (_request, _info, tasks) => {
      tasks.addTask(hang);
      tasks.addTask(after);
      return new Response("accepted", { status: 202 });
    });
    try {
      const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
      await response.body?.cancel();
      await over.promise;
      assert.deepEqual(ends.slice(0, 1), [{
        name: "hang",
        outcome: "timedOut",
      }]);
      assert.deepEqual(errors, ["TaskTimeoutError"]);
    } finally {
      await server.shutdown();
      backend.close();
      kv.close();
    }
  },
);

guardedTest(
  "kvBackend() refuses a second handler whose timeout differs, unless it has a timeout of its own",
  async () => {
    const task = defineTask(() => {}, { name: "task" });
    await using db = await openBackend({ tasks: [task], listen: false });
    withBackgroundTasks(() => new Response(), {
      backend: db.backend,
      timeout: 1_000,
    });
    withBackgroundTasks(() => new Response(), { backend: db.backend });
    assert.throws(
      () =>
        withBackgroundTasks(() => new Response(), {
          backend: db.backend,
          timeout: 2_000,
        }),
      {
        name: "TypeError",
        message:
          "Cannot use the KV backend with this handler as its 'timeout' (2000) differs from the one another handler gave it (1000): give the backend a 'timeout' of its own",
      },
    );
    await using own = await openBackend({
      tasks: [task],
      listen: false,
      timeout: 500,
    });
    withBackgroundTasks(() => new Response(), {
      backend: own.backend,
      timeout: 1_000,
    });
    withBackgroundTasks(() => new Response(), {
      backend: own.backend,
      timeout: 2_000,
    });
  },
);
