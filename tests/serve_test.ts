// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  defineTask,
  type DrainResult,
  logShutdown,
  serve,
  type ServeOptions,
} from "../mod.ts";
import { guardedTest } from "./_helpers.ts";

const local = {
  hostname: "127.0.0.1",
  port: 0,
  signals: [],
  onListen() {},
} satisfies ServeOptions;

guardedTest(
  "serve() passes the tasks to the handler and shutdown() drains them",
  async () => {
    const log: string[] = [];
    const reports: DrainResult[] = [];
    const server = serve(
      { ...local, onShutdown: (result) => void reports.push(result) },
      (request, info, tasks) => {
        assert.ok(info.remoteAddr);
        tasks.addTask(async (path: string) => {
          await new Promise((resolve) => setTimeout(resolve, 20));
          log.push(path);
        }, new URL(request.url).pathname);
        return new Response("ok");
      },
    );
    const url = `http://127.0.0.1:${server.addr.port}`;
    for (const path of ["/a", "/b"]) {
      const response = await fetch(url + path);
      assert.equal(await response.text(), "ok");
    }
    assert.equal(server.handler.pending > 0, true);

    const result = await server.shutdown();

    assert.deepEqual(log.sort(), ["/a", "/b"]);
    const drained = {
      completed: 2,
      failed: 0,
      abandoned: 0,
      abandonedTasks: {},
    };
    assert.deepEqual(result, drained);
    assert.deepEqual(reports, [drained]);
    assert.equal(
      await server.shutdown(),
      result,
      "a second call shuts down again",
    );
    await server.finished;
  },
);

guardedTest(
  "serve() waits for a response in flight, then drains the tasks it adds",
  async () => {
    const handlerGate = Promise.withResolvers<void>();
    const inHandler = Promise.withResolvers<void>();
    const log: string[] = [];
    const server = serve(
      { ...local, onShutdown() {} },
      async (_request, _info, tasks) => {
        inHandler.resolve();
        await handlerGate.promise;
        tasks.addTask(() => log.push("task of the last response"));
        return new Response("late");
      },
    );
    const response = fetch(`http://127.0.0.1:${server.addr.port}/`);
    await inHandler.promise;
    const shutdown = server.shutdown();
    handlerGate.resolve();
    assert.equal(await (await response).text(), "late");
    assert.equal((await shutdown).completed, 1);
    assert.deepEqual(log, ["task of the last response"]);
  },
);

guardedTest(
  "serve() abandons the tasks still running at shutdownTimeout and reports them by name",
  async () => {
    const reports: DrainResult[] = [];
    let signal: AbortSignal | undefined;
    const started = Promise.withResolvers<void>();
    const server = serve({
      ...local,
      shutdownTimeout: 50,
      onShutdown: (result) => void reports.push(result),
    }, (_request, _info, tasks) => {
      tasks.addTask(() => {});
      tasks.addTask(
        defineTask(({ signal: taskSignal }) => {
          signal = taskSignal;
          started.resolve();
          return new Promise((_resolve, reject) => {
            taskSignal.addEventListener(
              "abort",
              () => reject(taskSignal.reason),
            );
          });
        }, { name: "sendNewsletter" }),
      );
      tasks.addTask(function archive() {});
      return new Response("ok");
    });
    const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    await response.text();
    // The first task has run, the second is running, the third waits.
    await started.promise;
    const result = await server.shutdown();
    assert.deepEqual(result, {
      completed: 0,
      failed: 0,
      abandoned: 2,
      abandonedTasks: { sendNewsletter: 1, archive: 1 },
    });
    assert.deepEqual(reports, [result]);
    assert.equal(signal?.aborted, true);
    assert.match(
      (signal?.reason as DOMException).message,
      /abandoned at the shutdown deadline \(50 ms\)/,
    );
    assert.equal(server.handler.stats.abandoned, 2);
  },
);

guardedTest("serve() shuts down when its signal aborts", async () => {
  const controller = new AbortController();
  const reports: DrainResult[] = [];
  const server = serve({
    ...local,
    signal: controller.signal,
    onShutdown: (result) => void reports.push(result),
  }, () => new Response("ok"));
  controller.abort();
  await server.finished;
  assert.equal(reports.length, 1);
});

guardedTest(
  "serve() reports with the default reporter when onShutdown throws",
  async () => {
    const consoleError = mock.method(console, "error", () => {});
    try {
      const server = serve({
        ...local,
        onShutdown() {
          throw new Error("reporter broken");
        },
      }, () => new Response("ok"));
      await server.shutdown();
      assert.deepEqual(
        consoleError.mock.calls.map((call) => call.arguments[0]),
        [
          "Shutdown drained every background task: 0 completed and 0 failed while draining",
          "The 'onShutdown' handler threw:",
        ],
      );
    } finally {
      consoleError.mock.restore();
    }
  },
);

Deno.test("serve() rejects options of the wrong type before it listens", async (t) => {
  const table: [string, ServeOptions, string, string][] = [
    [
      "shutdownTimeout",
      { shutdownTimeout: -1 },
      "RangeError",
      "Cannot serve as 'shutdownTimeout' must be a number >= 0: current value is -1",
    ],
    [
      "signals",
      { signals: "SIGTERM" as unknown as Deno.Signal[] },
      "TypeError",
      `Cannot serve as 'signals' must be an array: current value is "SIGTERM"`,
    ],
    [
      "onShutdown",
      { onShutdown: 1 as unknown as () => void },
      "TypeError",
      "Cannot serve as 'onShutdown' must be a function: current value is 1",
    ],
    [
      "signal",
      { signal: {} as AbortSignal },
      "TypeError",
      "Cannot serve as 'signal' must be an AbortSignal: current value is an object",
    ],
    [
      "a task option",
      { concurrency: 0 },
      "RangeError",
      "Cannot wrap handler as 'concurrency' must be an integer >= 1 or Infinity: current value is 0",
    ],
    [
      "an unknown signal",
      { signals: ["SIGNOPE" as Deno.Signal] },
      "TypeError",
      "Invalid signal: SIGNOPE",
    ],
  ];
  for (const [name, options, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(
        () => serve({ ...local, ...options }, () => new Response()),
        { name: errorName, message },
      );
    });
  }
});

Deno.test("logShutdown() writes one line, naming the abandoned tasks when there are some", () => {
  const consoleError = mock.method(console, "error", () => {});
  try {
    logShutdown({ completed: 3, failed: 1, abandoned: 0, abandonedTasks: {} });
    logShutdown({
      completed: 0,
      failed: 0,
      abandoned: 3,
      abandonedTasks: { sendEmail: 2, resize: 1 },
    });
    assert.deepEqual(consoleError.mock.calls.map((call) => call.arguments), [
      [
        "Shutdown drained every background task: 3 completed and 1 failed while draining",
      ],
      [
        "Shutdown abandoned 3 background tasks (sendEmail: 2, resize: 1); 0 completed and 0 failed while draining",
      ],
    ]);
  } finally {
    consoleError.mock.restore();
  }
});

guardedTest(
  "serve() abandons at the deadline the tasks of a handler still running",
  async () => {
    const ran: string[] = [];
    const entered = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    const server = serve(
      { ...local, shutdownTimeout: 10, onShutdown: () => {} },
      async (_request, _info, tasks) => {
        tasks.addTask(function sendInvoice() {
          ran.push("sendInvoice");
        });
        entered.resolve();
        await release.promise;
        return new Response("ok");
      },
    );
    const response = fetch(`http://127.0.0.1:${server.addr.port}/`)
      .then((answer) => answer.text(), () => "no answer");
    await entered.promise;
    const result = await server.shutdown();
    assert.deepEqual(result, {
      completed: 0,
      failed: 0,
      abandoned: 1,
      abandonedTasks: { sendInvoice: 1 },
    });
    assert.equal(server.handler.pending, 0);
    // The handler returns after the deadline: its tasks are not run.
    release.resolve();
    await response;
    await server.finished;
    assert.deepEqual(ran, []);
    assert.deepEqual(
      [server.handler.pending, server.handler.stats.abandoned],
      [0, 1],
    );
  },
);
