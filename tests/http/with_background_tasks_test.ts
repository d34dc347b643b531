// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  BackgroundTasks,
  type DrainableHandler,
  type DrainOptions,
  type ExecutionOptions,
  type TaskInfo,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../../mod.ts";
import { fakeServeHandlerInfo } from "../../testing.ts";
import {
  guardedTest,
  infoWithoutCompleted,
  listen,
  sentInfo,
} from "../_helpers/common.ts";

const request = () => new Request("http://localhost/orders?token=secret");

/** Lets every pending promise reaction run, without letting a timer fire. */
async function microtasks(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

guardedTest(
  "withBackgroundTasks() starts tasks one macrotask after info.completed resolves",
  async () => {
    mock.timers.enable({ apis: ["setTimeout"] });
    try {
      const log: string[] = [];
      const connection = fakeServeHandlerInfo();
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(() => log.push("task"));
        return new Response("ok");
      });

      await handler(request(), connection);
      await microtasks();
      mock.timers.tick(0);
      assert.deepEqual(log, [], "started before the response was sent");

      connection.complete();
      await microtasks();
      assert.deepEqual(log, [], "started in the same macrotask as completed");

      mock.timers.tick(0);
      assert.deepEqual(log, ["task"]);
      await handler.drain();
    } finally {
      mock.timers.reset();
    }
  },
);

guardedTest(
  "withBackgroundTasks() runs tasks one macrotask after the response when there is no info.completed",
  async (t) => {
    const infos: [string, Deno.ServeHandlerInfo][] = [
      ["no info", undefined as unknown as Deno.ServeHandlerInfo],
      ["info without completed", infoWithoutCompleted()],
      [
        "completed that is not a promise",
        { completed: true } as unknown as Deno.ServeHandlerInfo,
      ],
    ];
    for (const [name, info] of infos) {
      await t.step(name, async () => {
        mock.timers.enable({ apis: ["setTimeout"] });
        try {
          const delivered: (boolean | undefined)[] = [];
          const handler = withBackgroundTasks((_request, _info, tasks) => {
            tasks.addTask(() => {
              throw new Error("report me");
            });
            return new Response("ok");
          }, {
            onTaskError: (_error, info) => void delivered.push(info.delivered),
          });
          handler(request(), info);
          await microtasks();
          assert.deepEqual(delivered, []);
          mock.timers.tick(0);
          await handler.drain();
          assert.deepEqual(delivered, [undefined]);
        } finally {
          mock.timers.reset();
        }
      });
    }
  },
);

guardedTest(
  "withBackgroundTasks() runs a request's tasks in order, independently of other requests",
  async () => {
    const log: string[] = [];
    const gate = Promise.withResolvers<void>();
    const bDone = Promise.withResolvers<void>();
    const handler = withBackgroundTasks(async (request, _info, tasks) => {
      const name = new URL(request.url).pathname.slice(1);
      await Promise.resolve();
      tasks.addTask(async () => {
        if (name === "a") await gate.promise;
        log.push(`${name}1`);
      });
      tasks.addTask(() => {
        log.push(`${name}2`);
        if (name === "b") bDone.resolve();
      });
      return new Response(name);
    });

    await handler(
      new Request("http://localhost/a"),
      sentInfo(),
    );
    await handler(
      new Request("http://localhost/b"),
      sentInfo(),
    );
    await bDone.promise;
    assert.deepEqual(log, ["b1", "b2"], "b waited for a");
    assert.equal(handler.stats.pending, 2);

    gate.resolve();
    await handler.drain();
    assert.deepEqual(log, ["b1", "b2", "a1", "a2"]);
  },
);

guardedTest(
  "withBackgroundTasks() discards the tasks of a handler that throws or rejects, and passes the error on",
  async (t) => {
    const error = new Error("handler failed");
    const handlers: [
      string,
      (tasks: BackgroundTasks) => Response | Promise<Response>,
    ][] = [
      ["throws", () => {
        throw error;
      }],
      ["rejects", async () => {
        await Promise.resolve();
        throw error;
      }],
    ];
    for (const [how, fail] of handlers) {
      await t.step(how, async () => {
        let ran = 0;
        let captured: BackgroundTasks | undefined;
        // Typed, as a handler that reads itself must be (an overload's
        // return type is worked out from the arguments).
        const handler: DrainableHandler = withBackgroundTasks(
          (_request, _info, tasks) => {
            captured = tasks;
            tasks.addTask(() => ran++);
            assert.equal(handler.stats.pending, 1);
            return fail(tasks);
          },
        );
        let thrown: unknown;
        try {
          await handler(request(), sentInfo());
        } catch (caught) {
          thrown = caught;
        }
        assert.equal(thrown, error);
        // Discarded when the handler failed: they can never start.
        assert.deepEqual(
          [handler.stats.pending, handler.stats.discarded, ran],
          [0, 1, 0],
        );
        // A task added later starts a chain of its own.
        captured!.addTask(() => ran++);
        await handler.drain();
        assert.equal(ran, 1);
      });
    }
  },
);

guardedTest(
  "withBackgroundTasks() discards the tasks of a handler that returns something other than a Response",
  () => {
    let ran = 0;
    const notAResponse = { status: 200 };
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => ran++);
      return notAResponse as unknown as Response;
    });
    assert.equal(handler(request(), sentInfo()), notAResponse);
    assert.deepEqual(
      [handler.stats.pending, handler.stats.discarded, ran],
      [0, 1, 0],
    );
  },
);

guardedTest(
  "withBackgroundTasks() lets a handler error reach Deno.serve exactly as without the wrapper",
  async () => {
    const error = new Error("handler failed");
    let ran = 0;
    const seen: unknown[] = [];
    const onError = (caught: unknown) => {
      seen.push(caught);
      return new Response("handled by Deno.serve", { status: 503 });
    };
    const bare = listen(() => {
      throw error;
    }, { onError });
    const wrapped = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => ran++);
      throw error;
    });
    const served = listen(wrapped, { onError });
    try {
      for (const { url } of [bare, served]) {
        const response = await fetch(url);
        assert.equal(response.status, 503);
        assert.equal(await response.text(), "handled by Deno.serve");
      }
      assert.deepEqual(seen, [error, error]);
      await wrapped.drain();
      assert.equal(ran, 0);
    } finally {
      await bare.server.shutdown();
      await served.server.shutdown();
    }
  },
);

guardedTest(
  "withBackgroundTasks() still runs the tasks when info.completed rejects, and says so",
  async () => {
    const connection = fakeServeHandlerInfo();
    const log: string[] = [];
    const reported: TaskInfo[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(function sendReceipt() {
        throw new Error("smtp down");
      });
      tasks.addTask(() => log.push("second"));
      return new Response("ok");
    }, { onTaskError: (_error, info) => void reported.push(info) });

    handler(request(), connection);
    connection.interrupt();
    await handler.drain();

    assert.deepEqual(log, ["second"]);
    assert.deepEqual(reported, [{
      name: "sendReceipt",
      attempt: 1,
      index: 0,
      request: { method: "GET", url: "http://localhost/orders?token=secret" },
      delivered: false,
    }]);
  },
);

guardedTest(
  "withBackgroundTasks() skips the tasks of an undelivered response with skipUndelivered",
  async () => {
    const connection = fakeServeHandlerInfo();
    let ran = 0;
    let captured: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      captured = tasks;
      tasks.addTask(() => ran++);
      tasks.addTask(() => ran++);
      return new Response("ok");
    }, { skipUndelivered: true });

    handler(request(), connection);
    assert.equal(handler.stats.pending, 2);
    connection.interrupt();
    await handler.drain();

    assert.equal(ran, 0);
    assert.equal(handler.stats.pending, 0);
    assert.equal(handler.stats.skipped, 2);
    // A task added later starts a chain of its own, which knows the response
    // was not delivered and is skipped too.
    captured!.addTask(() => ran++);
    await handler.drain();
    assert.equal(ran, 0);
    assert.equal(handler.stats.skipped, 3);
  },
);

guardedTest(
  "withBackgroundTasks() runs tasks added by a running task in the same chain",
  async () => {
    const log: string[] = [];
    let captured: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      captured = tasks;
      tasks.addTask(async () => {
        await Promise.resolve();
        log.push("first");
        tasks.addTask(() => log.push("added by first"));
      });
      tasks.addTask(() => log.push("second"));
      return new Response("ok");
    });

    handler(request(), sentInfo());
    await handler.drain();

    assert.deepEqual(log, ["first", "second", "added by first"]);
    assert.equal(handler.stats.pending, 0);
    captured!.addTask(() => log.push("after the chain ran"));
    await handler.drain();
    assert.deepEqual(log.at(-1), "after the chain ran");
  },
);

guardedTest(
  "withBackgroundTasks() accepts tasks added after the handler returned, until they run",
  async () => {
    const log: string[] = [];
    const connection = fakeServeHandlerInfo();
    let captured: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      captured = tasks;
      tasks.addTask(() => log.push("first"));
      return new Response("ok");
    });
    handler(request(), connection);
    captured!.addTask(() => log.push("late"));
    assert.equal(handler.stats.pending, 2);
    connection.complete();
    await handler.drain();
    assert.deepEqual(log, ["first", "late"]);
  },
);

guardedTest(
  "withBackgroundTasks() runs a task added while the response is sent in the request's chain, though the handler added none",
  async () => {
    const log: string[] = [];
    const connection = fakeServeHandlerInfo();
    let captured: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      captured = tasks;
      return new Response("ok");
    }, { onTaskStart: (event) => void log.push(`start ${event.index}`) });
    handler(
      new Request("http://localhost/stream?token=1", { method: "POST" }),
      connection,
    );
    assert.equal(handler.stats.pending, 0);
    captured!.waitUntil(Promise.resolve("flushed"));
    captured!.addTask(() => log.push("late"));
    assert.equal(handler.stats.pending, 2);
    // They wait for the response, like the tasks the handler adds.
    assert.equal(handler.stats.queued, 2);
    connection.complete();
    await handler.drain();
    assert.deepEqual(log, ["start 0", "start 1", "late"]);
    assert.equal(handler.stats.succeeded, 2);
  },
);

guardedTest(
  "withBackgroundTasks() runs a task added after the request's chain ran as a chain of its own, counted and drained",
  async () => {
    const reports: [string, number, string | undefined][] = [];
    const ran: string[] = [];
    let captured: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      captured = tasks;
      tasks.addTask(() => ran.push("first"));
      return new Response("ok");
    }, {
      onTaskError: (_error, info) =>
        void reports.push([info.name, info.index, info.request?.url]),
    });
    await (await handler(new Request("http://localhost/a"), sentInfo())).text();
    await handler.drain();
    assert.deepEqual(ran, ["first"]);

    captured!.addTask(() => ran.push("late"));
    captured!.addTask(function failing() {
      throw new Error("late failure");
    });
    assert.equal(handler.stats.pending, 2);
    const result = await handler.drain();
    assert.deepEqual(ran, ["first", "late"]);
    assert.deepEqual([result.succeeded, result.failed], [1, 1]);
    assert.deepEqual(reports, [["failing", 2, "http://localhost/a"]]);
    assert.equal(captured!.size, 3);
  },
);

guardedTest(
  "withBackgroundTasks() runs a first task that a timer adds once the response has been sent, under Deno.serve",
  async () => {
    // The handler adds no task; a timer it leaves behind adds the first one
    // once the response has completed. Deno never settles an info.completed
    // first asked for then: the chain must not wait for it.
    let later: BackgroundTasks | undefined;
    const ran: string[] = [];
    const handler = withBackgroundTasks((request, _info, tasks) => {
      later = tasks;
      void request.url;
      return new Response("ok");
    });
    const { server, url } = listen(handler);
    try {
      const response = await fetch(`${url}/orders?token=secret`);
      assert.equal(await response.text(), "ok");
    } finally {
      // Once shut down, every response has completed.
      await server.shutdown();
    }
    later!.addTask(() => ran.push("late first"));
    const drained = await handler.drain({ timeout: 5_000 });
    assert.deepEqual(ran, ["late first"]);
    assert.deepEqual([drained.succeeded, drained.abandoned], [1, 0]);
    assert.deepEqual(
      [handler.stats.pending, handler.stats.succeeded],
      [0, 1],
    );
  },
);

guardedTest(
  "withBackgroundTasks() returns the handler's Response as the same object, body untouched",
  async (t) => {
    await t.step("synchronous handler", async () => {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode("streamed"));
          controller.close();
        },
      });
      const response = new Response(body);
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(() => {});
        return response;
      });
      const returned = handler(request(), sentInfo());
      assert.equal(returned, response);
      assert.equal(response.body, body);
      assert.equal(await response.text(), "streamed");
      await handler.drain();
    });
    await t.step("asynchronous handler", async () => {
      const response = new Response("ok");
      const handler = withBackgroundTasks(async (_request, _info, tasks) => {
        await Promise.resolve();
        tasks.addTask(() => {});
        return response;
      });
      assert.equal(
        await handler(request(), sentInfo()),
        response,
      );
      await response.body?.cancel();
      await handler.drain();
    });
  },
);

guardedTest(
  "withBackgroundTasks() refuses to let the handler run its tasks itself",
  async () => {
    let ran = 0;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => ran++);
      assert.throws(() => tasks.run(), {
        name: "Error",
        message:
          "Cannot run tasks as they belong to a handler, which runs them after its response",
      });
      return new Response("ok");
    });
    await handler(request(), sentInfo());
    await handler.drain();
    assert.equal(ran, 1);
    assert.equal(handler.stats.pending, 0);
  },
);

guardedTest(
  "withBackgroundTasks() reports a failed task with the request captured while the handler ran",
  async () => {
    const reported: TaskInfo[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(function chargeCard(_cardNumber: string) {
        throw new Error("declined");
      }, "4111 1111 1111 1111");
      return new Response("accepted", { status: 202 });
    }, { onTaskError: (_error, info) => void reported.push(info) });
    const { server, url } = listen(handler);
    try {
      const response = await fetch(`${url}/checkout?token=secret`, {
        method: "POST",
        body: "{}",
      });
      assert.equal(response.status, 202);
      await response.body?.cancel();
      await handler.drain();
    } finally {
      await server.shutdown();
    }
    assert.deepEqual(reported, [{
      name: "chargeCard",
      attempt: 1,
      index: 0,
      request: { method: "POST", url: `${url}/checkout?token=secret` },
      delivered: true,
    }]);
  },
);

guardedTest(
  "withBackgroundTasks() writes failures with the default reporter, without arguments or query string",
  async () => {
    const consoleError = mock.method(console, "error", () => {});
    try {
      const error = new Error("declined");
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(() => {});
        tasks.addTask(function chargeCard(_cardNumber: string) {
          throw error;
        }, "4111 1111 1111 1111");
        return new Response("ok");
      });
      handler(
        new Request("http://localhost/checkout/42?token=secret#frag", {
          method: "POST",
        }),
        sentInfo(),
      );
      await handler.drain();
      assert.deepEqual(consoleError.mock.calls.map((call) => call.arguments), [[
        'Background task "chargeCard" at index 1 of POST /checkout/42 failed:',
        error,
      ]]);
      const printed = Deno.inspect(consoleError.mock.calls[0]!.arguments);
      assert.ok(!printed.includes("4111"), printed);
      assert.ok(!printed.includes("secret"), printed);
    } finally {
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "withBackgroundTasks() reports an onTaskError that throws with the default reporter",
  async () => {
    const consoleError = mock.method(console, "error", () => {});
    try {
      const hookError = new Error("hook failed");
      let ran = 0;
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(function failing() {
          throw new Error("task failed");
        });
        tasks.addTask(() => ran++);
        return new Response("ok");
      }, {
        onTaskError: () => {
          throw hookError;
        },
      });
      handler(request(), sentInfo());
      await handler.drain();
      assert.equal(ran, 1);
      assert.equal(consoleError.mock.callCount(), 2);
      assert.equal(consoleError.mock.calls[1]!.arguments[1], hookError);
    } finally {
      consoleError.mock.restore();
    }
  },
);

Deno.test("withBackgroundTasks() rejects a handler or options of the wrong type", async (t) => {
  const table: [string, () => unknown, string][] = [
    [
      "handler",
      // @ts-expect-error: the point is the runtime check
      () => withBackgroundTasks("handler"),
      `Cannot wrap handler as 'handler' must be a function: current value is "handler"`,
    ],
    [
      "onTaskError",
      () =>
        withBackgroundTasks(() => new Response(), {
          onTaskError: 1,
        } as unknown as WithBackgroundTasksOptions),
      "Cannot wrap handler as 'onTaskError' must be a function: current value is 1",
    ],
    [
      "skipUndelivered",
      () =>
        withBackgroundTasks(() => new Response(), {
          skipUndelivered: "yes",
        } as unknown as WithBackgroundTasksOptions),
      `Cannot wrap handler as 'skipUndelivered' must be a boolean: current value is "yes"`,
    ],
    [
      "skipUndelivered as a function",
      () =>
        withBackgroundTasks(() => new Response(), {
          skipUndelivered: () => true,
        } as unknown as WithBackgroundTasksOptions),
      "Cannot wrap handler as 'skipUndelivered' must be a boolean: current value is a function",
    ],
    [
      "null options",
      () =>
        withBackgroundTasks(
          () => new Response(),
          null as unknown as WithBackgroundTasksOptions,
        ),
      "Cannot wrap handler as 'options' must be a plain object: current value is null",
    ],
    [
      "a string as options",
      () =>
        withBackgroundTasks(
          () => new Response(),
          "fast" as unknown as WithBackgroundTasksOptions,
        ),
      `Cannot wrap handler as 'options' must be a plain object: current value is "fast"`,
    ],
    [
      "a Map as options",
      () =>
        withBackgroundTasks(
          () => new Response(),
          new Map() as unknown as WithBackgroundTasksOptions,
        ),
      "Cannot wrap handler as 'options' must be a plain object: current value is a Map",
    ],
    [
      "a misspelt option",
      () =>
        withBackgroundTasks(() => new Response(), {
          timout: 100,
        } as WithBackgroundTasksOptions),
      "Cannot wrap handler as 'timout' is not one of its options: did you mean 'timeout'?",
    ],
    [
      "the old name of onTaskError",
      () =>
        withBackgroundTasks(() => new Response(), {
          onError: () => {},
        } as WithBackgroundTasksOptions),
      "Cannot wrap handler as 'onError' is not one of its options: they are 'onTaskError', 'timeout', 'onTaskStart', 'onTaskEnd', 'telemetry', 'skipUndelivered', 'concurrency', 'maxPending', 'ambient', 'backend', 'handOver'",
    ],
    [
      "an option of serve()",
      () =>
        withBackgroundTasks(() => new Response(), {
          port: 8000,
        } as WithBackgroundTasksOptions),
      "Cannot wrap handler as 'port' is not one of its options: they are 'onTaskError', 'timeout', 'onTaskStart', 'onTaskEnd', 'telemetry', 'skipUndelivered', 'concurrency', 'maxPending', 'ambient', 'backend', 'handOver'",
    ],
    [
      "a misspelt run() option",
      () =>
        new BackgroundTasks().run(
          { onTaskErorr: () => {} } as ExecutionOptions,
        ),
      "Cannot run tasks as 'onTaskErorr' is not one of its options: did you mean 'onTaskError'?",
    ],
    [
      "a misspelt drain() option",
      () =>
        withBackgroundTasks(() => new Response()).drain(
          { timeOut: 5 } as DrainOptions,
        ),
      "Cannot drain as 'timeOut' is not one of its options: did you mean 'timeout'?",
    ],
    [
      "a drain() signal that is not one",
      () =>
        withBackgroundTasks(() => new Response()).drain({
          signal: "stop" as unknown as AbortSignal,
        }),
      `Cannot drain as 'signal' must be an AbortSignal: current value is "stop"`,
    ],
  ];
  for (const [name, call, message] of table) {
    await t.step(name, () => {
      assert.throws(call, { name: "TypeError", message });
    });
  }
});

Deno.test("withBackgroundTasks() and drain() reject numbers that are not numbers", () => {
  assert.throws(
    () =>
      withBackgroundTasks(() => new Response(), {
        concurrency: "2" as unknown as number,
      }),
    {
      name: "TypeError",
      message:
        `Cannot wrap handler as 'concurrency' must be a number: current value is "2"`,
    },
  );
  assert.throws(
    () =>
      withBackgroundTasks(() => new Response()).drain({
        timeout: "1s" as unknown as number,
      }),
    {
      name: "TypeError",
      message:
        `Cannot drain as 'timeout' must be a number: current value is "1s"`,
    },
  );
});

guardedTest(
  "withBackgroundTasks() treats an info.completed whose then cannot be read as no signal",
  async () => {
    let ran = 0;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => ran++);
      return new Response("ok");
    });
    const info = Object.defineProperty({}, "completed", {
      value: Object.defineProperty({}, "then", {
        get() {
          throw new Error("no then");
        },
      }),
    }) as Deno.ServeHandlerInfo;
    await (await handler(request(), info)).text();
    await handler.drain();
    assert.deepEqual([ran, handler.stats.pending], [1, 0]);
  },
);

const REQUEST_REFUSED =
  "as argument 0 is a Request, which Deno closes once the response is sent: read what the task needs in the handler and pass that instead";

guardedTest(
  "addTask() in a wrapped handler refuses a Request or a ReadableStream argument, with what to do instead",
  async (t) => {
    const table: [
      string,
      (request: Request, tasks: BackgroundTasks) => void,
      string,
    ][] = [
      [
        "the request",
        (request, tasks) =>
          tasks.addTask(function audit(_request: Request) {}, request),
        `Cannot add task "audit" ${REQUEST_REFUSED}`,
      ],
      [
        "the request, second of three arguments",
        (request, tasks) =>
          tasks.addTask(
            function audit(_a: number, _request: Request, _b: string) {},
            1,
            request,
            "b",
          ),
        `Cannot add task "audit" ${REQUEST_REFUSED.replace("0", "1")}`,
      ],
      [
        "the request's body",
        (request, tasks) =>
          tasks.addTask(function upload(_body: unknown) {}, request.body),
        `Cannot add task "upload" as argument 0 is a ReadableStream, which a request's body is and which cannot be read once the response is sent: read it in the handler (await request.arrayBuffer(), say) and pass that instead`,
      ],
    ];
    for (const [name, add, message] of table) {
      await t.step(name, async () => {
        const handler = withBackgroundTasks((request, _info, tasks) => {
          add(request, tasks);
          return new Response("ok");
        });
        await assert.rejects(
          async () =>
            await handler(
              new Request("http://localhost/", { method: "POST", body: "x" }),
              sentInfo(),
            ),
          { name: "TypeError", message },
        );
        assert.equal(handler.stats.pending, 0);
      });
    }
  },
);

guardedTest(
  "a wrapped handler's tasks take the request's headers and what was read from it, which stay readable after the response",
  async () => {
    const seen: unknown[] = [];
    const handler = withBackgroundTasks(async (request, _info, tasks) => {
      const form = await request.formData();
      tasks.addTask(
        (headers: Headers, data: FormData, blob: Blob) =>
          blob.text().then((text) =>
            seen.push(headers.get("x-order"), data.get("id"), text)
          ),
        request.headers,
        form,
        new Blob(["kept"]),
      );
      return new Response("ok");
    });
    const { server, url } = listen(handler);
    try {
      const body = new FormData();
      body.set("id", "42");
      const response = await fetch(url, {
        method: "POST",
        body,
        headers: { "x-order": "7" },
      });
      await response.text();
      await handler.drain();
      assert.deepEqual(seen, ["7", "42", "kept"]);
      assert.equal(handler.stats.succeeded, 1);
    } finally {
      await server.shutdown();
    }
  },
);

guardedTest(
  "a Request added past the handler, by a task, is reported through onTaskError rather than thrown",
  async () => {
    const errors: unknown[] = [];
    let kept: Request | undefined;
    const handler = withBackgroundTasks((request, _info, tasks) => {
      kept = request;
      tasks.addTask(function later() {
        tasks.addTask(function audit(_request: Request) {}, kept!);
      });
      return new Response("ok");
    }, { onTaskError: (error) => void errors.push(error) });
    await handler(new Request("http://localhost/"), sentInfo());
    await handler.drain();
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof TypeError);
    assert.equal(
      (errors[0] as TypeError).message,
      `Cannot add task "audit" ${REQUEST_REFUSED}`,
    );
    assert.equal(handler.stats.succeeded, 1);
  },
);

guardedTest(
  "a task that fails with Deno's 'Request closed' is reported with what to do instead",
  async () => {
    const consoleError = mock.method(console, "error", () => {});
    const handler = withBackgroundTasks((request, _info, tasks) => {
      // Wrapped in an object, the request passes the check at addTask().
      tasks.addTask(function audit(context: { request: Request }) {
        return context.request.headers.get("user-agent");
      }, { request });
      return new Response("ok");
    });
    const { server, url } = listen(handler);
    try {
      await (await fetch(`${url}/orders`)).text();
      await handler.drain();
    } finally {
      consoleError.mock.restore();
      await server.shutdown();
    }
    assert.equal(handler.stats.failed, 1);
    const [line, error] = consoleError.mock.calls[0]!.arguments;
    assert.equal(
      line,
      'Background task "audit" at index 0 of GET /orders failed, as Deno closes the request once the response is sent (read what the task needs in the handler and pass that instead):',
    );
    assert.equal((error as Error).message, "Request closed");
  },
);
