// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A handler with a backend keeps some of its tasks in this process:
// `tasks.inProcess` is the request's in-process chain, beside the chain the
// backend takes, made only when asked for, run by the same runner (limits,
// hooks, drains, shutdown) once the response has been sent. Nothing falls
// back from durable to in process unasked.

import assert from "node:assert/strict";
import {
  BackgroundTasks,
  defineTask,
  type DurableTasks,
  QueueFullError,
  serve,
  type TaskBackend,
  withBackgroundTasks,
} from "../../mod.ts";
import { backgroundTasks } from "../../hono.ts";
import type { BackendChain } from "../../backend.ts";
import { kvBackend } from "../../kv.ts";
import {
  callHandler,
  fakeServeHandlerInfo,
  trackTasks,
} from "../../testing.ts";
import { internals } from "../../src/core/_chain.ts";
import { consoleLines, guardedTest, macrotasks } from "../_helpers/common.ts";
import { openKv } from "../_helpers/kv.ts";
import { Hono } from "npm:hono@^4";
import type { DurableTasksVariables } from "../../hono.ts";

/** A backend that stores every chain at once, and keeps them. */
function storingBackend(): TaskBackend & { stored: BackendChain[] } {
  const stored: BackendChain[] = [];
  return {
    stored,
    accept(task) {
      if (task.name !== "saveOrder") {
        throw new TypeError(`Cannot add task "${task.name}": not listed`);
      }
    },
    enqueue(chain) {
      stored.push(chain);
      return Promise.resolve();
    },
  };
}

const saveOrder = defineTask((_context, _order: string) => {}, {
  name: "saveOrder",
});

guardedTest(
  "with a backend, tasks.inProcess runs plain tasks in this process once the response has been sent, while defined tasks go to the backend",
  async (t) => {
    for (const handOver of ["before-response", "after-response"] as const) {
      await t.step(handOver, async () => {
        const backend = storingBackend();
        const log: string[] = [];
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(saveOrder, "42");
          tasks.inProcess.addTask(function sendReceipt(to: string) {
            log.push(`receipt to ${to}`);
            return to;
          }, "a@example.com");
          return new Response("Accepted", { status: 202 });
        }, { backend, handOver });

        const info = fakeServeHandlerInfo();
        const { response, tasks } = await callHandler(handler, "/orders/42", {
          info,
        });
        assert.equal(response.status, 202);
        await response.body?.cancel();
        // Nothing runs before the response is sent.
        await macrotasks(3);
        assert.deepEqual(log, []);
        info.complete();
        // The results of the tasks run here.
        assert.deepEqual(await tasks, [{
          status: "fulfilled",
          name: "sendReceipt",
          index: 0,
          value: "a@example.com",
        }]);
        assert.deepEqual(log, ["receipt to a@example.com"]);
        assert.deepEqual(
          backend.stored.map((chain) => chain.tasks.map((task) => task.name)),
          [["saveOrder"]],
        );
        const { succeeded, handedOver, pending } = handler.stats;
        assert.deepEqual({ succeeded, handedOver, pending }, {
          succeeded: 1,
          handedOver: 1,
          pending: 0,
        });
      });
    }
  },
);

guardedTest(
  "tasks.inProcess is made once per request, only when asked for; without a backend it is the tasks themselves",
  async () => {
    const made: string[] = [];
    const previous = internals.created;
    internals.created = (chain) => void made.push(chain.url ?? "?");
    try {
      const seen: [DurableTasks, BackgroundTasks, BackgroundTasks][] = [];
      const handler = withBackgroundTasks((request, _info, tasks) => {
        if (request.url.endsWith("/in-process")) {
          seen.push([tasks, tasks.inProcess, tasks.inProcess]);
        }
        tasks.addTask(saveOrder, "42");
        return new Response("ok");
      }, { backend: storingBackend() });
      await (await callHandler(handler, "http://localhost/durable")).tasks;
      assert.deepEqual(made, ["http://localhost/durable"]);
      await (await callHandler(handler, "http://localhost/in-process")).tasks;
      assert.deepEqual(made, [
        "http://localhost/durable",
        "http://localhost/in-process",
        "http://localhost/in-process",
      ]);
      const [[durable, inProcess, again]] = seen as [typeof seen[0]];
      assert.equal(inProcess, again);
      assert.notEqual(inProcess, durable);
      assert.ok(inProcess instanceof BackgroundTasks);
      assert.equal(inProcess.inProcess, inProcess);
    } finally {
      internals.created = previous;
    }

    let plain: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      plain = tasks;
      return new Response("ok");
    });
    await (await callHandler(handler, "/")).tasks;
    assert.equal(plain!.inProcess, plain);
    const standalone = new BackgroundTasks();
    assert.equal(standalone.inProcess, standalone);
  },
);

guardedTest(
  "with a backend, addTask() still refuses a plain function, naming tasks.inProcess, and a defined task the backend does not list: nothing falls back to this process",
  async () => {
    const thrown: unknown[] = [];
    let ran = false;
    const unlisted = defineTask(() => void (ran = true), { name: "unlisted" });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      for (
        const add of [
          () =>
            (tasks as unknown as BackgroundTasks).addTask(
              function sendEmail() {
                ran = true;
              },
            ),
          () => tasks.addTask(unlisted),
        ]
      ) {
        try {
          add();
        } catch (error) {
          thrown.push(error);
        }
      }
      return new Response("ok");
    }, { backend: storingBackend() });
    await (await callHandler(handler, "/")).tasks;
    assert.equal(thrown.length, 2);
    assert.ok(thrown[0] instanceof TypeError);
    assert.equal(
      (thrown[0] as Error).message,
      `Cannot add task "sendEmail" as the handler's backend runs only tasks made by defineTask: make it one and list it in the backend's 'tasks', or add it to tasks.inProcess to run it in this process`,
    );
    assert.ok(thrown[1] instanceof TypeError);
    assert.equal(
      (thrown[1] as Error).message,
      `Cannot add task "unlisted": not listed`,
    );
    assert.equal(ran, false);
    assert.equal(handler.stats.succeeded, 0);
  },
);

guardedTest(
  "with a backend, waitUntil() waits in this process, as the request's in-process tasks do",
  async () => {
    const reported: string[] = [];
    const { promise, resolve } = Promise.withResolvers<void>();
    let settled = false;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.waitUntil(promise.then(() => void (settled = true)));
      tasks.waitUntil(Promise.reject(new Error("cache is down")));
      tasks.addTask(saveOrder, "42");
      return new Response("ok");
    }, {
      backend: storingBackend(),
      onTaskError: (_error, info) => void reported.push(info.name),
    });
    const { tasks } = await callHandler(handler, "/");
    const drained = handler.drain();
    resolve();
    await drained;
    assert.equal(settled, true);
    assert.deepEqual(reported, ["waitUntil"]);
    assert.deepEqual((await tasks).map((result) => result.status), [
      "fulfilled",
      "rejected",
    ]);
    const { succeeded, failed, handedOver } = handler.stats;
    assert.deepEqual({ succeeded, failed, handedOver }, {
      succeeded: 1,
      failed: 1,
      handedOver: 1,
    });
  },
);

guardedTest(
  "a handler that fails discards its in-process tasks too, and so does a response whose chain could not be stored",
  async (t) => {
    let ran = 0;
    const sendEmail = () => void ran++;
    await t.step("the handler throws", async () => {
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(saveOrder, "42");
        tasks.inProcess.addTask(sendEmail);
        throw new Error("boom");
      }, { backend: storingBackend() });
      await assert.rejects(callHandler(handler, "/"), { message: "boom" });
      await handler.drain();
      assert.equal(ran, 0);
      assert.equal(handler.stats.discarded, 2);
    });
    await t.step("the chain cannot be stored", async () => {
      const backend: TaskBackend = {
        accept() {},
        enqueue: () => Promise.reject(new Error("store is down")),
      };
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(saveOrder, "42");
        tasks.inProcess.addTask(sendEmail);
        return new Response("Accepted", { status: 202 });
      }, { backend });
      await assert.rejects(callHandler(handler, "/"), {
        message:
          "Cannot respond as the backend could not store the request's tasks",
      });
      await handler.drain();
      assert.equal(ran, 0);
      assert.equal(handler.stats.discarded, 2);
    });
  },
);

guardedTest(
  "tasks.inProcess first asked for once the response is sent runs its tasks as a chain of their own",
  async () => {
    let kept: DurableTasks | undefined;
    const ran: string[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      kept = tasks;
      tasks.addTask(saveOrder, "42");
      return new Response("ok");
    }, { backend: storingBackend() });
    await (await callHandler(handler, "/late")).tasks;
    kept!.inProcess.addTask((label: string) => void ran.push(label), "late");
    await handler.drain();
    assert.deepEqual(ran, ["late"]);
    assert.deepEqual(
      [handler.stats.succeeded, handler.stats.handedOver],
      [1, 1],
    );
  },
);

guardedTest(
  "maxPending counts the tasks of both chains, and trackTasks() sees the in-process ones",
  async () => {
    const { promise: gate, resolve: open } = Promise.withResolvers<void>();
    let refused: unknown;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(saveOrder, "42");
      tasks.inProcess.addTask(function sendReceipt() {
        return gate;
      });
      try {
        tasks.inProcess.addTask(function sendSurvey() {});
      } catch (error) {
        refused = error;
      }
      return new Response("ok");
    }, { backend: storingBackend(), maxPending: 2 });
    const tracker = trackTasks();
    const { tasks } = await callHandler(handler, "/orders/42");
    assert.ok(refused instanceof QueueFullError);
    assert.deepEqual(tracker.pending, [
      '"sendReceipt" at index 0 of GET /orders/42',
    ]);
    open();
    await tasks;
    tracker[Symbol.dispose]();
  },
);

guardedTest(
  "one serve() with a Deno KV backend runs /signup's tasks here and /orders' through Deno KV, and its shutdown waits for both and counts them in one line",
  async () => {
    using console = consoleLines();
    await using kv = await openKv();
    // Each task runs until the test lets it end: the in-process one once the
    // shutdown has begun, the Deno KV one once it closes the backend (the
    // backend counts the tasks it runs at its close).
    const gates = {
      welcome: Promise.withResolvers<void>(),
      charge: Promise.withResolvers<void>(),
    };
    const started = {
      welcome: Promise.withResolvers<void>(),
      charge: Promise.withResolvers<void>(),
    };
    const ran: string[] = [];
    const chargeCard = defineTask(async (_context, order: string) => {
      started.charge.resolve();
      await gates.charge.promise;
      ran.push(`charged ${order}`);
    }, { name: "chargeCard" });
    const kvTasks = kvBackend({ kv, tasks: [chargeCard] });
    const backend: typeof kvTasks = {
      ...kvTasks,
      close(options) {
        gates.charge.resolve();
        return kvTasks.close(options);
      },
    };
    const server = serve({
      hostname: "127.0.0.1",
      port: 0,
      shutdownSignals: [],
      onListen() {},
      backend,
    }, (request, _info, tasks) => {
      if (new URL(request.url).pathname === "/signup") {
        tasks.inProcess.addTask(async function sendWelcome(to: string) {
          started.welcome.resolve();
          await gates.welcome.promise;
          ran.push(`welcomed ${to}`);
        }, "ada@example.com");
      } else {
        tasks.addTask(chargeCard, "42");
      }
      return new Response("Accepted", { status: 202 });
    });
    const base = `http://127.0.0.1:${server.addr.port}`;
    for (const path of ["/signup", "/orders"]) {
      const response = await fetch(base + path, { method: "POST" });
      assert.equal(response.status, 202);
      await response.body?.cancel();
    }
    await started.welcome.promise;
    await started.charge.promise;
    const shutdown = server.shutdown();
    gates.welcome.resolve();
    const result = await shutdown;
    await server.finished;
    assert.deepEqual(ran.sort(), ["charged 42", "welcomed ada@example.com"]);
    const { succeeded, failed, abandoned } = result;
    assert.deepEqual({ succeeded, failed, abandoned }, {
      succeeded: 2,
      failed: 0,
      abandoned: 0,
    });
    assert.deepEqual(console.lines, [
      "Shutdown drained every background task: 2 succeeded and 0 failed while draining",
    ]);
  },
);

guardedTest(
  "the Hono middleware with a backend runs c.var.backgroundTasks.inProcess here and drains both",
  async () => {
    const backend = storingBackend();
    const sent: string[] = [];
    const middleware = backgroundTasks({ backend });
    const app = new Hono<{ Variables: DurableTasksVariables }>();
    app.use(middleware);
    app.post("/signup/:email", (c) => {
      c.var.backgroundTasks.inProcess.addTask(
        (to: string) => void sent.push(to),
        c.req.param("email"),
      );
      return c.text("welcome", 201);
    });
    app.post("/orders/:id", (c) => {
      c.var.backgroundTasks.addTask(saveOrder, c.req.param("id"));
      return c.text("accepted", 202);
    });
    assert.equal(
      (await app.request("/signup/a@example.com", { method: "POST" })).status,
      201,
    );
    assert.equal(
      (await app.request("/orders/42", { method: "POST" })).status,
      202,
    );
    const result = await middleware.drain();
    assert.deepEqual(sent, ["a@example.com"]);
    assert.equal(result.abandoned, 0);
    const { succeeded, handedOver, pending } = middleware.stats;
    assert.deepEqual({ succeeded, handedOver, pending }, {
      succeeded: 1,
      handedOver: 1,
      pending: 0,
    });
    assert.deepEqual(
      backend.stored.map((chain) => chain.tasks[0]?.args),
      [["42"]],
    );
  },
);

guardedTest(
  "serve()'s shutdown does not see a wrapper nested in its handler, as docs/durable.md says: its report leaves that wrapper's tasks out",
  async () => {
    using console = consoleLines();
    const gate = Promise.withResolvers<void>();
    const started = Promise.withResolvers<void>();
    const nested = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(async function chargeCard() {
        started.resolve();
        await gate.promise;
      });
      return new Response("Accepted", { status: 202 });
    });
    const server = serve({
      hostname: "127.0.0.1",
      port: 0,
      shutdownSignals: [],
      onListen() {},
    }, (request, info) => nested(request, info));
    const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    await response.body?.cancel();
    await started.promise;
    const result = await server.shutdown();
    assert.deepEqual([result.succeeded, result.abandoned], [0, 0]);
    assert.equal(nested.stats.running, 1);
    assert.deepEqual(console.lines, [
      "Shutdown drained every background task: 0 succeeded and 0 failed while draining",
    ]);
    gate.resolve();
    await nested.drain();
  },
);

guardedTest(
  "with a backend, a keyed task added to tasks.inProcess runs in its lane in this process",
  async () => {
    const backend = storingBackend();
    const runs: string[] = [];
    const reindex = defineTask((_context, user: string, n: number) => {
      runs.push(`${user}${n}`);
    }, { name: "reindex", key: (user) => user, onDuplicate: "replace" });
    const handler = withBackgroundTasks((request, _info, tasks) => {
      tasks.addTask(saveOrder, "42");
      const n = Number(new URL(request.url).searchParams.get("n"));
      tasks.inProcess.addTask(reindex, "u42", n);
      return new Response("Accepted", { status: 202 });
    }, { backend });
    const info = fakeServeHandlerInfo();
    await callHandler(handler, "/?n=1", { info });
    await callHandler(handler, "/?n=2", { info });
    info.complete();
    await handler.drain();
    assert.deepEqual(runs, ["u422"]);
    assert.equal(backend.stored.length, 2);
    assert.deepEqual(
      [
        handler.stats.succeeded,
        handler.stats.deduplicated,
        handler.stats.handedOver,
      ],
      [1, 1, 2],
    );
  },
);
