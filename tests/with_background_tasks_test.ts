// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type BackgroundTasks,
  type TaskInfo,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../mod.ts";
import { fakeInfo, guardedTest, listen, macrotasks } from "./_helpers.ts";

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
      const completed = Promise.withResolvers<void>();
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(() => log.push("task"));
        return new Response("ok");
      });

      await handler(request(), fakeInfo(completed.promise));
      await microtasks();
      mock.timers.tick(0);
      assert.deepEqual(log, [], "started before the response was sent");

      completed.resolve();
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
  "withBackgroundTasks() shares one timer among the chains that become ready in the same turn",
  async () => {
    const setTimeoutSpy = mock.method(globalThis, "setTimeout");
    try {
      let ran = 0;
      const completed = Promise.withResolvers<void>();
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(() => ran++);
        return new Response("ok");
      });
      for (let i = 0; i < 50; i++) {
        handler(request(), fakeInfo(completed.promise));
      }
      completed.resolve();
      await microtasks();
      assert.equal(setTimeoutSpy.mock.callCount(), 1);
      await handler.drain();
      assert.equal(ran, 50);

      // A later turn gets a timer of its own.
      handler(request(), fakeInfo(Promise.resolve()));
      await microtasks();
      assert.equal(setTimeoutSpy.mock.callCount(), 2);
      await handler.drain();
      assert.equal(ran, 51);
    } finally {
      setTimeoutSpy.mock.restore();
    }
  },
);

guardedTest(
  "withBackgroundTasks() runs tasks one macrotask after the response when there is no info.completed",
  async (t) => {
    const infos: [string, Deno.ServeHandlerInfo][] = [
      ["no info", undefined as unknown as Deno.ServeHandlerInfo],
      ["info without completed", fakeInfo()],
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
            onError: (_error, info) => void delivered.push(info.delivered),
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
      fakeInfo(Promise.resolve()),
    );
    await handler(
      new Request("http://localhost/b"),
      fakeInfo(Promise.resolve()),
    );
    await bDone.promise;
    assert.deepEqual(log, ["b1", "b2"], "b waited for a");
    assert.equal(handler.pending, 2);

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
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          captured = tasks;
          tasks.addTask(() => ran++);
          assert.equal(handler.pending, 1);
          return fail(tasks);
        });
        let thrown: unknown;
        try {
          await handler(request(), fakeInfo(Promise.resolve()));
        } catch (caught) {
          thrown = caught;
        }
        assert.equal(thrown, error);
        assert.equal(handler.pending, 0);
        await handler.drain();
        await macrotasks(2);
        assert.equal(ran, 0);
        assert.throws(() => captured!.addTask(() => ran++), {
          name: "Error",
          message:
            "Cannot add task as the handler failed and its tasks were discarded",
        });
      });
    }
  },
);

guardedTest(
  "withBackgroundTasks() discards the tasks of a handler that returns something other than a Response",
  async () => {
    let ran = 0;
    const notAResponse = { status: 200 };
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => ran++);
      return notAResponse as unknown as Response;
    });
    assert.equal(handler(request(), fakeInfo(Promise.resolve())), notAResponse);
    assert.equal(handler.pending, 0);
    await macrotasks(2);
    assert.equal(ran, 0);
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
    const completed = Promise.withResolvers<void>();
    const log: string[] = [];
    const reported: TaskInfo[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(function sendReceipt() {
        throw new Error("smtp down");
      });
      tasks.addTask(() => log.push("second"));
      return new Response("ok");
    }, { onError: (_error, info) => void reported.push(info) });

    handler(request(), fakeInfo(completed.promise));
    completed.reject(new Deno.errors.Interrupted("client went away"));
    await handler.drain();

    assert.deepEqual(log, ["second"]);
    assert.deepEqual(reported, [{
      name: "sendReceipt",
      index: 0,
      request: { method: "GET", url: "http://localhost/orders?token=secret" },
      delivered: false,
    }]);
  },
);

guardedTest(
  "withBackgroundTasks() skips the tasks of an undelivered response with skipUndelivered",
  async () => {
    const completed = Promise.withResolvers<void>();
    let ran = 0;
    let captured: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      captured = tasks;
      tasks.addTask(() => ran++);
      tasks.addTask(() => ran++);
      return new Response("ok");
    }, { skipUndelivered: true });

    handler(request(), fakeInfo(completed.promise));
    assert.equal(handler.pending, 2);
    completed.reject(new Deno.errors.Interrupted("client went away"));
    await handler.drain();

    assert.equal(ran, 0);
    assert.equal(handler.pending, 0);
    assert.throws(() => captured!.addTask(() => ran++), {
      name: "Error",
      message:
        "Cannot add task as the response was not delivered and its tasks were skipped",
    });
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

    handler(request(), fakeInfo(Promise.resolve()));
    await handler.drain();

    assert.deepEqual(log, ["first", "second", "added by first"]);
    assert.equal(handler.pending, 0);
    assert.throws(() => captured!.addTask(() => {}), {
      name: "Error",
      message: "Cannot add task as the request's tasks have already run",
    });
  },
);

guardedTest(
  "withBackgroundTasks() accepts tasks added after the handler returned, until they run",
  async () => {
    const log: string[] = [];
    const completed = Promise.withResolvers<void>();
    let captured: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      captured = tasks;
      tasks.addTask(() => log.push("first"));
      return new Response("ok");
    });
    handler(request(), fakeInfo(completed.promise));
    captured!.addTask(() => log.push("late"));
    assert.equal(handler.pending, 2);
    completed.resolve();
    await handler.drain();
    assert.deepEqual(log, ["first", "late"]);
  },
);

guardedTest(
  "withBackgroundTasks() closes the tasks of a response returned without any",
  async () => {
    let captured: BackgroundTasks | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      captured = tasks;
      return new Response("ok");
    });
    handler(request(), fakeInfo(Promise.resolve()));
    assert.throws(() => captured!.addTask(() => {}), {
      name: "Error",
      message:
        "Cannot add task as the handler returned its response without adding any",
    });
    await handler.drain();
    assert.equal(handler.pending, 0);
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
      const returned = handler(request(), fakeInfo(Promise.resolve()));
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
        await handler(request(), fakeInfo(Promise.resolve())),
        response,
      );
      await response.body?.cancel();
      await handler.drain();
    });
  },
);

guardedTest(
  "withBackgroundTasks() counts pending tasks from addTask() until they have run",
  async () => {
    const started = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    const completed = Promise.withResolvers<void>();
    const seenInHandler: number[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => {
        started.resolve();
        return gate.promise;
      });
      tasks.addTask(() => {});
      seenInHandler.push(handler.pending);
      return new Response("ok");
    });
    assert.equal(handler.pending, 0);
    handler(request(), fakeInfo(completed.promise));
    assert.deepEqual(seenInHandler, [2]);
    assert.equal(handler.pending, 2, "waiting for the response");

    completed.resolve();
    await started.promise;
    assert.equal(handler.pending, 2, "the first task is running");

    gate.resolve();
    await handler.drain();
    assert.equal(handler.pending, 0);
  },
);

guardedTest(
  "drain() waits for the chains scheduled so far, not for later ones",
  async () => {
    const gates = [
      Promise.withResolvers<void>(),
      Promise.withResolvers<void>(),
    ];
    const done: number[] = [];
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const id = Number(new URL(request.url).searchParams.get("id"));
      tasks.addTask(async () => {
        await gates[id]!.promise;
        done.push(id);
      });
      return new Response("ok");
    });

    assert.equal(await Promise.race([handler.drain(), "pending"]), undefined);

    handler(new Request("http://localhost/?id=0"), fakeInfo(Promise.resolve()));
    const firstDrain = handler.drain();
    handler(new Request("http://localhost/?id=1"), fakeInfo(Promise.resolve()));

    gates[0]!.resolve();
    await firstDrain;
    assert.deepEqual(done, [0]);
    assert.equal(handler.pending, 1);

    gates[1]!.resolve();
    await handler.drain();
    assert.deepEqual(done, [0, 1]);
  },
);

guardedTest(
  "withBackgroundTasks() leaves tasks run by the handler itself to that run",
  async () => {
    const log: string[] = [];
    const handler = withBackgroundTasks(async (_request, _info, tasks) => {
      tasks.addTask(() => log.push("task"));
      await tasks.run();
      log.push("response");
      return new Response("ok");
    });
    await handler(request(), fakeInfo(Promise.resolve()));
    await handler.drain();
    await macrotasks(2);
    assert.deepEqual(log, ["task", "response"]);
    assert.equal(handler.pending, 0);
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
    }, { onError: (_error, info) => void reported.push(info) });
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
        fakeInfo(Promise.resolve()),
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
  "withBackgroundTasks() reports an onError that throws with the default reporter",
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
        onError: () => {
          throw hookError;
        },
      });
      handler(request(), fakeInfo(Promise.resolve()));
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
      "onError",
      () =>
        withBackgroundTasks(() => new Response(), {
          onError: 1,
        } as unknown as WithBackgroundTasksOptions),
      "Cannot wrap handler as 'onError' must be a function: current value is 1",
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
  ];
  for (const [name, call, message] of table) {
    await t.step(name, () => {
      assert.throws(call, { name: "TypeError", message });
    });
  }
});
