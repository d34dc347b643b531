// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What a wrapped handler's controls tell and do: stats, and drain() with its
// deadlines.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { defineTask, withBackgroundTasks } from "../../mod.ts";
import { fakeServeHandlerInfo } from "../../testing.ts";
import { guardedTest, microtasks, sentInfo } from "../_helpers/common.ts";

const request = () => new Request("http://localhost/orders?token=secret");

guardedTest(
  "withBackgroundTasks() counts pending tasks from addTask() until they have run",
  async () => {
    const started = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    const connection = fakeServeHandlerInfo();
    const seenInHandler: number[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => {
        started.resolve();
        return gate.promise;
      });
      tasks.addTask(() => {});
      seenInHandler.push(handler.stats.pending);
      return new Response("ok");
    });
    assert.equal(handler.stats.pending, 0);
    handler(request(), connection);
    assert.deepEqual(seenInHandler, [2]);
    assert.equal(handler.stats.pending, 2, "waiting for the response");

    connection.complete();
    await started.promise;
    assert.equal(handler.stats.pending, 2, "the first task is running");

    gate.resolve();
    await handler.drain();
    assert.equal(handler.stats.pending, 0);
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

    assert.deepEqual(await Promise.race([handler.drain(), "pending"]), {
      succeeded: 0,
      failed: 0,
      handedOver: 0,
      abandoned: 0,
      abandonedTasks: {},
      unstored: 0,
    });

    handler(new Request("http://localhost/?id=0"), sentInfo());
    const firstDrain = handler.drain();
    handler(new Request("http://localhost/?id=1"), sentInfo());

    gates[0]!.resolve();
    await firstDrain;
    assert.deepEqual(done, [0]);
    assert.equal(handler.stats.pending, 1);

    gates[1]!.resolve();
    await handler.drain();
    assert.deepEqual(done, [0, 1]);
  },
);

guardedTest("stats counts what happened to every task", async () => {
  const consoleError = mock.method(console, "error", () => {});
  try {
    const connection = fakeServeHandlerInfo();
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const kind = new URL(request.url).pathname;
      if (kind === "/ok") tasks.addTask(() => {});
      if (kind === "/fail") tasks.addTask(() => Promise.reject(new Error("x")));
      if (kind === "/slow") tasks.addTask(() => new Promise(() => {}));
      if (kind === "/retry") {
        tasks.addTask(
          defineTask(({ attempt }) => {
            if (attempt === 1) throw new Error("once");
          }, { retry: { minDelay: 1, maxDelay: 1 } }),
        );
      }
      if (kind === "/throw") {
        tasks.addTask(() => {});
        throw new Error("handler failed");
      }
      if (kind === "/full") {
        for (let i = 0; i < 10; i++) {
          try {
            tasks.addTask(() => {});
          } catch {
            // Refused: counted.
          }
        }
      }
      if (kind === "/gone") tasks.addTask(() => {});
      return new Response("ok");
    }, { timeout: 20, maxPending: 6, skipUndelivered: true });
    const call = (path: string, info = sentInfo()) => {
      try {
        handler(new Request(`http://localhost${path}`), info);
      } catch {
        // The handler's own error.
      }
    };
    for (const path of ["/ok", "/fail", "/slow", "/retry", "/throw"]) {
      call(path);
    }
    call("/gone", connection);
    call("/full");
    connection.interrupt();
    await handler.drain();
    assert.deepEqual(handler.stats, {
      pending: 0,
      queued: 0,
      running: 0,
      succeeded: 3,
      failed: 2,
      timedOut: 1,
      storing: 0,
      retried: 1,
      refused: 9,
      discarded: 1,
      skipped: 1,
      deduplicated: 0,
      abandoned: 0,
      handedOver: 0,
    });
  } finally {
    consoleError.mock.restore();
  }
});

guardedTest(
  "drain() with a timeout abandons what is still pending, aborting the running task's signal",
  async () => {
    let signal: AbortSignal | undefined;
    const log: string[] = [];
    const ends: string[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => log.push("before"));
      tasks.addTask(
        defineTask(({ signal: taskSignal }) => {
          signal = taskSignal;
          return new Promise(() => {});
        }, { name: "hang" }),
      );
      tasks.addTask(function never() {
        log.push("never");
      });
      return new Response("ok");
    }, {
      onTaskEnd: (event) => void ends.push(`${event.name} ${event.outcome}`),
    });
    handler(request(), sentInfo());
    handler(request(), sentInfo());

    const result = await handler.drain({ timeout: 30 });

    assert.deepEqual(result, {
      succeeded: 2,
      failed: 0,
      handedOver: 0,
      abandoned: 4,
      abandonedTasks: { hang: 2, never: 2 },
      unstored: 0,
    });
    assert.equal(signal?.aborted, true);
    assert.equal((signal?.reason as DOMException).name, "AbortError");
    assert.deepEqual(log, ["before", "before"]);
    assert.deepEqual(ends.filter((end) => end.startsWith("hang")), [
      "hang abandoned",
      "hang abandoned",
    ]);
    assert.equal(handler.stats.pending, 0);
    assert.deepEqual(
      [handler.stats.abandoned, handler.stats.running, handler.stats.queued],
      [4, 0, 0],
    );
  },
);

guardedTest(
  "a plain task that settles after its chain was abandoned lets none of the chain's later tasks run",
  async () => {
    const release = Promise.withResolvers<void>();
    const log: string[] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(async function slow() {
        await release.promise;
        log.push("slow");
      });
      tasks.addTask(function later() {
        log.push("later");
      });
      return new Response("ok");
    });
    handler(request(), sentInfo());

    const result = await handler.drain({ timeout: 10 });
    assert.deepEqual(result.abandonedTasks, { slow: 1, later: 1 });
    release.resolve();
    await microtasks();

    assert.deepEqual(log, ["slow"]);
    assert.deepEqual(
      [handler.stats.succeeded, handler.stats.abandoned, handler.stats.pending],
      [0, 2, 0],
    );
  },
);

guardedTest(
  "drain() gives up at once when its signal aborts, even on chains not started",
  async () => {
    const connection = fakeServeHandlerInfo();
    let ran = 0;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => ran++);
      return new Response("ok");
    });
    handler(request(), connection);
    const controller = new AbortController();
    const draining = handler.drain({ signal: controller.signal });
    controller.abort(new Error("now"));
    assert.deepEqual(await draining, {
      succeeded: 0,
      failed: 0,
      handedOver: 0,
      abandoned: 1,
      abandonedTasks: { anonymous: 1 },
      unstored: 0,
    });
    // Its response is sent now: with the clock in the test's hands, every
    // timer that could start it fires, and none does.
    mock.timers.enable({ apis: ["setTimeout"] });
    try {
      connection.complete();
      await microtasks();
      mock.timers.runAll();
    } finally {
      mock.timers.reset();
    }
    assert.equal(ran, 0, "an abandoned chain started after all");
    assert.deepEqual([handler.stats.pending, handler.stats.abandoned], [0, 1]);
  },
);

guardedTest(
  "drain() wakes a task waiting to retry when it abandons it",
  async () => {
    let attempts = 0;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(
        defineTask(() => {
          attempts++;
          throw new Error("fails");
        }, { name: "flaky", retry: { maxAttempts: 5, minDelay: 60_000 } }),
      );
      return new Response("ok");
    }, { onTaskError: () => {} });
    handler(request(), sentInfo());
    const result = await handler.drain({ timeout: 20 });
    assert.equal(attempts, 1);
    assert.deepEqual(result.abandonedTasks, { flaky: 1 });
    // The sanitizer fails the test if the 60-second retry timer is left behind.
  },
);

Deno.test("drain() takes an Infinity timeout, its default", async () => {
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(() => {});
    return new Response();
  });
  await (await handler(request(), sentInfo())).body?.cancel();
  assert.deepEqual(await handler.drain({ timeout: Infinity }), {
    succeeded: 1,
    failed: 0,
    handedOver: 0,
    abandoned: 0,
    abandonedTasks: {},
    unstored: 0,
  });
});

Deno.test("drain() rejects a negative timeout", () => {
  const handler = withBackgroundTasks(() => new Response());
  assert.throws(() => handler.drain({ timeout: -1 }), {
    name: "RangeError",
    message:
      "Cannot drain as 'timeout' must be a number >= 0 or Infinity: current value is -1",
  });
});

guardedTest(
  "drain() abandons chains still waiting for a slot, which then never start",
  async () => {
    let ran = 0;
    let later = false;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      if (later) tasks.addTask(() => void ran++);
      else {
        tasks.addTask(() => {
          ran++;
          return new Promise(() => {});
        });
      }
      return new Response("ok");
    }, { concurrency: 1 });
    for (let i = 0; i < 3; i++) handler(request(), sentInfo());
    const result = await handler.drain({ timeout: 20 });
    assert.equal(result.abandoned, 3);
    assert.equal(ran, 1);
    // Slots go in order: a chain still queued would start before a later
    // request's, which runs once the slot the first held is free.
    later = true;
    handler(request(), sentInfo());
    assert.equal((await handler.drain()).succeeded, 1);
    assert.equal(ran, 2);
    assert.deepEqual(
      [handler.stats.running, handler.stats.pending, handler.stats.abandoned],
      [0, 0, 3],
    );
  },
);

guardedTest(
  "drain() clears the timeout of a task it abandons mid-attempt",
  async () => {
    let signal: AbortSignal | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(
        defineTask(({ signal: taskSignal }) => {
          signal = taskSignal;
          return new Promise(() => {});
        }, { name: "slow", timeout: 60_000 }),
      );
      return new Response("ok");
    });
    handler(request(), sentInfo());
    const result = await handler.drain({ timeout: 20 });
    assert.deepEqual(result.abandonedTasks, { slow: 1 });
    assert.equal(signal?.aborted, true);
    // The sanitizer fails the test if the 60-second timeout timer is left behind.
  },
);

guardedTest(
  "drain() with a signal already aborted gives up at once",
  async () => {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => new Promise(() => {}));
      return new Response("ok");
    });
    handler(request(), sentInfo());
    const reason = new Error("stop now");
    const result = await handler.drain({ signal: AbortSignal.abort(reason) });
    assert.equal(result.abandoned, 1);
  },
);

guardedTest(
  "overlapping drains each count only the chains they wait for",
  async () => {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(function hang() {
        return new Promise(() => {});
      });
      return new Response("ok");
    });
    handler(request(), sentInfo());
    const first = handler.drain();
    handler(request(), sentInfo());
    const second = await handler.drain({ timeout: 20 });
    assert.deepEqual(second, {
      succeeded: 0,
      failed: 0,
      handedOver: 0,
      abandoned: 2,
      abandonedTasks: { hang: 2 },
      unstored: 0,
    });
    assert.deepEqual(await first, {
      succeeded: 0,
      failed: 0,
      handedOver: 0,
      abandoned: 1,
      abandonedTasks: { hang: 1 },
      unstored: 0,
    });
  },
);
