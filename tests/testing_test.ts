// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { withBackgroundTasks } from "../mod.ts";
import { callHandler, fakeServeHandlerInfo } from "../testing.ts";
import { guardedTest } from "./_helpers.ts";

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
        "Cannot make handler info as 'remote' is not one of its options: did you mean 'remoteAddr'?",
    },
  );
});
