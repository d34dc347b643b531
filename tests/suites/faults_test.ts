// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The fault suite: every way a task, a hook, a handler or the connection can
// fail. For each, the process goes on (this file keeps running), no promise
// rejection goes unhandled (guardedTest fails the test otherwise), and the
// outcome is reported where a user would look for it.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type BackgroundTasks,
  defineTask,
  type DrainResult,
  QueueFullError,
  serve,
  type TaskInfo,
  type TaskStats,
  TaskTimeoutError,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../../mod.ts";
import { fakeServeHandlerInfo } from "../../testing.ts";
import { guardedTest, hostileValues, sentInfo } from "../_helpers/common.ts";

interface Observed {
  /** What reached `onTaskError`, with the task's info. */
  errors: [unknown, TaskInfo][];
  /** What the handler threw, if it did. */
  thrown: unknown;
  stats: TaskStats;
  console: unknown[][];
}

/** Runs one request through a wrapped handler and collects every report. */
async function observe(
  addTasks: (tasks: BackgroundTasks) => void,
  options: WithBackgroundTasksOptions = {},
  info: Deno.ServeHandlerInfo = sentInfo(),
): Promise<Observed> {
  const consoleError = mock.method(console, "error", () => {});
  try {
    const errors: [unknown, TaskInfo][] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      addTasks(tasks);
      return new Response("ok");
    }, {
      onTaskError: (error, info) => void errors.push([error, info]),
      ...options,
    });
    let thrown: unknown;
    try {
      const response = await handler(new Request("http://localhost/f"), info);
      await response.body?.cancel();
    } catch (error) {
      thrown = error;
    }
    await handler.drain();
    // Let not-awaited hook rejections reach their handlers.
    await new Promise((resolve) => setTimeout(resolve, 0));
    return {
      errors,
      thrown,
      stats: handler.stats,
      console: consoleError.mock.calls.map((call) => call.arguments),
    };
  } finally {
    consoleError.mock.restore();
  }
}

function reasons(observed: Observed): unknown[] {
  return observed.errors.map(([error]) => error);
}

guardedTest("fault: a task that throws synchronously", async () => {
  const error = new Error("sync");
  const observed = await observe((tasks) => {
    tasks.addTask(() => {
      throw error;
    });
    tasks.addTask(() => {});
  });
  assert.deepEqual(reasons(observed), [error]);
  assert.deepEqual([observed.stats.failed, observed.stats.succeeded], [1, 1]);
});

guardedTest("fault: a task that rejects", async () => {
  const error = new Error("async");
  const observed = await observe((tasks) => {
    tasks.addTask(async () => {
      await Promise.resolve();
      throw error;
    });
  });
  assert.deepEqual(reasons(observed), [error]);
});

guardedTest(
  "fault: tasks that reject with a string, undefined and null",
  async () => {
    const observed = await observe((tasks) => {
      tasks.addTask(() => Promise.reject("a string"));
      tasks.addTask(() => Promise.reject(undefined));
      tasks.addTask(() => Promise.reject(null));
    });
    assert.deepEqual(reasons(observed), ["a string", undefined, null]);
    assert.equal(observed.stats.failed, 3);
  },
);

guardedTest("fault: a task that returns a rejecting thenable", async () => {
  const error = new Error("thenable");
  const observed = await observe((tasks) => {
    tasks.addTask(() => ({
      then(_resolve: unknown, reject: (reason: unknown) => void) {
        reject(error);
      },
    }));
  });
  assert.deepEqual(reasons(observed), [error]);
});

guardedTest(
  "fault: a task that never settles ends by its timeout",
  async () => {
    const observed = await observe((tasks) => {
      tasks.addTask(function hang() {
        return new Promise(() => {});
      });
      tasks.addTask(() => {});
    }, { timeout: 20 });
    const [error] = reasons(observed);
    assert.ok(error instanceof TaskTimeoutError);
    assert.equal(error.task, "hang");
    assert.deepEqual(
      [
        observed.stats.timedOut,
        observed.stats.failed,
        observed.stats.succeeded,
      ],
      [1, 1, 1],
    );
  },
);

guardedTest("fault: an onTaskError that throws", async () => {
  const taskError = new Error("task");
  const observed = await observe((tasks) => {
    tasks.addTask(function failing() {
      throw taskError;
    });
    tasks.addTask(() => {});
  }, {
    onTaskError: () => {
      throw new Error("onTaskError broke");
    },
  });
  assert.equal(observed.stats.succeeded, 1);
  assert.deepEqual(observed.console.map((args) => args[0]), [
    'Background task "failing" at index 0 of GET /f failed:',
    `The 'onTaskError' handler threw while reporting background task "failing" at index 0 of GET /f:`,
  ]);
  assert.equal(observed.console[0]![1], taskError);
});

guardedTest("fault: hooks that throw and reject", async () => {
  const observed = await observe((tasks) => {
    tasks.addTask(function work() {});
  }, {
    onTaskStart: () => {
      throw new Error("start");
    },
    onTaskEnd: () => Promise.reject(new Error("end")),
  });
  assert.equal(observed.stats.succeeded, 1);
  assert.deepEqual(
    observed.console.map((args) => (args[1] as Error).message),
    ["start", "end"],
  );
});

guardedTest("fault: a handler that throws", async () => {
  const error = new Error("handler");
  const observed = await observe((tasks) => {
    tasks.addTask(() => {});
    throw error;
  });
  assert.equal(observed.thrown, error);
  assert.deepEqual([observed.stats.discarded, observed.stats.succeeded], [
    1,
    0,
  ]);
});

guardedTest("fault: info.completed rejects", async () => {
  const connection = fakeServeHandlerInfo();
  const observing = observe(
    (tasks) => {
      tasks.addTask(() => {
        throw new Error("reported as undelivered");
      });
    },
    {},
    connection,
  );
  connection.interrupt();
  const observed = await observing;
  assert.equal(observed.errors[0]![1].delivered, false);
});

guardedTest("fault: a pending-limit overflow", async () => {
  const refused: unknown[] = [];
  const observed = await observe((tasks) => {
    for (let i = 0; i < 5; i++) {
      try {
        tasks.addTask(() => {});
      } catch (error) {
        refused.push(error);
      }
    }
  }, { maxPending: 3 });
  assert.equal(refused.length, 2);
  assert.ok(refused.every((error) => error instanceof QueueFullError));
  assert.deepEqual([observed.stats.refused, observed.stats.succeeded], [2, 3]);
});

guardedTest("fault: a request with zero tasks", async () => {
  const observed = await observe(() => {});
  assert.deepEqual(observed.stats, {
    pending: 0,
    queued: 0,
    running: 0,
    succeeded: 0,
    failed: 0,
    timedOut: 0,
    storing: 0,
    retried: 0,
    refused: 0,
    discarded: 0,
    skipped: 0,
    deduplicated: 0,
    abandoned: 0,
    handedOver: 0,
  });
});

guardedTest("fault: 10,000 tasks in one request", async () => {
  const seen: number[] = [];
  const observed = await observe((tasks) => {
    for (let i = 0; i < 10_000; i++) {
      tasks.addTask(
        i % 3 === 0
          ? async (n: number) => {
            await Promise.resolve();
            seen.push(n);
          }
          : (n: number) => void seen.push(n),
        i,
      );
    }
  }, { timeout: 60_000, onTaskEnd() {} });
  assert.equal(observed.stats.succeeded, 10_000);
  assert.deepEqual(seen, Array.from({ length: 10_000 }, (_, i) => i));
});

guardedTest("fault: tasks that add tasks", async () => {
  const order: string[] = [];
  const observed = await observe((tasks) => {
    tasks.addTask(() => {
      order.push("parent");
      tasks.addTask(() => {
        order.push("child");
        tasks.addTask(() => order.push("grandchild"));
      });
    });
    tasks.addTask(() => order.push("sibling"));
  });
  assert.deepEqual(order, ["parent", "sibling", "child", "grandchild"]);
  assert.equal(observed.stats.succeeded, 4);
});

guardedTest("fault: shutdown while a task runs", async () => {
  const started = Promise.withResolvers<void>();
  const reports: DrainResult[] = [];
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    shutdownSignals: [],
    onListen() {},
    onShutdown: (result) => void reports.push(result),
  }, (_request, _info, tasks) => {
    tasks.addTask(async () => {
      started.resolve();
      await new Promise((resolve) => setTimeout(resolve, 30));
    });
    return new Response("ok");
  });
  const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
  await response.text();
  await started.promise;
  assert.deepEqual(await server.shutdown(), {
    succeeded: 1,
    failed: 0,
    handedOver: 0,
    abandoned: 0,
    abandonedTasks: {},
    unstored: 0,
  });
  assert.equal(reports.length, 1);
});

guardedTest("fault: shutdown past the deadline", async () => {
  const reports: DrainResult[] = [];
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    shutdownSignals: [],
    onListen() {},
    shutdownTimeout: 30,
    onShutdown: (result) => void reports.push(result),
  }, (_request, _info, tasks) => {
    tasks.addTask(function forever() {
      return new Promise(() => {});
    });
    tasks.addTask(
      defineTask(({ signal }) =>
        new Promise((_resolve, reject) => {
          signal.addEventListener("abort", () => reject(signal.reason));
        }), { name: "cooperative" }),
    );
    return new Response("ok");
  });
  const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
  await response.text();
  const result = await server.shutdown();
  assert.deepEqual(result, {
    succeeded: 0,
    failed: 0,
    handedOver: 0,
    abandoned: 2,
    abandonedTasks: { forever: 1, cooperative: 1 },
    unstored: 0,
  });
  assert.deepEqual(reports, [result]);
  assert.equal(server.handler.stats.pending, 0);
});

guardedTest(
  "a value whose then cannot be read fails the task, and the chain goes on",
  async () => {
    const revoked = () => {
      const { proxy, revoke } = Proxy.revocable({}, {});
      revoke();
      return proxy;
    };
    const ran: string[] = [];
    const reported: string[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(function returnsRevokedProxy() {
        return revoked();
      });
      tasks.addTask(function next() {
        ran.push("next");
      });
      return new Response("ok");
    }, {
      onTaskError: (error, info) => {
        reported.push(`${info.name}: ${(error as Error).name}`);
        // An onTaskError whose result cannot be awaited is survived too.
        return revoked();
      },
    });
    const logged = mock.method(console, "error", () => {});
    try {
      await (await handler(new Request("http://localhost/"), sentInfo())).body
        ?.cancel();
      await handler.drain();
    } finally {
      logged.mock.restore();
    }
    // The onTaskError that failed is reported by the default reporter.
    assert.equal(logged.mock.callCount(), 2);
    assert.deepEqual(handler.stats.failed, 1);
    assert.deepEqual(ran, ["next"]);
    assert.deepEqual(reported, ["returnsRevokedProxy: TypeError"]);
    assert.equal(handler.stats.pending, 0);
  },
);

/** A function whose `name` getter throws, as a hostile or proxied function's may. */
function withThrowingName<F extends (...args: never[]) => unknown>(fn: F): F {
  Object.defineProperty(fn, "name", {
    get() {
      throw new Error("no name");
    },
  });
  return fn;
}

guardedTest(
  "fault: tasks whose name throws or is a symbol are reported as anonymous and the chain goes on",
  async () => {
    const symbolNamed = () => {
      throw new Error("symbol");
    };
    Object.defineProperty(symbolNamed, "name", { value: Symbol("task") });
    const observed = await observe((tasks) => {
      tasks.addTask(withThrowingName(() => {
        throw new Error("getter");
      }));
      tasks.addTask(symbolNamed);
      tasks.addTask(() => {});
    }, { onTaskEnd: () => {} });
    assert.deepEqual(
      observed.errors.map(([error, info]) => [
        (error as Error).message,
        info.name,
      ]),
      [["getter", "anonymous"], ["symbol", "anonymous"]],
    );
    assert.deepEqual(
      [observed.stats.failed, observed.stats.succeeded, observed.stats.pending],
      [2, 1, 0],
    );
  },
);

guardedTest(
  "fault: a task whose name throws, refused by maxPending, gets a QueueFullError",
  async () => {
    const observed = await observe((tasks) => {
      tasks.addTask(() => {});
      tasks.addTask(withThrowingName(() => {}));
    }, { maxPending: 1 });
    assert.ok(observed.thrown instanceof QueueFullError);
    assert.equal(observed.thrown.task, "anonymous");
  },
);

guardedTest(
  "fault: a task rejecting with a value whose type cannot be read, with a timeout and hooks, is reported and the chain goes on",
  async (t) => {
    for (const { label, value } of hostileValues()) {
      await t.step(label, async () => {
        const ends: string[] = [];
        const observed = await observe((tasks) => {
          tasks.addTask(() => Promise.reject(value));
          tasks.addTask(() => {});
        }, {
          timeout: 1_000,
          onTaskStart: () => {},
          onTaskEnd: (event) => void ends.push(event.outcome),
        });
        assert.equal(observed.errors.length, 1);
        assert.equal(observed.errors[0]![0], value);
        assert.deepEqual(ends, ["failed", "succeeded"]);
        assert.deepEqual(
          [
            observed.stats.failed,
            observed.stats.timedOut,
            observed.stats.succeeded,
            observed.stats.pending,
          ],
          [1, 0, 1, 0],
        );
      });
    }
  },
);

guardedTest(
  "fault: an onTaskError returning a promise whose constructor getter throws does not stop the chain",
  async () => {
    const ran: string[] = [];
    const consoleError = mock.method(console, "error", () => {});
    try {
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(() => Promise.reject(new Error("first")));
        tasks.addTask(() => void ran.push("second"));
        return new Response("ok");
      }, {
        onTaskError() {
          const promise = Promise.resolve();
          Object.defineProperty(promise, "constructor", {
            get() {
              throw new Error("no constructor");
            },
          });
          return promise;
        },
      });
      await (await handler(new Request("http://localhost/"), sentInfo()))
        .text();
      await handler.drain();
      assert.deepEqual(ran, ["second"]);
      assert.equal(handler.stats.pending, 0);
      assert.match(
        String(consoleError.mock.calls.at(-1)?.arguments[0]),
        /'onTaskError' handler threw/,
      );
    } finally {
      consoleError.mock.restore();
    }
  },
);

guardedTest(
  "fault: info.completed rejecting with undefined counts as not delivered",
  async () => {
    const delivered: (boolean | undefined)[] = [];
    const info = fakeServeHandlerInfo();
    const completed = Promise.reject(undefined);
    completed.catch(() => {});
    const observed = await observe((tasks) => {
      tasks.addTask(() => {
        throw new Error("fails");
      });
    }, {
      onTaskStart: (event) => void delivered.push(event.delivered),
    }, { ...info, completed });
    assert.deepEqual(delivered, [false]);
    assert.equal(observed.errors[0]?.[1].delivered, false);
    const skipped = await observe(
      (tasks) => {
        tasks.addTask(() => {});
      },
      { skipUndelivered: true },
      { ...info, completed },
    );
    assert.equal(skipped.stats.skipped, 1);
  },
);

guardedTest(
  "fault: a task's promise with a then of its own is awaited as a promise, as await would",
  async () => {
    const log: string[] = [];
    const errors: unknown[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => {
        const first = new Promise<void>((resolve) => setTimeout(resolve, 5))
          .then(() => void log.push("first done"));
        // A then of its own that calls back at once, twice.
        Object.defineProperty(first, "then", {
          value(onFulfilled: (value: unknown) => void) {
            onFulfilled(undefined);
            onFulfilled(undefined);
            return first;
          },
        });
        return first;
      });
      tasks.addTask(() => void log.push("second"));
      tasks.addTask(() => {
        const third = Promise.reject(new Error("boom"));
        Object.defineProperty(third, "then", {
          value() {
            throw new Error("its then throws");
          },
        });
        return third;
      });
      tasks.addTask(() => void log.push("fourth"));
      return new Response("ok");
    }, { onTaskError: (error) => void errors.push(error) });
    await handler(new Request("http://localhost/"), sentInfo());
    await handler.drain();
    assert.deepEqual(log, ["first done", "second", "fourth"]);
    assert.deepEqual(errors.map(String), ["Error: boom"]);
  },
);
