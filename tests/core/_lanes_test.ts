// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Keyed tasks in this process: each key's lane runs its duplicates one at a
// time in the order they were added, across requests; "skip" and "replace"
// keep one waiting at most; `delay` holds a task back from its add (a
// replacement starts the wait again); a keyed task leaves its request's
// chain, and still starts only once its response has been sent; and the
// runner's limits, timeouts, retries, hooks, stats and drains hold for it.

import assert from "node:assert/strict";
import {
  defineTask,
  type DefineTaskOptions,
  QueueFullError,
  type TaskEndEvent,
  TaskTimeoutError,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../../mod.ts";
import { callHandler, fakeServeHandlerInfo } from "../../testing.ts";
import { guardedTest, macrotasks, sentInfo } from "../_helpers/common.ts";

/**
 * A handler whose requests add what `add` says, called with the request's
 * query; its onTaskError and onTaskEnd collect what they are told.
 */
function keyedHandler(
  add: (
    tasks: Parameters<Parameters<typeof withBackgroundTasks>[0]>[2],
    query: URLSearchParams,
  ) => void,
  options: WithBackgroundTasksOptions = {},
) {
  const errors: unknown[] = [];
  const ends: TaskEndEvent[] = [];
  const handler = withBackgroundTasks((request, _info, tasks) => {
    add(tasks, new URL(request.url).searchParams);
    return new Response("ok");
  }, {
    onTaskError: (error) => void errors.push(error),
    onTaskEnd: (event) => void ends.push(event),
    ...options,
  });
  /** Handles a request at once, its response counted as sent. */
  const request = (query: string) =>
    handler(new Request(`http://localhost/?${query}`), sentInfo());
  return { handler, errors, ends, request };
}

/** A keyed task that records its calls, and waits for `gates[n]` if set. */
function recorder(options: DefineTaskOptions<[string, number]>) {
  const runs: string[] = [];
  const started = new Map<number, PromiseWithResolvers<void>>();
  const gates = new Map<number, PromiseWithResolvers<void>>();
  const task = defineTask(async (_context, key: string, n: number) => {
    runs.push(`${key}${n}`);
    started.get(n)?.resolve();
    await gates.get(n)?.promise;
  }, { key: (key) => key, ...options });
  /** Makes task `n` wait, once it starts, until the returned gate opens. */
  function hold(n: number): { started: Promise<void>; open(): void } {
    const start = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    started.set(n, start);
    gates.set(n, gate);
    return { started: start.promise, open: () => gate.resolve() };
  }
  return { task, runs, hold };
}

guardedTest(
  'a burst of 20 "replace" adds with a delay for one key, over 20 requests, runs once with the last arguments',
  async () => {
    const { task, runs } = recorder({
      name: "reindex",
      onDuplicate: "replace",
      delay: 50,
    });
    const { handler, errors, ends, request } = keyedHandler((tasks, query) =>
      tasks.addTask(task, "u", Number(query.get("v")))
    );
    for (let v = 1; v <= 20; v++) request(`v=${v}`);
    assert.deepEqual(
      [handler.stats.pending, handler.stats.deduplicated],
      [1, 19],
    );
    await handler.drain();
    assert.deepEqual(runs, ["u20"]);
    const deduplicated = ends.filter((end) => end.outcome === "deduplicated");
    assert.equal(deduplicated.length, 19);
    for (const event of deduplicated) {
      assert.deepEqual(
        [
          event.name,
          event.index,
          event.attempt,
          event.duration,
          event.error,
          event.willRetry,
        ],
        ["reindex", 0, 0, 0, undefined, false],
      );
      assert.equal(event.request?.method, "GET");
    }
    assert.deepEqual(errors, []);
    assert.deepEqual(
      [
        handler.stats.succeeded,
        handler.stats.deduplicated,
        handler.stats.pending,
      ],
      [1, 19, 0],
    );
  },
);

guardedTest(
  'under "replace", each replacement starts the delay again: the last one starts its delay after it was added',
  async () => {
    const startedAt: number[] = [];
    const task = defineTask((_context, _key: string, n: number) => {
      startedAt[n] = performance.now();
    }, {
      name: "debounced",
      key: (key) => key,
      onDuplicate: "replace",
      delay: 1_000,
    });
    const { handler, request } = keyedHandler((tasks, query) =>
      tasks.addTask(task, "k", Number(query.get("n")))
    );
    request("n=0");
    // A pause well within the delay, between two adds of the burst.
    await new Promise((resolve) => setTimeout(resolve, 20));
    const added = performance.now();
    request("n=1");
    await handler.drain();
    assert.equal(startedAt[0], undefined);
    assert.ok(
      startedAt[1]! - added >= 1_000,
      `started ${startedAt[1]! - added} ms after it was added`,
    );
  },
);

guardedTest(
  '"queue" runs the duplicates of a key one at a time, in the order they were added across requests, other keys alongside under concurrency: 8',
  async () => {
    const active = new Map<string, number>();
    let running = 0;
    let mostRunning = 0;
    let mostOfOneKey = 0;
    const order = new Map<string, number[]>();
    const job = defineTask(async (_context, key: string, n: number) => {
      const mine = (active.get(key) ?? 0) + 1;
      active.set(key, mine);
      mostOfOneKey = Math.max(mostOfOneKey, mine);
      mostRunning = Math.max(mostRunning, ++running);
      order.set(key, [...order.get(key) ?? [], n]);
      for (let turn = 0; turn < 3; turn++) {
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      running--;
      active.set(key, active.get(key)! - 1);
    }, { name: "job", key: (key) => key });
    const { handler, errors } = keyedHandler((tasks, query) => {
      const n = Number(query.get("n"));
      tasks.addTask(job, `key${n % 4}`, n);
      tasks.addTask(job, `key${(n + 1) % 4}`, n);
    }, { concurrency: 8 });
    // Requests answered one after another, their tasks starting meanwhile.
    for (let n = 0; n < 24; n++) await callHandler(handler, `/?n=${n}`);
    await handler.drain();
    assert.equal(mostOfOneKey, 1);
    assert.ok(
      mostRunning > 1 && mostRunning <= 8,
      `${mostRunning} ran at once`,
    );
    for (const [key, seen] of order) {
      assert.deepEqual(seen, seen.toSorted((a, b) => a - b), key);
      assert.equal(seen.length, 12, key);
    }
    assert.deepEqual(errors, []);
    assert.deepEqual([handler.stats.succeeded, handler.stats.pending], [48, 0]);
  },
);

guardedTest(
  '"skip" under a flood keeps one waiting per key while one runs, counts the rest as deduplicated, and reports no error',
  async () => {
    const { task, runs, hold } = recorder({
      name: "warm",
      onDuplicate: "skip",
    });
    const first = hold(0);
    const { handler, errors, ends, request } = keyedHandler((tasks, query) =>
      tasks.addTask(task, query.get("key")!, Number(query.get("n")))
    );
    request("key=a&n=0");
    await first.started;
    for (let n = 1; n <= 100; n++) request(`key=${n % 2 ? "a" : "b"}&n=${n}`);
    // "a": 0 runs, 1 waits, 49 skipped; "b": 2 waits (then runs), 49 skipped.
    assert.equal(handler.stats.deduplicated, 98);
    first.open();
    await handler.drain();
    assert.deepEqual(runs.toSorted(), ["a0", "a1", "b2"]);
    assert.deepEqual(errors, []);
    assert.equal(
      ends.filter((end) => end.outcome === "deduplicated").length,
      98,
    );
    assert.deepEqual(
      [
        handler.stats.succeeded,
        handler.stats.deduplicated,
        handler.stats.failed,
      ],
      [3, 98, 0],
    );
  },
);

guardedTest(
  '"replace" takes the place of a duplicate waiting for a slot, and waits behind one that runs',
  async () => {
    const { task, runs, hold } = recorder({
      name: "sync",
      onDuplicate: "replace",
    });
    const first = hold(0);
    const blocker = Promise.withResolvers<void>();
    const { handler, request } = keyedHandler((tasks, query) => {
      const n = Number(query.get("n"));
      if (n < 0) tasks.addTask(() => blocker.promise);
      else tasks.addTask(task, query.get("key")!, n);
    }, { concurrency: 2 });
    request("key=a&n=0");
    await first.started;
    request("n=-1");
    // Both slots are taken: "b" waits for one, and is replaced there.
    request("key=b&n=1");
    await macrotasks(3);
    assert.deepEqual([handler.stats.running, handler.stats.queued], [2, 1]);
    request("key=b&n=2");
    request("key=a&n=3");
    request("key=a&n=4");
    blocker.resolve();
    first.open();
    await handler.drain();
    assert.deepEqual(runs.toSorted(), ["a0", "a4", "b2"]);
    assert.equal(handler.stats.deduplicated, 2);
  },
);

guardedTest(
  "a keyed task neither holds up its request's other tasks nor waits for them",
  async () => {
    const { task, runs, hold } = recorder({ name: "reindex" });
    const running = hold(0);
    const slow = Promise.withResolvers<void>();
    const log: string[] = [];
    const plainDone = Promise.withResolvers<void>();
    const { handler, request } = keyedHandler((tasks, query) => {
      const n = Number(query.get("n"));
      if (n === 1) tasks.addTask(() => slow.promise);
      tasks.addTask((line: string) => log.push(line), `before ${n}`);
      tasks.addTask(task, "u", n);
      tasks.addTask((line: string) => log.push(line), `after ${n}`);
      if (n === 2) tasks.addTask(() => plainDone.resolve());
    });
    request("n=0");
    await running.started;
    // Its keyed task waits behind the running one: its other tasks go on.
    request("n=2");
    await plainDone.promise;
    assert.deepEqual(log, ["before 0", "after 0", "before 2", "after 2"]);
    assert.deepEqual(runs, ["u0"]);
    // Its keyed task does not wait for the slow task added before it.
    const last = hold(1);
    request("n=1");
    running.open();
    await last.started;
    assert.deepEqual(runs, ["u0", "u2", "u1"]);
    assert.deepEqual(log.slice(4), []);
    last.open();
    slow.resolve();
    await handler.drain();
    assert.deepEqual(log.slice(4), ["before 1", "after 1"]);
    assert.equal(handler.stats.succeeded, 11);
  },
);

guardedTest(
  "a keyed task starts only once its own request's response has been sent, and is skipped with skipUndelivered when it was not delivered",
  async () => {
    const { task, runs } = recorder({ name: "notify" });
    const handler = withBackgroundTasks((request, _info, tasks) => {
      tasks.addTask(task, new URL(request.url).pathname, 0);
      return new Response("ok");
    }, { skipUndelivered: true });
    const sent = fakeServeHandlerInfo();
    const lost = fakeServeHandlerInfo();
    handler(new Request("http://localhost/sent"), sent);
    handler(new Request("http://localhost/lost"), lost);
    await macrotasks(3);
    assert.deepEqual(runs, []);
    assert.equal(handler.stats.queued, 2);
    sent.complete();
    lost.interrupt();
    await handler.drain();
    assert.deepEqual(runs, ["/sent0"]);
    assert.deepEqual([handler.stats.succeeded, handler.stats.skipped], [1, 1]);
  },
);

guardedTest(
  "a keyed task added after the response runs in its lane too: from a timer, from a running task, and to a chain that has ended",
  async () => {
    const { task, runs } = recorder({ name: "late" });
    const added = Promise.withResolvers<void>();
    const { handler, errors } = keyedHandler((tasks) => {
      tasks.addTask(() => {
        tasks.addTask(task, "from a task", 1);
      });
      setTimeout(() => {
        tasks.addTask(task, "from a timer", 2);
        added.resolve();
      }, 0);
    });
    const { tasks: results } = await callHandler(handler, "/");
    await results;
    await added.promise;
    await handler.drain();
    assert.deepEqual(runs.toSorted(), ["from a task1", "from a timer2"]);
    assert.deepEqual(errors, []);
    assert.deepEqual([handler.stats.succeeded, handler.stats.pending], [3, 0]);
  },
);

guardedTest(
  "a keyed task whose handler fails is discarded, and takes no waiting duplicate's place: the decision is taken once its handler has answered",
  async () => {
    const { task, runs, hold } = recorder({
      name: "reindex",
      onDuplicate: "replace",
    });
    const first = hold(0);
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const n = Number(new URL(request.url).searchParams.get("n"));
      tasks.addTask(task, "u", n);
      if (n === 2) throw new Error("the update failed");
      return new Response("ok");
    });
    handler(new Request("http://localhost/?n=0"), sentInfo());
    await first.started;
    handler(new Request("http://localhost/?n=1"), sentInfo());
    assert.throws(
      () => handler(new Request("http://localhost/?n=2"), sentInfo()),
      { message: "the update failed" },
    );
    first.open();
    await handler.drain();
    assert.deepEqual(runs, ["u0", "u1"]);
    assert.deepEqual(
      [handler.stats.discarded, handler.stats.deduplicated],
      [1, 0],
    );
  },
);

guardedTest(
  "a keyed task counts as pending under maxPending, and concurrency bounds keyed tasks as it bounds chains",
  async () => {
    const { task, runs, hold } = recorder({ name: "job" });
    const a = hold(0);
    const b = hold(1);
    let refused: unknown;
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const query = new URL(request.url).searchParams;
      try {
        tasks.addTask(task, query.get("key")!, Number(query.get("n")));
      } catch (error) {
        refused = error;
        return new Response("busy", { status: 503 });
      }
      return new Response("ok");
    }, { maxPending: 2, concurrency: 1 });
    handler(new Request("http://localhost/?key=a&n=0"), sentInfo());
    handler(new Request("http://localhost/?key=b&n=1"), sentInfo());
    const third = handler(
      new Request("http://localhost/?key=c&n=2"),
      sentInfo(),
    ) as Response;
    assert.equal(third.status, 503);
    assert.ok(refused instanceof QueueFullError);
    await a.started;
    await macrotasks(3);
    // One slot: "b" waits for it.
    assert.deepEqual(runs, ["a0"]);
    assert.deepEqual([handler.stats.running, handler.stats.queued], [1, 1]);
    a.open();
    await b.started;
    b.open();
    await handler.drain();
    assert.deepEqual(runs, ["a0", "b1"]);
    assert.deepEqual([handler.stats.refused, handler.stats.succeeded], [1, 2]);
  },
);

guardedTest(
  "a keyed task's timeout is its own, and its retries keep its place: the next duplicate starts once they are over",
  async () => {
    const seen: string[] = [];
    const flaky = defineTask(({ attempt, signal }, _key: string, n: number) => {
      seen.push(`${n}:${attempt}`);
      if (n === 0 && attempt === 1) throw new Error("try again");
      if (n !== 1) return undefined;
      return new Promise((_resolve, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }, {
      name: "flaky",
      key: (key) => key,
      timeout: 20,
      retry: { maxAttempts: 2, minDelay: 10, jitter: 0 },
    });
    const { handler, errors, request } = keyedHandler((tasks, query) =>
      tasks.addTask(flaky, "k", Number(query.get("n")))
    );
    request("n=0");
    request("n=1");
    request("n=2");
    await handler.drain();
    assert.deepEqual(seen, ["0:1", "0:2", "1:1", "1:2", "2:1"]);
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof TaskTimeoutError);
    assert.deepEqual(
      [
        handler.stats.succeeded,
        handler.stats.failed,
        handler.stats.timedOut,
        handler.stats.retried,
      ],
      [2, 1, 1, 2],
    );
  },
);

guardedTest(
  "hooks: a keyed task's attempts are told as any, a deduplicated one once to onTaskEnd, never to onTaskStart or onTaskError",
  async () => {
    const { task } = recorder({ name: "sync", onDuplicate: "skip" });
    const starts: string[] = [];
    const { handler, errors, ends, request } = keyedHandler(
      (tasks, query) => tasks.addTask(task, "k", Number(query.get("n"))),
      {
        onTaskStart: (info) => void starts.push(`${info.name} ${info.attempt}`),
      },
    );
    request("n=0");
    request("n=1");
    await handler.drain();
    assert.deepEqual(starts, ["sync 1"]);
    assert.deepEqual(ends.map((end) => `${end.outcome} ${end.attempt}`), [
      "deduplicated 0",
      "succeeded 1",
    ]);
    assert.deepEqual(errors, []);
  },
);

guardedTest(
  "a drain waits for a delayed keyed task; at its deadline it abandons those still waiting, delayed or behind a duplicate, and names them",
  async () => {
    const { task, runs, hold } = recorder({ name: "digest", delay: 10 });
    const { handler, request } = keyedHandler((tasks, query) =>
      tasks.addTask(task, query.get("key")!, Number(query.get("n")))
    );
    request("key=a&n=0");
    assert.deepEqual(await handler.drain(), {
      succeeded: 1,
      failed: 0,
      handedOver: 0,
      abandoned: 0,
      abandonedTasks: {},
      unstored: 0,
    });
    assert.deepEqual(runs, ["a0"]);
    const { task: slow } = recorder({ name: "slow", delay: 60_000 });
    const running = hold(1);
    const { handler: second, request: requestSecond } = keyedHandler(
      (tasks, query) => {
        const n = Number(query.get("n"));
        tasks.addTask(n === 3 ? slow : task, "b", n);
      },
    );
    requestSecond("n=1");
    await running.started;
    requestSecond("n=2");
    requestSecond("n=3");
    // Long enough for a task free to start to have started.
    const result = await second.drain({ timeout: 30 });
    running.open();
    assert.deepEqual(
      [result.abandoned, result.abandonedTasks],
      [3, { digest: 2, slow: 1 }],
    );
    assert.deepEqual(runs, ["a0", "b1"]);
    assert.deepEqual([second.stats.abandoned, second.stats.pending], [3, 0]);
  },
);

guardedTest(
  "callHandler() resolves with the results of the request's keyed tasks that ran, and none for one deduplicated",
  async () => {
    const sum = defineTask((_context, key: string, n: number) => `${key}${n}`, {
      name: "sum",
      key: (key) => key,
      onDuplicate: "replace",
    });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => "plain");
      tasks.addTask(sum, "k", 1);
      tasks.addTask(sum, "k", 2);
      return new Response("ok");
    });
    const { tasks } = await callHandler(handler, "/");
    const results = await tasks;
    assert.deepEqual(
      results.map((result) =>
        result.status === "fulfilled" ? [result.name, result.value] : []
      ).toSorted(),
      [["anonymous", "plain"], ["sum", "k2"]],
    );
  },
);

guardedTest(
  "tasks.size counts the keyed tasks added, deduplicated or not, late ones too",
  async () => {
    const { task } = recorder({ name: "sync", onDuplicate: "skip" });
    const sizes: number[] = [];
    const late = Promise.withResolvers<void>();
    const { handler, request } = keyedHandler((tasks) => {
      tasks.addTask(() => {});
      tasks.addTask(task, "k", 0);
      tasks.addTask(task, "k", 1);
      sizes.push(tasks.size);
      setTimeout(() => {
        tasks.addTask(task, "k", 2);
        sizes.push(tasks.size);
        late.resolve();
      }, 0);
    });
    request("");
    await late.promise;
    await handler.drain();
    assert.deepEqual(sizes, [3, 4]);
  },
);

guardedTest(
  "the lanes' timer stops once no delayed task is left to wake, even when one that ended was due later",
  async () => {
    const { task, runs } = recorder({ name: "soon", delay: 10 });
    const { task: later } = recorder({ name: "later", delay: 60_000 });
    const handler = withBackgroundTasks((request, _info, tasks) => {
      if (new URL(request.url).pathname === "/soon") {
        tasks.addTask(task, "a", 0);
      } else {
        tasks.addTask(later, "b", 1);
        throw new Error("the handler failed");
      }
      return new Response("ok");
    });
    handler(new Request("http://localhost/soon"), sentInfo());
    assert.throws(() =>
      handler(new Request("http://localhost/later"), sentInfo())
    );
    await handler.drain();
    assert.deepEqual(runs, ["a0"]);
    assert.deepEqual([handler.stats.discarded, handler.stats.pending], [1, 0]);
    // The test's sanitizer fails it if a timer is left for the discarded one.
  },
);

/**
 * A burst of 1,000 `"replace"` adds with a delay of a minute, for one key:
 * how many of the burst's arguments are still reachable once it is over, in
 * a process of its own, started with --expose-gc.
 */
const replacedBurst = `
import { defineTask, withBackgroundTasks } from ${
  JSON.stringify(new URL("../../mod.ts", import.meta.url).href)
};
import { fakeServeHandlerInfo } from ${
  JSON.stringify(new URL("../../testing.ts", import.meta.url).href)
};

const reindex = defineTask((_context, _user, _profile) => {}, {
  name: "reindex",
  key: (user) => user,
  onDuplicate: "replace",
  delay: 60_000,
});
const profiles = [];
const handler = withBackgroundTasks((_request, _info, tasks) => {
  const profile = { bytes: new Uint8Array(1_000) };
  profiles.push(new WeakRef(profile));
  tasks.addTask(reindex, "u42", profile);
  return new Response("saved");
});
for (let turn = 0; turn < 10; turn++) {
  for (let n = 0; n < 100; n++) {
    const info = fakeServeHandlerInfo();
    info.complete();
    handler(new Request("http://localhost/profile"), info);
  }
  await new Promise((resolve) => setTimeout(resolve, 0));
}
// A WeakRef's target lives to the end of the job that saw it.
await new Promise((resolve) => setTimeout(resolve, 0));
globalThis.gc();
const { pending, deduplicated } = handler.stats;
const reachable = profiles.filter((profile) => profile.deref() !== undefined).length;
const last = profiles.at(-1).deref() !== undefined;
await handler.drain({ signal: AbortSignal.abort() });
console.log(JSON.stringify({ pending, deduplicated, reachable, last }));
`;

Deno.test("a keyed task replaced while it waits for its delay lets go of its arguments: the delay holds only the one waiting", async () => {
  const path = await Deno.makeTempFile({ suffix: ".js" });
  try {
    await Deno.writeTextFile(path, replacedBurst);
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--v8-flags=--expose-gc", "--allow-read", path],
    }).output();
    assert.equal(new TextDecoder().decode(stderr), "");
    assert.equal(code, 0);
    const result = JSON.parse(new TextDecoder().decode(stdout));
    assert.deepEqual(
      [result.pending, result.deduplicated, result.last],
      [1, 999, true],
    );
    // The one waiting, and those the lanes let go of since they last looked.
    assert.ok(
      result.reachable <= 10,
      `${result.reachable} of the burst's 1,000 arguments still reachable`,
    );
  } finally {
    await Deno.remove(path);
  }
});

guardedTest(
  'tasks of different names are never duplicates, whatever their keys: "a" keyed "bc" and "ab" keyed "c" both run under "skip"',
  async () => {
    const ran: string[] = [];
    const define = (name: string) =>
      defineTask((_context, key: string) => void ran.push(`${name}/${key}`), {
        name,
        key: (key) => key,
        onDuplicate: "skip",
      });
    const a = define("a");
    const ab = define("ab");
    const { handler } = keyedHandler((tasks) => {
      tasks.addTask(a, "bc");
      tasks.addTask(ab, "c");
      tasks.addTask(a, "é");
      tasks.addTask(a, "e\u0301");
      tasks.addTask(a, "😀".repeat(128));
    });
    await (await callHandler(handler, "/")).tasks;
    assert.deepEqual(
      ran.toSorted(),
      [
        "a/bc",
        "a/e\u0301",
        "a/é",
        `a/${"😀".repeat(128)}`,
        "ab/c",
      ].toSorted(),
    );
    assert.equal(handler.stats.deduplicated, 0);
  },
);

guardedTest(
  "a drain under way waits for the keyed tasks that its chains' tasks add, as for the plain ones they add: from a plain task, and from a keyed task",
  async () => {
    const ran: string[] = [];
    const reindex = defineTask(
      async (_context, user: string, next: string | undefined) => {
        // Each waits a turn: the drain has begun before it adds the next.
        await new Promise((resolve) => setTimeout(resolve, 0));
        ran.push(`reindex ${user}`);
        if (next !== undefined) tasks!.addTask(reindex, next, undefined);
      },
      { name: "reindex", key: (user) => user },
    );
    let tasks: Parameters<Parameters<typeof keyedHandler>[0]>[0] | undefined;
    const { handler, errors, request } = keyedHandler((given) => {
      tasks = given;
      given.addTask(async function save() {
        await new Promise((resolve) => setTimeout(resolve, 0));
        ran.push("save");
        given.addTask(reindex, "u1", "u2");
        given.addTask(function audit() {
          ran.push("audit");
        });
      });
    });
    request("");
    const result = await handler.drain();
    assert.deepEqual(ran, ["save", "audit", "reindex u1", "reindex u2"]);
    assert.deepEqual([result.succeeded, handler.stats.pending], [4, 0]);
    assert.deepEqual(errors, []);
  },
);

guardedTest(
  "a drain's deadline abandons, and names, a keyed task that a running task added after the drain began",
  async () => {
    const digest = defineTask((_context, _user: string) => {}, {
      name: "digest",
      key: (user) => user,
      delay: 60_000,
    });
    const { handler } = keyedHandler((tasks) => {
      tasks.addTask(async function save() {
        await new Promise((resolve) => setTimeout(resolve, 0));
        tasks.addTask(digest, "u42");
      });
    });
    handler(new Request("http://localhost/"), sentInfo());
    const result = await handler.drain({ timeout: 50 });
    assert.deepEqual(
      [result.succeeded, result.abandoned, result.abandonedTasks],
      [1, 1, { digest: 1 }],
    );
    assert.deepEqual(
      [handler.stats.abandoned, handler.stats.pending],
      [1, 0],
    );
  },
);

guardedTest(
  'a "skip" duplicate counts under maxPending until its handler has answered: a handler adding one key 50 times under maxPending: 10 has 40 refused, 9 deduplicated',
  async () => {
    const { task, runs } = recorder({ name: "warm", onDuplicate: "skip" });
    let refused = 0;
    const { handler, errors, request } = keyedHandler((tasks) => {
      for (let n = 0; n < 50; n++) {
        try {
          tasks.addTask(task, "/home", n);
        } catch (error) {
          assert.ok(error instanceof QueueFullError);
          refused++;
        }
      }
    }, { maxPending: 10 });
    request("");
    assert.equal(refused, 40);
    await handler.drain();
    assert.deepEqual(runs, ["/home0"]);
    assert.deepEqual(
      [
        handler.stats.refused,
        handler.stats.deduplicated,
        handler.stats.succeeded,
      ],
      [40, 9, 1],
    );
    assert.deepEqual(errors, []);
  },
);

guardedTest(
  '"replace" takes the place in line of a duplicate waiting for a slot, rather than going to the back, where a key replaced more often than the line moved never ran',
  async () => {
    const log: string[] = [];
    const blocker = Promise.withResolvers<void>();
    const sync = defineTask((_context, key: string, n: number) => {
      log.push(`${key}${n}`);
    }, { name: "sync", key: (key) => key, onDuplicate: "replace" });
    const { handler, request } = keyedHandler((tasks, query) => {
      const n = Number(query.get("n"));
      if (query.has("key")) tasks.addTask(sync, query.get("key")!, n);
      else if (n === 0) tasks.addTask(() => blocker.promise);
      else tasks.addTask((line: string) => log.push(line), `plain${n}`);
    }, { concurrency: 1 });
    request("n=0");
    request("key=hot&n=1");
    request("n=2");
    // Past the shared timer: the two wait in line for the only slot.
    await macrotasks(3);
    assert.deepEqual([handler.stats.running, handler.stats.queued], [1, 2]);
    request("key=hot&n=3");
    await macrotasks(3);
    blocker.resolve();
    await handler.drain();
    assert.deepEqual(log, ["hot3", "plain2"]);
    assert.equal(handler.stats.deduplicated, 1);
  },
);

guardedTest(
  "callHandler() resolves with the results of the keyed tasks that the request's keyed tasks add, once they have run",
  async () => {
    const poll = defineTask((_context, key: string, n: number) => {
      if (n < 2) tasks!.addTask(poll, key, n + 1);
      return `${key}${n}`;
    }, { name: "poll", key: (key) => key });
    let tasks: Parameters<Parameters<typeof keyedHandler>[0]>[0] | undefined;
    const { handler } = keyedHandler((given) => {
      tasks = given;
      given.addTask(poll, "x", 0);
    });
    const { tasks: results } = await callHandler(handler, "/");
    assert.deepEqual(
      (await results).map((result) =>
        result.status === "fulfilled" ? result.value : result.reason
      ),
      ["x0", "x1", "x2"],
    );
  },
);
