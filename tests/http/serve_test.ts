// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type BackgroundTasks,
  defineTask,
  type DrainResult,
  logShutdown,
  serve,
  type ServeOptions,
  withBackgroundTasks,
} from "../../mod.ts";
import { guardedTest } from "../_helpers/common.ts";

const local = {
  hostname: "127.0.0.1",
  port: 0,
  shutdownSignals: [],
  onListen() {},
} satisfies ServeOptions;

guardedTest(
  "serve() passes the tasks to the handler and shutdown() drains them",
  async () => {
    const log: string[] = [];
    const reports: DrainResult[] = [];
    // The tasks end only once the shutdown has begun: they are its to drain.
    const release = Promise.withResolvers<void>();
    const server = serve(
      { ...local, onShutdown: (result) => void reports.push(result) },
      (request, info, tasks) => {
        assert.ok(info.remoteAddr);
        tasks.addTask(async (path: string) => {
          await release.promise;
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
    assert.equal(server.handler.stats.pending, 2);

    const shuttingDown = server.shutdown();
    release.resolve();
    const result = await shuttingDown;

    assert.deepEqual(log.sort(), ["/a", "/b"]);
    const drained = {
      succeeded: 2,
      failed: 0,
      handedOver: 0,
      abandoned: 0,
      abandonedTasks: {},
      unstored: 0,
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
    assert.equal((await shutdown).succeeded, 1);
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
      succeeded: 0,
      failed: 0,
      handedOver: 0,
      abandoned: 2,
      abandonedTasks: { sendNewsletter: 1, archive: 1 },
      unstored: 0,
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
          "Shutdown drained every background task: 0 succeeded and 0 failed while draining",
          "The 'onShutdown' handler threw:",
        ],
      );
    } finally {
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "serve() never blames an onShutdown that was not given when the console fails",
  async () => {
    let calls = 0;
    const consoleError = mock.method(console, "error", () => {
      if (++calls === 1) throw new Error("EPIPE");
    });
    try {
      // No onShutdown: the default reporter, whose console fails once.
      const server = serve(local, () => new Response("ok"));
      await server.shutdown();
      assert.equal(calls, 1);
    } finally {
      consoleError.mock.restore();
    }
  },
);

Deno.test("serve() takes the call shapes Deno.serve takes, and names them when given another", async (t) => {
  const handler = (
    _request: Request,
    _info: unknown,
    tasks: BackgroundTasks,
  ) => {
    tasks.addTask(() => {});
    return new Response("ok");
  };
  for (
    const [name, start] of [
      ["serve(options, handler)", () => serve(local, handler)],
      ["serve({ ...options, handler })", () => serve({ ...local, handler })],
    ] as const
  ) {
    await t.step(name, async () => {
      const server = start();
      const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
      assert.equal(await response.text(), "ok");
      await server.shutdown();
      assert.equal(server.handler.stats.succeeded, 1);
    });
  }
  const shapes =
    "serve(handler), serve(options, handler) or serve({ ...options, handler })";
  const refused: [string, () => unknown, string][] = [
    [
      "no handler",
      () => serve({ ...local } as unknown as ServeOptions & { handler: never }),
      `Cannot serve as it needs a handler: call it as ${shapes}`,
    ],
    [
      "two handlers",
      () =>
        (serve as (options: unknown, handler: unknown) => unknown)(
          { ...local, handler },
          handler,
        ),
      `Cannot serve as it was given two handlers, in 'options' and as 'handler': call it as ${shapes}`,
    ],
    [
      "undefined options",
      () =>
        (serve as (options: unknown, handler: unknown) => unknown)(
          undefined,
          handler,
        ),
      "Cannot serve as 'options' must be an object: current value is undefined; call it as serve(handler), serve(options, handler) or serve({ ...options, handler })",
    ],
    [
      "a handler that is not a function",
      () => serve({ ...local, handler: "app" as unknown as typeof handler }),
      `Cannot serve as 'handler' must be a function: current value is "app"`,
    ],
    [
      "task options beside an already wrapped handler",
      () => serve({ ...local, maxPending: 10 }, withBackgroundTasks(handler)),
      "Cannot serve as 'maxPending' belongs to the handler's own withBackgroundTasks(): the handler given was made by it",
    ],
  ];
  for (const [name, call, message] of refused) {
    await t.step(name, () => {
      assert.throws(call, { name: "TypeError", message });
    });
  }
});

Deno.test("logShutdown() writes one line, naming the abandoned tasks when there are some", () => {
  const consoleError = mock.method(console, "error", () => {});
  try {
    logShutdown({
      succeeded: 3,
      failed: 1,
      handedOver: 0,
      abandoned: 0,
      abandonedTasks: {},
      unstored: 0,
    });
    logShutdown({
      succeeded: 0,
      failed: 0,
      handedOver: 0,
      abandoned: 3,
      abandonedTasks: { sendEmail: 2, resize: 1 },
      unstored: 0,
    });
    logShutdown({
      succeeded: 0,
      failed: 0,
      handedOver: 4,
      abandoned: 2,
      abandonedTasks: { sendEmail: 2 },
      unstored: 2,
      backend: {
        state: "down",
        since: new Date("2026-12-01T10:00:00Z"),
        error: "connect ECONNREFUSED 127.0.0.1:6379",
      },
    });
    logShutdown({
      succeeded: 1,
      failed: 0,
      handedOver: 0,
      abandoned: 1,
      abandonedTasks: { resize: 1 },
      unstored: 0,
    });
    assert.deepEqual(consoleError.mock.calls.map((call) => call.arguments), [
      [
        "Shutdown drained every background task: 3 succeeded and 1 failed while draining",
      ],
      [
        "Shutdown abandoned 3 background tasks (sendEmail: 2, resize: 1); 0 succeeded and 0 failed while draining",
      ],
      [
        "Shutdown abandoned 2 background tasks (sendEmail: 2), 2 of them not yet stored by the backend, down since 2026-12-01T10:00:00.000Z (connect ECONNREFUSED 127.0.0.1:6379); 0 succeeded and 0 failed while draining, 4 handed to the backend",
      ],
      [
        "Shutdown abandoned 1 background task (resize: 1); 1 succeeded and 0 failed while draining",
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
      succeeded: 0,
      failed: 0,
      handedOver: 0,
      abandoned: 1,
      abandonedTasks: { sendInvoice: 1 },
      unstored: 0,
    });
    assert.equal(server.handler.stats.pending, 0);
    // The handler returns after the deadline: its tasks are not run.
    release.resolve();
    await response;
    await server.finished;
    assert.deepEqual(ran, []);
    assert.deepEqual(
      [server.handler.stats.pending, server.handler.stats.abandoned],
      [0, 1],
    );
  },
);

guardedTest(
  "serve() abandons at its deadline the keyed tasks still waiting, behind a running duplicate or for their delay, and names them",
  async () => {
    const started = Promise.withResolvers<void>();
    const reindex = defineTask(({ signal }, _user: string, n: number) => {
      if (n > 0) return;
      started.resolve();
      return new Promise((_resolve, reject) => {
        signal.addEventListener("abort", () => reject(signal.reason));
      });
    }, { name: "reindex", key: (user) => user });
    const digest = defineTask((_context, _user: string) => {}, {
      name: "digest",
      key: (user) => user,
      delay: 60_000,
    });
    const server = serve(
      { ...local, shutdownTimeout: 50 },
      (request, _info, tasks) => {
        const n = Number(new URL(request.url).searchParams.get("n"));
        tasks.addTask(reindex, "u42", n);
        if (n === 1) tasks.addTask(digest, "u42");
        return new Response("ok");
      },
    );
    const url = `http://127.0.0.1:${server.addr.port}/`;
    await (await fetch(`${url}?n=0`)).text();
    await started.promise;
    await (await fetch(`${url}?n=1`)).text();
    const result = await server.shutdown();
    assert.deepEqual(
      [result.abandoned, result.abandonedTasks],
      [3, { reindex: 2, digest: 1 }],
    );
    assert.deepEqual(
      [server.handler.stats.abandoned, server.handler.stats.pending],
      [3, 0],
    );
  },
);
