// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { Hono } from "npm:hono@^4";
import {
  defineTask,
  type TaskBackend,
  type TaskInfo,
  withBackgroundTasks,
} from "../../mod.ts";
import { backgroundTasks, type BackgroundTasksVariables } from "../../hono.ts";
import { guardedTest, listen } from "../_helpers/common.ts";

guardedTest(
  "backgroundTasks() runs c.var.backgroundTasks after the response under Deno.serve(app.fetch)",
  async () => {
    const log: string[] = [];
    const reported: TaskInfo[] = [];
    const middleware = backgroundTasks({
      onTaskError: (_error, info) => void reported.push(info),
    });
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.post("/send-notification/:email", (c) => {
      const email = c.req.param("email");
      c.var.backgroundTasks.addTask(
        (to: string) => log.push(`mail ${to}`),
        email,
      );
      c.var.backgroundTasks.addTask(function failing() {
        throw new Error("reported with the request");
      });
      log.push("response");
      return c.json({ message: "Notification sent in the background" });
    });
    const { server, url } = listen(app.fetch);
    try {
      const response = await fetch(`${url}/send-notification/a@example.com`, {
        method: "POST",
      });
      assert.deepEqual(await response.json(), {
        message: "Notification sent in the background",
      });
      await middleware.drain();
    } finally {
      await server.shutdown();
    }
    assert.deepEqual(log, ["response", "mail a@example.com"]);
    // `delivered` is only known through c.env.completed.
    assert.deepEqual(reported.map((info) => [info.delivered, info.request]), [[
      true,
      { method: "POST", url: `${url}/send-notification/a@example.com` },
    ]]);
  },
);

guardedTest(
  "backgroundTasks() runs the tasks one macrotask later under app.request()",
  async () => {
    const delivered: (boolean | undefined)[] = [];
    const middleware = backgroundTasks({
      onTaskError: (_error, info) => void delivered.push(info.delivered),
    });
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.get("/", (c) => {
      c.var.backgroundTasks.addTask(() => Promise.reject(new Error("x")));
      return c.text("ok");
    });
    const response = await app.request("/");
    assert.equal(await response.text(), "ok");
    await middleware.drain();
    assert.deepEqual(delivered, [undefined]);
  },
);

guardedTest(
  "backgroundTasks() discards the tasks of a handler that throws, and Hono answers",
  async () => {
    let ran = 0;
    const middleware = backgroundTasks();
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.get("/", (c) => {
      c.var.backgroundTasks.addTask(() => ran++);
      throw new Error("handler failed");
    });
    app.onError((error, c) => c.text(`handled: ${error.message}`, 500));
    const response = await app.request("/");
    assert.equal(response.status, 500);
    assert.equal(await response.text(), "handled: handler failed");
    await middleware.drain();
    assert.equal(ran, 0);
    assert.equal(middleware.stats.discarded, 1);
  },
);

guardedTest(
  "backgroundTasks() discards the tasks when an error escapes Hono",
  async () => {
    const middleware = backgroundTasks();
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.get("/", (c) => {
      c.var.backgroundTasks.addTask(() => {});
      // Not an Error: Hono's compose rethrows it instead of calling onError.
      throw "not an error";
    });
    await assert.rejects(
      async () => await app.request("/"),
      (error: unknown) => error === "not an error",
    );
    assert.equal(middleware.stats.discarded, 1);
    assert.equal(middleware.stats.pending, 0);
  },
);

guardedTest(
  "the wrapper gives Hono a working c.executionCtx.waitUntil on Deno",
  async () => {
    const log: string[] = [];
    const reported: string[] = [];
    const app = new Hono();
    app.get("/", (c) => {
      c.executionCtx.waitUntil(
        new Promise((resolve) => setTimeout(resolve, 20)).then(() =>
          log.push("cache written")
        ),
      );
      c.executionCtx.waitUntil(Promise.reject(new Error("analytics down")));
      c.executionCtx.passThroughOnException();
      return c.text("ok");
    });
    const handler = withBackgroundTasks(
      (request, info, tasks) => app.fetch(request, info, tasks),
      { onTaskError: (error) => void reported.push((error as Error).message) },
    );
    const { server, url } = listen(handler);
    try {
      const response = await fetch(url);
      assert.equal(await response.text(), "ok");
      await handler.drain();
    } finally {
      await server.shutdown();
    }
    assert.deepEqual(log, ["cache written"]);
    assert.deepEqual(reported, ["analytics down"]);
  },
);

guardedTest(
  "backgroundTasks() uses the wrapper's tasks when the app receives them",
  async () => {
    const log: string[] = [];
    const middleware = backgroundTasks();
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.get("/", (c) => {
      assert.equal(c.var.backgroundTasks, c.executionCtx);
      c.var.backgroundTasks.addTask(() => log.push("via c.var"));
      c.executionCtx.waitUntil(
        Promise.resolve().then(() => log.push("via waitUntil")),
      );
      return c.text("ok");
    });
    const handler = withBackgroundTasks((request, info, tasks) =>
      app.fetch(request, info, tasks)
    );
    const { server, url } = listen(handler);
    try {
      await (await fetch(url)).text();
      await handler.drain();
    } finally {
      await server.shutdown();
    }
    assert.deepEqual(log.sort(), ["via c.var", "via waitUntil"]);
    assert.equal(handler.stats.succeeded, 2);
    assert.equal(middleware.stats.succeeded, 0);
  },
);

Deno.test("backgroundTasks() types c.var.backgroundTasks in an app that declares it", () => {
  const app = new Hono<
    { Variables: BackgroundTasksVariables & { user: string } }
  >();
  app.use(backgroundTasks());
  app.get("/", (c) => {
    const compileOnly = () => {
      c.var.backgroundTasks.addTask((n: number) => n, 1);
      // @ts-expect-error: the argument is checked against the task
      c.var.backgroundTasks.addTask((n: number) => n, "one");
    };
    return c.text(typeof compileOnly);
  });
  // An app that declares nothing accepts it too, without the typing.
  new Hono().use(backgroundTasks());
});

Deno.test("backgroundTasks() rejects options of the wrong type", () => {
  assert.throws(() => backgroundTasks({ maxPending: 0 }), {
    name: "RangeError",
    message:
      "Cannot create middleware as 'maxPending' must be an integer >= 1 or Infinity: current value is 0",
  });
  assert.throws(
    () =>
      backgroundTasks({ concurency: 4 } as unknown as { concurrency: number }),
    {
      name: "TypeError",
      message:
        "Cannot create middleware as 'concurency' is not one of its options: did you mean 'concurrency'?",
    },
  );
});

guardedTest(
  "with the middleware alone, c.executionCtx still throws on Deno; served with the tasks as execution context, it works",
  async () => {
    const ran: string[] = [];
    const middleware = backgroundTasks();
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.get("/", (c) => {
      c.var.backgroundTasks.addTask(() => ran.push("c.var"));
      c.executionCtx.waitUntil(Promise.resolve().then(() => ran.push("ctx")));
      return c.text("ok");
    });
    app.onError((error, c) => c.text(error.message, 500));
    const alone = listen(app.fetch);
    const wrapped = withBackgroundTasks((request, info, tasks) =>
      app.fetch(request, info, tasks)
    );
    const served = listen(wrapped);
    try {
      const response = await fetch(alone.url);
      assert.equal(response.status, 500);
      assert.equal(
        await response.text(),
        "This context has no ExecutionContext",
      );
      const answered = await fetch(served.url);
      assert.equal(await answered.text(), "ok");
    } finally {
      await alone.server.shutdown();
      await served.server.shutdown();
    }
    await middleware.drain();
    await wrapped.drain();
    assert.deepEqual(ran.sort(), ["c.var", "ctx"]);
  },
);

guardedTest(
  "backgroundTasks() with a backend answers only once the chain is stored, and fails the request when it cannot be",
  async () => {
    const job = defineTask((_context, _n: number) => {}, { name: "job" });
    const stores: PromiseWithResolvers<void>[] = [];
    const called = [
      Promise.withResolvers<void>(),
      Promise.withResolvers<void>(),
    ];
    const backend: TaskBackend = {
      accept() {},
      enqueue() {
        const store = Promise.withResolvers<void>();
        called[stores.length]!.resolve();
        stores.push(store);
        return store.promise;
      },
    };
    const middleware = backgroundTasks({ backend });
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.post("/", (c) => {
      c.var.backgroundTasks.addTask(job, 1);
      return c.text("accepted", 202);
    });
    app.onError((error, c) => c.text(error.message, 500));

    let answered = false;
    const first = Promise.resolve(app.request("/", { method: "POST" })).then(
      (response) => {
        answered = true;
        return response;
      },
    );
    await called[0]!.promise;
    assert.equal(answered, false, "answered before the chain was stored");
    stores[0]!.resolve();
    assert.equal((await first).status, 202);
    await (await first).body?.cancel();

    const second = app.request("/", { method: "POST" });
    await called[1]!.promise;
    stores[1]!.reject(new Error("already queued"));
    const failed = await second;
    assert.equal(failed.status, 500);
    assert.equal(
      await failed.text(),
      "Cannot respond as the backend could not store the request's tasks",
    );
    await middleware.drain();
    const { handedOver, discarded, pending } = middleware.stats;
    assert.deepEqual({ handedOver, discarded, pending }, {
      handedOver: 1,
      discarded: 1,
      pending: 0,
    });
  },
);

guardedTest(
  "backgroundTasks() cancels the unsent body when the backend cannot store the chain, as the Deno.serve wrapper does",
  async () => {
    const job = defineTask(() => {}, { name: "job" });
    const backend: TaskBackend = {
      accept() {},
      enqueue: () => Promise.reject(new Error("already queued")),
    };
    const cancelled = Promise.withResolvers<unknown>();
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(backgroundTasks({ backend }));
    app.get("/", (c) => {
      c.var.backgroundTasks.addTask(job);
      const body = new ReadableStream<Uint8Array>({
        cancel: (reason) => cancelled.resolve(reason),
      });
      return c.body(body);
    });
    app.onError((error, c) => c.text(error.message, 500));
    const response = await app.request("/");
    assert.equal(response.status, 500);
    await response.body?.cancel();
    await cancelled.promise;
  },
);

guardedTest(
  "backgroundTasks() runs keyed tasks in their lanes: a burst of replacements through the middleware runs once",
  async () => {
    const runs: number[] = [];
    const reindex = defineTask((_context, _user: string, n: number) => {
      runs.push(n);
    }, {
      name: "reindex",
      key: (user) => user,
      onDuplicate: "replace",
      delay: 10,
    });
    const middleware = backgroundTasks();
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.put("/users/:id/:n", (c) => {
      c.var.backgroundTasks.addTask(
        reindex,
        c.req.param("id"),
        Number(c.req.param("n")),
      );
      return c.text("saved");
    });
    await Promise.all(
      [1, 2, 3, 4, 5].map(async (n) => {
        const response = await app.request(`/users/u42/${n}`, {
          method: "PUT",
        });
        await response.text();
      }),
    );
    await middleware.drain();
    assert.deepEqual(runs, [5]);
    assert.equal(middleware.stats.deduplicated, 4);
  },
);
