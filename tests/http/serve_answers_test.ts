// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What serve() writes and answers for the user: a refused request's 503, and
// the shutdown line's escaping.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type BackgroundTasks,
  logShutdown,
  QueueFullError,
  serve,
  type ServeOptions,
} from "../../mod.ts";
import { guardedTest } from "../_helpers/common.ts";

const local = {
  hostname: "127.0.0.1",
  port: 0,
  shutdownSignals: [],
  onListen() {},
} satisfies ServeOptions;

guardedTest(
  "serve() answers a QueueFullError the handler does not catch with 503 and Retry-After, and writes nothing",
  async () => {
    const release = Promise.withResolvers<void>();
    const consoleError = mock.method(console, "error", () => {});
    const server = serve(
      { ...local, maxPending: 1, onShutdown() {} },
      (_request, _info, tasks) => {
        tasks.addTask(function waits() {
          return release.promise;
        });
        return new Response("accepted", { status: 202 });
      },
    );
    try {
      const url = `http://127.0.0.1:${server.addr.port}`;
      const first = await fetch(url);
      assert.equal(first.status, 202);
      await first.body?.cancel();
      const refused = await fetch(url);
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("retry-after"), "5");
      assert.equal(await refused.text(), "Service Unavailable");
      assert.equal(server.handler.stats.refused, 1);
      assert.equal(consoleError.mock.callCount(), 0);
    } finally {
      consoleError.mock.restore();
      release.resolve();
      await server.shutdown();
    }
  },
);

guardedTest(
  "serve()'s onError receives a QueueFullError too, and other errors still get Deno's 500",
  async () => {
    const release = Promise.withResolvers<void>();
    const seen: unknown[] = [];
    const consoleError = mock.method(console, "error", () => {});
    const handler = (
      request: Request,
      _info: unknown,
      tasks: BackgroundTasks,
    ) => {
      if (new URL(request.url).pathname === "/bug") throw new Error("bug");
      tasks.addTask(() => release.promise);
      return new Response("accepted", { status: 202 });
    };
    const custom = serve({
      ...local,
      maxPending: 1,
      onShutdown() {},
      onError(error) {
        seen.push(error);
        return new Response("custom", { status: 429 });
      },
    }, handler);
    const plain = serve({ ...local, onShutdown() {} }, handler);
    try {
      const url = `http://127.0.0.1:${custom.addr.port}`;
      await (await fetch(url)).body?.cancel();
      const refused = await fetch(url);
      assert.equal(refused.status, 429);
      assert.equal(await refused.text(), "custom");
      assert.equal(seen.length, 1);
      assert.ok(seen[0] instanceof QueueFullError);
      assert.equal(consoleError.mock.callCount(), 0);

      const bug = await fetch(`http://127.0.0.1:${plain.addr.port}/bug`);
      assert.equal(bug.status, 500);
      assert.equal(await bug.text(), "Internal Server Error");
      assert.equal(consoleError.mock.callCount(), 1);
      assert.equal(
        (consoleError.mock.calls[0]?.arguments[0] as Error).message,
        "bug",
      );
    } finally {
      consoleError.mock.restore();
      release.resolve();
      await Promise.all([custom.shutdown(), plain.shutdown()]);
    }
  },
);

Deno.test("logShutdown() escapes control characters in the abandoned tasks' names and the backend's error", () => {
  const consoleError = mock.method(console, "error", () => {});
  try {
    logShutdown({
      succeeded: 0,
      failed: 0,
      handedOver: 0,
      abandoned: 1,
      abandonedTasks: {
        "x\nShutdown drained every background task: 9 succeeded\x1b[31m": 1,
      },
      unstored: 1,
      backend: {
        state: "down",
        since: new Date("2026-12-01T10:00:00Z"),
        error: "refused\r\n\u009b2J",
      },
    });
  } finally {
    consoleError.mock.restore();
  }
  assert.deepEqual(consoleError.mock.calls.map((call) => call.arguments), [[
    "Shutdown abandoned 1 background task (x\\nShutdown drained every background task: 9 succeeded\\x1b[31m: 1), 1 of them not yet stored by the backend, down since 2026-12-01T10:00:00.000Z (refused\\r\\n\\u009b2J); 0 succeeded and 0 failed while draining",
  ]]);
});
