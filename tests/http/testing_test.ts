// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { defineTask, withBackgroundTasks } from "../../mod.ts";
import {
  callHandler,
  fakeServeHandlerInfo,
  trackTasks,
} from "../../testing.ts";
import { guardedTest } from "../_helpers/common.ts";
import { backgroundTasks, type BackgroundTasksVariables } from "../../hono.ts";
import { Hono } from "npm:hono@^4";

guardedTest(
  "fakeServeHandlerInfo() lets the test decide when the response was sent",
  async () => {
    const log: string[] = [];
    const handler = withBackgroundTasks((_request, info, tasks) => {
      assert.deepEqual(info.remoteAddr, {
        transport: "tcp",
        hostname: "10.0.0.7",
        port: 443,
      });
      tasks.addTask(() => log.push("task"));
      return new Response("ok");
    });
    const info = fakeServeHandlerInfo({
      remoteAddr: { transport: "tcp", hostname: "10.0.0.7", port: 443 },
    });
    await handler(new Request("http://localhost/"), info);
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.deepEqual(log, [], "ran before complete()");
    info.complete();
    await handler.drain();
    assert.deepEqual(log, ["task"]);
  },
);

guardedTest(
  "fakeServeHandlerInfo() plays an undelivered response with interrupt()",
  async () => {
    const delivered: (boolean | undefined)[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => {
        throw new Error("see info.delivered");
      });
      return new Response("ok");
    }, { onTaskError: (_error, info) => void delivered.push(info.delivered) });
    const info = fakeServeHandlerInfo();
    await handler(new Request("http://localhost/"), info);
    info.interrupt();
    await handler.drain();
    assert.deepEqual(delivered, [false]);
    await assert.rejects(info.completed, Deno.errors.Interrupted);
  },
);

guardedTest(
  "fakeServeHandlerInfo() that is interrupted and never read raises no unhandled rejection",
  () => {
    fakeServeHandlerInfo().interrupt();
  },
);

guardedTest(
  "callHandler() returns the response and the results of that request's tasks",
  async () => {
    const handler = withBackgroundTasks(async (request, _info, tasks) => {
      const body = await request.text();
      tasks.addTask(function echo(text: string) {
        return text.toUpperCase();
      }, body);
      tasks.addTask(function fails() {
        throw new Error("expected");
      });
      return new Response("accepted", { status: 202 });
    }, { onTaskError: () => {} });

    const { response, tasks } = await callHandler(
      handler,
      new Request("http://localhost/upload", { method: "POST", body: "data" }),
    );
    assert.equal(response.status, 202);
    assert.equal(await response.text(), "accepted");
    const results = await tasks;
    assert.deepEqual(results[0], {
      status: "fulfilled",
      name: "echo",
      index: 0,
      value: "DATA",
    });
    assert.equal(results[1]?.status, "rejected");
    assert.equal(
      (results[1] as { reason: Error }).reason.message,
      "expected",
    );
  },
);

guardedTest(
  "callHandler() resolves paths against localhost and waits for the given info",
  async () => {
    const urls: string[] = [];
    const handler = withBackgroundTasks((request, _info, tasks) => {
      tasks.addTask((url: string) => urls.push(url), request.url);
      return new Response("ok");
    });
    const info = fakeServeHandlerInfo();
    const { response, tasks } = await callHandler(handler, "/orders?id=1", {
      info,
    });
    await response.body?.cancel();
    info.complete();
    assert.deepEqual((await tasks).length, 1);
    assert.deepEqual(urls, ["http://localhost/orders?id=1"]);
  },
);

guardedTest(
  "callHandler() resolves with no results for a request that added no task",
  async () => {
    const handler = withBackgroundTasks(() => new Response("ok"));
    const { response, tasks } = await callHandler(
      handler,
      new URL("http://localhost/"),
    );
    await response.body?.cancel();
    assert.deepEqual(await tasks, []);
  },
);

guardedTest("callHandler() passes on the handler's error", async () => {
  const error = new Error("handler failed");
  const handler = withBackgroundTasks(() => {
    throw error;
  });
  await assert.rejects(callHandler(handler, "/"), (thrown) => thrown === error);
});

guardedTest(
  "callHandler() makes the request from a RequestInit, as app.request() does",
  async () => {
    const seen: string[] = [];
    const handler = withBackgroundTasks(async (request, _info, tasks) => {
      const body = await request.text();
      tasks.addTask(
        (line: string) => seen.push(line),
        `${request.method} ${new URL(request.url).pathname} ${
          request.headers.get("x-user")
        } ${body}`,
      );
      return new Response("ok");
    });
    const { response, tasks } = await callHandler(handler, "/orders", {
      method: "POST",
      headers: { "x-user": "ada" },
      body: "42",
    });
    assert.equal(await response.text(), "ok");
    await tasks;
    // A Request given whole takes the init over its own fields.
    const second = await callHandler(
      handler,
      new Request("http://localhost/orders", { method: "PUT", body: "1" }),
      { headers: { "x-user": "grace" } },
    );
    await second.response.body?.cancel();
    await second.tasks;
    assert.deepEqual(seen, ["POST /orders ada 42", "PUT /orders grace 1"]);
  },
);

Deno.test("callHandler() and fakeServeHandlerInfo() refuse what they do not know", async () => {
  const handler = withBackgroundTasks(() => new Response("ok"));
  await assert.rejects(
    () => callHandler(handler, "/", { methd: "POST" } as RequestInit),
    {
      name: "TypeError",
      message:
        "Cannot call handler as 'methd' is not one of its options: did you mean 'method'?",
    },
  );
  await assert.rejects(
    () =>
      callHandler(
        ((_request: Request) => new Response()) as unknown as typeof handler,
        "/",
      ),
    {
      name: "TypeError",
      message:
        "Cannot call handler as 'handler' must be made by withBackgroundTasks(): current value is a function without drain()",
    },
  );
  await assert.rejects(
    () => callHandler(handler, 1 as unknown as string),
    {
      name: "TypeError",
      message:
        "Cannot call handler as 'request' must be a Request, a URL or a string: current value is 1",
    },
  );
  await assert.rejects(
    () =>
      callHandler(handler, "/", {
        info: 1 as unknown as Deno.ServeHandlerInfo,
      }),
    {
      name: "TypeError",
      message:
        "Cannot call handler as 'info' must be a Deno.ServeHandlerInfo: current value is 1",
    },
  );
  assert.throws(
    () => fakeServeHandlerInfo({ remoteAddr: 1 as unknown as Deno.NetAddr }),
    {
      name: "TypeError",
      message:
        `Cannot make handler info as 'remoteAddr' must be an address, such as { transport: "tcp", hostname: "127.0.0.1", port: 80 }: current value is 1`,
    },
  );
  assert.throws(
    () => fakeServeHandlerInfo({ remote: {} } as never),
    {
      name: "TypeError",
      message:
        "Cannot make handler info as 'remote' is not one of its options: they are 'remoteAddr'",
    },
  );
});

guardedTest(
  "trackTasks() fails a test that leaves a request's tasks pending, naming them, and passes one that awaited them",
  async () => {
    const app = withBackgroundTasks((request, _info, tasks) => {
      tasks.addTask(function sendWelcome(_to: string) {}, "a@example.com");
      tasks.addTask(function resize() {});
      if (new URL(request.url).pathname === "/fail") throw new Error("bug");
      return new Response("ok", { status: 201 });
    });

    const forgetful = trackTasks();
    const info = fakeServeHandlerInfo();
    const { response } = await callHandler(app, "/signup?token=secret", {
      method: "POST",
      info,
    });
    await response.body?.cancel();
    // A handler that failed discards its tasks: nothing is pending there.
    await assert.rejects(() => callHandler(app, "/fail"), { message: "bug" });
    assert.deepEqual(forgetful.pending, [
      '"sendWelcome" at index 0 of POST /signup',
      '"resize" at index 1 of POST /signup',
    ]);
    assert.throws(() => forgetful[Symbol.dispose](), {
      name: "Error",
      message:
        'Cannot end the test as 2 background tasks are still pending: "sendWelcome" at index 0 of POST /signup, "resize" at index 1 of POST /signup; await the tasks callHandler() returns, or the handler\'s drain()',
    });
    info.complete();
    await app.drain();

    {
      using tracker = trackTasks();
      const { tasks } = await callHandler(app, "/signup");
      await tasks;
      assert.deepEqual(tracker.pending, []);
    }
  },
);

guardedTest(
  "trackTasks() sees the chains of every wrapped handler while it lives, and none after",
  async () => {
    const app = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(function late() {});
      return new Response("ok");
    });
    const info = fakeServeHandlerInfo();
    const outer = trackTasks();
    const inner = trackTasks();
    await (await app(new Request("http://localhost/a"), info)).text();
    assert.throws(() => inner[Symbol.dispose](), {
      message:
        'Cannot end the test as 1 background task is still pending: "late" at index 0 of GET /a; await the tasks callHandler() returns, or the handler\'s drain()',
    });
    // Disposed, inner no longer tracks; outer still does, though inner was
    // made after it.
    await (await app(new Request("http://localhost/b"), info)).text();
    assert.deepEqual(inner.pending, ['"late" at index 0 of GET /a']);
    assert.deepEqual(outer.pending, [
      '"late" at index 0 of GET /a',
      '"late" at index 0 of GET /b',
    ]);
    info.complete();
    await app.drain();
    assert.deepEqual(outer.pending, []);
    outer[Symbol.dispose]();
    await (await app(new Request("http://localhost/c"), fakeServeHandlerInfo()))
      .text();
    assert.deepEqual(outer.pending, []);
    await app.drain({ timeout: 0 });
  },
);

guardedTest("trackTasks() sees the chains of the Hono middleware", async () => {
  const middleware = backgroundTasks();
  const app = new Hono<{ Variables: BackgroundTasksVariables }>();
  app.use(middleware);
  app.get("/", (c) => {
    c.var.backgroundTasks.addTask(function audit() {});
    return c.text("ok");
  });
  const tracker = trackTasks();
  await (await app.request("/")).text();
  assert.deepEqual(tracker.pending, ['"audit" at index 0 of GET /']);
  await middleware.drain();
  tracker[Symbol.dispose]();
});

guardedTest(
  "trackTasks() names a keyed task still waiting in its lane, and callHandler()'s tasks wait for it",
  async () => {
    const reindex = defineTask((_context, _user: string) => {}, {
      name: "reindex",
      key: (user) => user,
      delay: 5,
    });
    const app = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(reindex, "u42");
      return new Response("ok");
    });
    using tracker = trackTasks();
    const { tasks } = await callHandler(app, "/profile", { method: "PUT" });
    assert.deepEqual(tracker.pending, ['"reindex" at index 0 of PUT /profile']);
    assert.deepEqual(await tasks, [
      { status: "fulfilled", name: "reindex", index: 0, value: undefined },
    ]);
    assert.deepEqual(tracker.pending, []);
  },
);

guardedTest(
  "trackTasks() no longer names a keyed task once it has been deduplicated",
  async () => {
    const warm = defineTask((_context, _page: string) => {}, {
      name: "warm",
      key: (page) => page,
      onDuplicate: "skip",
    });
    const app = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(warm, "/home");
      tasks.addTask(warm, "/home");
      return new Response("ok");
    });
    const tracker = trackTasks();
    const { tasks } = await callHandler(app, "/");
    assert.equal((await tasks).length, 1);
    assert.equal(app.stats.deduplicated, 1);
    assert.deepEqual(tracker.pending, []);
    tracker[Symbol.dispose]();
  },
);
