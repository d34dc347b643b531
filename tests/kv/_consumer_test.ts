// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV backend's consuming side: its keys, what a queue message is, and
// one delivery of a step (runStep) on an in-memory Deno KV: the next step,
// a retry or a failed task written against the chain's progress, a message
// already acted on ignored, a step put back at close, and a failed task cut
// to fit in 64 KiB. Then the same through kvBackend().

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type DefinedTask,
  defineTask,
  withBackgroundTasks,
} from "../../mod.ts";
import { kvBackend, type KvFailedTask } from "../../kv.ts";
import { callHandler } from "../../testing.ts";
import { LEASE } from "../../src/kv/_claim.ts";
import { batchWrites } from "../../src/kv/_batch_writes.ts";
import { type Consumer, runStep } from "../../src/kv/_consumer.ts";
import {
  commitRetrying,
  enqueueStep,
  isStep,
  isStepGroup,
  kvKeys,
  type Step,
  type StepGroup,
} from "../../src/kv/_step.ts";
import { workerConfig } from "../../src/durable/_worker.ts";
import { counter, guardedTest, within } from "../_helpers/common.ts";
import { openBackend, openKv } from "../_helpers/kv.ts";

const keys = kvKeys(["test"]);

/** A consumer on `kv` for `tasks`, collecting what reaches onTaskError. */
function consumerOf(
  kv: Deno.Kv,
  tasks: DefinedTask[],
  shutdown = new AbortController(),
): Consumer & { reported: unknown[] } {
  const reported: unknown[] = [];
  return {
    kv,
    keys,
    redelivery: [1_000, 5_000],
    config: workerConfig({
      tasks,
      onTaskError: (error) => void reported.push(error),
    }, "Cannot create test consumer"),
    shutdown,
    queueName: "test",
    closing: false,
    holder: crypto.randomUUID(),
    lease: LEASE,
    claimed: new Map(),
    batch: batchWrites({ kv, keys, redelivery: [1_000, 5_000] }, {
      limit: 50,
      idle: 5,
      maxWait: 20,
      bytes: 60_000,
    }),
    reported,
  };
}

/** A step of chain "c1" whose tasks are `tasks`, at `index`, `attempt`. */
function stepOf(
  tasks: [name: string, ...args: unknown[]][],
  index = 0,
  attempt = 1,
): Step {
  return {
    afterwardStep: 1,
    chain: "c1",
    index,
    attempt,
    tasks: tasks.map(([name, ...args]) => ({ name, args })),
    request: { method: "POST", url: "http://localhost/orders" },
  };
}

/**
 * Runs `step` as its chain's live message, on a fresh in-memory database:
 * what the database holds after, and the messages it was asked to queue.
 */
async function deliver(
  step: Step,
  tasks: DefinedTask[],
  during: (consumer: Consumer) => void = () => {},
): Promise<{
  progress: unknown;
  failed: KvFailedTask | null;
  queued: [unknown, { delay?: number }][];
  reported: unknown[];
}> {
  await using kv = await openKv();
  const consumer = consumerOf(kv, tasks);
  await kv.set(keys.progress(step.chain), {
    index: step.index,
    attempt: step.attempt,
  });
  const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
  try {
    during(consumer);
    await runStep(step, consumer);
    return {
      progress: (await kv.get(keys.progress(step.chain))).value,
      failed: (await kv.get<KvFailedTask>(keys.failed(step.chain, step.index)))
        .value,
      queued: enqueue.mock.calls.map((call) =>
        call.arguments as [unknown, { delay?: number }]
      ),
      reported: consumer.reported,
    };
  } finally {
    enqueue.mock.restore();
  }
}

/**
 * The number a message's undelivered key ends with, given the options it
 * was queued with: a random integer, under `keys.undelivered()`.
 */
function undeliveredNumber(options: unknown): number {
  const { keysIfUndelivered } = options as { keysIfUndelivered?: Deno.KvKey[] };
  assert.equal(keysIfUndelivered?.length, 1);
  const key = keysIfUndelivered[0]!;
  assert.deepEqual(key.slice(0, -1), keys.undelivered());
  const drawn = key.at(-1);
  assert.ok(
    typeof drawn === "number" && Number.isSafeInteger(drawn) && drawn >= 0,
    Deno.inspect(drawn),
  );
  return drawn;
}

const ok = defineTask((_context, ..._args: unknown[]) => {}, {
  name: "ok",
}) as DefinedTask;

Deno.test("kvKeys() puts each kind of key under the prefix", () => {
  const keys = kvKeys(["app", 1]);
  assert.deepEqual(keys.progress("c1"), ["app", 1, "chains", "c1"]);
  assert.deepEqual(keys.failed(), ["app", 1, "failed"]);
  assert.deepEqual(keys.failed("c1", 2), ["app", 1, "failed", "c1", 2]);
  assert.deepEqual(keys.tasks(), ["app", 1, "tasks"]);
  assert.deepEqual(keys.tasks("send"), ["app", 1, "tasks", "send"]);
  assert.deepEqual(keys.undelivered(), ["app", 1, "undelivered"]);
  assert.deepEqual(keys.undelivered(7), ["app", 1, "undelivered", 7]);
});

Deno.test("isStep() knows the backend's messages from others", () => {
  assert.equal(isStep(stepOf([["ok"]])), true);
  for (
    const other of [
      null,
      undefined,
      1,
      "step",
      {},
      { afterwardStep: 2 },
      { afterwardStep: "1" },
    ]
  ) {
    assert.equal(isStep(other), false, Deno.inspect(other));
  }
});

Deno.test("enqueueStep() writes the chain's progress and queues the step, to land among the undelivered if Deno KV gives up", () => {
  const calls: [string, unknown[]][] = [];
  const operation = {
    set(...args: unknown[]) {
      calls.push(["set", args]);
      return this;
    },
    enqueue(...args: unknown[]) {
      calls.push(["enqueue", args]);
      return this;
    },
  } as unknown as Deno.AtomicOperation;
  const step = stepOf([["ok"], ["ok"]], 1, 3);
  const redelivery = [10, 20];
  assert.equal(
    enqueueStep(operation, { keys, redelivery }, step, 250),
    operation,
  );
  const drawn = undeliveredNumber(calls[1]![1][1]);
  assert.deepEqual(calls, [
    ["set", [keys.progress("c1"), { index: 1, attempt: 3 }]],
    ["enqueue", [step, {
      delay: 250,
      keysIfUndelivered: [keys.undelivered(drawn)],
      backoffSchedule: redelivery,
    }]],
  ]);
  calls.length = 0;
  enqueueStep(operation, { keys, redelivery }, step);
  assert.equal((calls[1]![1][1] as { delay: number }).delay, 0);
  // Each message draws its own.
  assert.notEqual(undeliveredNumber(calls[1]![1][1]), drawn);
});

Deno.test("enqueueStep() keeps a keyed task's step, undelivered, under its chain, index and attempt, where its lane's watch looks", () => {
  const queued: unknown[] = [];
  const operation = {
    set() {
      return this;
    },
    enqueue(_message: unknown, options: unknown) {
      queued.push(options);
      return this;
    },
  } as unknown as Deno.AtomicOperation;
  const step = { ...stepOf([["ok"]], 0, 2), chain: "c1:3", key: "u" };
  enqueueStep(operation, { keys, redelivery: [10] }, step);
  assert.deepEqual(queued, [{
    delay: 0,
    keysIfUndelivered: [keys.undelivered("c1:3", 0, 2)],
    backoffSchedule: [10],
  }]);
});

guardedTest(
  "runStep() runs the task and queues the next step, or ends the chain after its last",
  async () => {
    const ran: unknown[][] = [];
    const record = defineTask((_context, ...args: unknown[]) => {
      ran.push(args);
    }, { name: "record" }) as DefinedTask;
    const step = stepOf([["record", "a"], ["record", "b"]]);
    const first = await deliver(step, [record]);
    assert.deepEqual(ran, [["a"]]);
    assert.deepEqual(first.progress, { index: 1, attempt: 1 });
    assert.deepEqual(first.queued, [[{ ...step, index: 1, attempt: 1 }, {
      delay: 0,
      keysIfUndelivered: [
        keys.undelivered(undeliveredNumber(first.queued[0]?.[1])),
      ],
      backoffSchedule: [1_000, 5_000],
    }]]);
    assert.equal(first.failed, null);

    const last = await deliver({ ...step, index: 1 }, [record]);
    assert.deepEqual(ran, [["a"], ["b"]]);
    assert.deepEqual([last.progress, last.queued, last.failed], [
      null,
      [],
      null,
    ]);
  },
);

guardedTest(
  "runStep() does nothing for a message already acted on",
  async (t) => {
    let runs = 0;
    const counted = defineTask(() => void runs++, {
      name: "counted",
    }) as DefinedTask;
    const step = stepOf([["counted"], ["counted"]]);
    const table: [string, { index: number; attempt: number } | null][] = [
      ["the chain moved on to its next task", { index: 1, attempt: 1 }],
      ["the task moved on to its next attempt", { index: 0, attempt: 2 }],
      ["the chain is over", null],
    ];
    for (const [name, progress] of table) {
      await t.step(name, async () => {
        await using kv = await openKv();
        const consumer = consumerOf(kv, [counted]);
        if (progress !== null) await kv.set(keys.progress("c1"), progress);
        const before = await kv.get(keys.progress("c1"));
        await runStep(step, consumer);
        assert.equal(runs, 0);
        const after = await kv.get(keys.progress("c1"));
        assert.equal(after.versionstamp, before.versionstamp);
      });
    }
  },
);

guardedTest(
  "runStep() queues a failed attempt again after the task's backoff, unreported",
  async () => {
    const flaky = defineTask(() => {
      throw "declined";
    }, {
      name: "flaky",
      retry: { maxAttempts: 3, minDelay: 250, maxDelay: 250, jitter: 0 },
    }) as DefinedTask;
    const step = stepOf([["flaky"], ["ok"]], 0, 2);
    const { progress, queued, failed, reported } = await deliver(step, [
      flaky,
      ok,
    ]);
    assert.deepEqual(progress, { index: 0, attempt: 3 });
    assert.deepEqual(
      queued.map(([message, { delay }]) => [message, delay]),
      [[{ ...step, attempt: 3 }, 250]],
    );
    assert.deepEqual([failed, reported], [null, []]);
  },
);

guardedTest(
  "runStep() writes the failed task of a last failed attempt, and the chain goes on",
  async () => {
    const declined = defineTask((_context, _order: string) => {
      throw "card declined";
    }, { name: "declined" }) as DefinedTask;
    const step = stepOf([["declined", "order-7"], ["ok"]]);
    const { progress, queued, failed, reported } = await deliver(step, [
      declined,
      ok,
    ]);
    assert.deepEqual(reported, ["card declined"]);
    assert.ok(failed?.at instanceof Date);
    assert.deepEqual({ ...failed, at: undefined }, {
      id: "c1:0",
      reason: "failed",
      name: "declined",
      args: ["order-7"],
      index: 0,
      attempts: 1,
      error: "card declined",
      request: step.request,
      at: undefined,
    });
    assert.deepEqual(progress, { index: 1, attempt: 1 });
    assert.deepEqual(queued.map(([message]) => message), [
      { ...step, index: 1 },
    ]);
  },
);

guardedTest(
  "runStep() keeps as failed a task this process does not know, reports it, and the chain goes on",
  async () => {
    const step = stepOf([["retired", 42], ["ok"]]);
    const { progress, queued, failed, reported } = await deliver(step, [ok]);
    assert.equal(
      failed?.error,
      `No task named "retired" in this process's 'tasks'`,
    );
    assert.deepEqual(
      [failed?.reason, failed?.name, failed?.args, failed?.attempts],
      ["failed", "retired", [42], 1],
    );
    assert.deepEqual(reported.map(String), [
      `Error: No task named "retired" in this process's 'tasks': it is kept as failed task "c1:0" (backend.failed() lists it)`,
    ]);
    assert.deepEqual(progress, { index: 1, attempt: 1 });
    assert.deepEqual(queued.map(([message]) => message), [
      { ...step, index: 1 },
    ]);
  },
);

guardedTest(
  "runStep() puts the step back, as it was, when the backend closes during its attempt",
  async () => {
    const started = Promise.withResolvers<void>();
    const slow = defineTask(({ signal }) => {
      started.resolve();
      return new Promise<void>((_resolve, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }, { name: "slow" }) as DefinedTask;
    const step = stepOf([["slow"], ["ok"]], 0, 2);
    const { progress, queued, failed, reported } = await deliver(
      step,
      [slow, ok],
      (consumer) => {
        started.promise.then(() =>
          consumer.shutdown.abort(new Error("closing"))
        );
      },
    );
    // The same step, delayed by the first redelivery step.
    assert.deepEqual(progress, { index: 0, attempt: 2 });
    assert.deepEqual(
      queued.map(([message, { delay }]) => [message, delay]),
      [[step, 1_000]],
    );
    assert.deepEqual([failed, reported], [null, []]);
  },
);

guardedTest(
  "runStep() writes nothing, and does not throw, when the database closed with the backend",
  async () => {
    const kv = await Deno.openKv(":memory:");
    const started = Promise.withResolvers<void>();
    const slow = defineTask(({ signal }) => {
      started.resolve();
      return new Promise<void>((_resolve, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }, { name: "slow" }) as DefinedTask;
    const consumer = consumerOf(kv, [slow]);
    const step = stepOf([["slow"]]);
    await kv.set(keys.progress("c1"), { index: 0, attempt: 1 });
    const running = runStep(step, consumer);
    await started.promise;
    kv.close();
    consumer.shutdown.abort(new Error("closing"));
    // Deno KV delivers the unacknowledged message again once it is reopened.
    assert.deepEqual(await running, { name: "slow", outcome: "handedBack" });
  },
);

guardedTest(
  "runStep() cuts a failed task to fit in a Deno KV value, the error text first",
  async (t) => {
    // Deno KV refuses a value over 64 KiB: a letter that did not fit would
    // fail the commit, and runStep() would reject.
    const failing = defineTask((_context, ..._args: unknown[]) => {
      throw `declined ${"e".repeat(100_000)}`;
    }, { name: "failing" }) as DefinedTask;

    await t.step("an error text too long to keep whole", async () => {
      const args = ["x".repeat(20_000)];
      const { failed } = await deliver(stepOf([["failing", ...args]]), [
        failing,
      ]);
      assert.deepEqual(failed?.args, args);
      assert.match(failed!.error, /^declined e+ \[cut to fit in Deno KV\]$/);
      // Cut by what was too much: 64 KiB, less the arguments and the rest.
      assert.ok(failed!.error.length > 45_000, `${failed!.error.length}`);
    });

    await t.step("arguments too large to keep with the rest", async () => {
      const { failed } = await deliver(
        stepOf([["failing", "x".repeat(70_000)]]),
        [failing],
      );
      assert.deepEqual(failed?.args, []);
      assert.equal(
        failed?.error,
        `declined ${
          "e".repeat(4_087)
        } [cut to fit in Deno KV]; its arguments were too large to keep`,
      );
    });
  },
);

guardedTest(
  "runStep() runs a step once when two backends are delivered it at once, and the other's copy comes back when the claim would lapse",
  async () => {
    let runs = 0;
    const release = Promise.withResolvers<void>();
    const slow = defineTask(async () => {
      runs++;
      await release.promise;
    }, { name: "slow" }) as DefinedTask;
    await using kv = await openKv();
    const first = consumerOf(kv, [slow, ok]);
    const second = consumerOf(kv, [slow, ok]);
    const step = stepOf([["slow"], ["ok"]]);
    await kv.set(keys.progress("c1"), { index: 0, attempt: 1 });
    const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
    try {
      const running = [runStep(step, first), runStep(step, second)];
      // One claimed it and runs it; the other put a copy back and is done.
      const done = await Promise.race(running.map((run) => run.then(() => 1)));
      assert.equal(done, 1);
      assert.equal(runs, 1);
      const [copy, options] = enqueue.mock.calls[0]!.arguments as [
        Step,
        { delay: number },
      ];
      assert.deepEqual(copy, step);
      assert.ok(
        options.delay > LEASE - 1_000 && options.delay <= LEASE,
        String(options.delay),
      );
      const claimed = (await kv.get<{ lease: { until: number } }>(
        keys.progress("c1"),
      )).value;
      assert.ok(claimed?.lease.until! > Date.now());
      release.resolve();
      await Promise.all(running);
      assert.equal(runs, 1);
      assert.deepEqual((await kv.get(keys.progress("c1"))).value, {
        index: 1,
        attempt: 1,
      });
    } finally {
      enqueue.mock.restore();
    }
  },
);

guardedTest(
  "runStep() takes over a step whose claim lapsed, its process presumed dead",
  async () => {
    let runs = 0;
    const counted = defineTask(() => void runs++, {
      name: "counted",
    }) as DefinedTask;
    await using kv = await openKv();
    await kv.set(keys.progress("c1"), {
      index: 0,
      attempt: 1,
      lease: { holder: "a process that died", until: Date.now() - 1 },
    });
    await runStep(stepOf([["counted"]]), consumerOf(kv, [counted]));
    assert.equal(runs, 1);
    assert.equal((await kv.get(keys.progress("c1"))).value, null);
  },
);

guardedTest(
  "runStep() lets a step delivered again while this backend runs it wait for that run",
  async () => {
    let runs = 0;
    const release = Promise.withResolvers<void>();
    const slow = defineTask(async () => {
      runs++;
      await release.promise;
    }, { name: "slow" }) as DefinedTask;
    await using kv = await openKv();
    const consumer = consumerOf(kv, [slow]);
    const step = stepOf([["slow"]]);
    await kv.set(keys.progress("c1"), { index: 0, attempt: 1 });
    const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
    try {
      const running = runStep(step, consumer);
      let again = false;
      const delivered = runStep(step, consumer).then(() => again = true);
      await new Promise((resolve) => setTimeout(resolve, 0));
      assert.equal(again, false);
      release.resolve();
      await Promise.all([running, delivered]);
      assert.equal(runs, 1);
      assert.deepEqual(enqueue.mock.calls, []);
    } finally {
      enqueue.mock.restore();
    }
  },
);

guardedTest(
  "runStep() commits the claims and the outcomes of steps delivered together in one operation each, and runs each once",
  async () => {
    const runs = new Map<string, number>();
    const counted = defineTask(({ id }) => {
      runs.set(id, (runs.get(id) ?? 0) + 1);
    }, { name: "counted" }) as DefinedTask;
    await using kv = await openKv();
    // Long enough for all 20 claims to come in on a loaded machine.
    const consumer = {
      ...consumerOf(kv, [counted]),
      batch: batchWrites({ kv, keys, redelivery: [1_000, 5_000] }, {
        limit: 50,
        idle: 200,
        maxWait: 60_000,
        bytes: 60_000,
      }),
    };
    const steps = Array.from(
      { length: 20 },
      (_, i): Step => ({ ...stepOf([["counted"]]), chain: `c${i}` }),
    );
    for (const { chain } of steps) {
      await kv.set(keys.progress(chain), { index: 0, attempt: 1 });
    }
    const commit = mock.method(Deno.AtomicOperation.prototype, "commit");
    try {
      await Promise.all(steps.map((step) => runStep(step, consumer)));
      // The claims, then the outcomes: 40 commits, one at a time, before.
      assert.equal(commit.mock.callCount(), 2);
    } finally {
      commit.mock.restore();
    }
    assert.deepEqual([...runs.values()], Array(20).fill(1));
    for (const { chain } of steps) {
      assert.equal((await kv.get(keys.progress(chain))).value, null);
    }
  },
);

guardedTest(
  "runStep() queues the next tasks of steps run together in one message",
  async () => {
    await using kv = await openKv();
    const consumer = {
      ...consumerOf(kv, [ok]),
      batch: batchWrites({ kv, keys, redelivery: [1_000, 5_000] }, {
        limit: 50,
        idle: 200,
        maxWait: 60_000,
        bytes: 60_000,
      }),
    };
    const steps = Array.from(
      { length: 5 },
      (_, i): Step => ({ ...stepOf([["ok"], ["ok", i]]), chain: `c${i}` }),
    );
    for (const { chain } of steps) {
      await kv.set(keys.progress(chain), { index: 0, attempt: 1 });
    }
    const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
    try {
      await Promise.all(steps.map((step) => runStep(step, consumer)));
      // A message per step before.
      assert.equal(enqueue.mock.callCount(), 1);
      const [message] = enqueue.mock.calls[0]!.arguments as [StepGroup];
      // In the order their outcomes came in.
      assert.deepEqual(
        message.steps.toSorted((a, b) => a.chain.localeCompare(b.chain)),
        steps.map((step) => ({ ...step, index: 1, attempt: 1 })),
      );
    } finally {
      enqueue.mock.restore();
    }
  },
);

guardedTest(
  "runStep() queues a keyed task's retry in a message of its own, under its own undelivered key, even without a delay",
  async () => {
    let failures = 1;
    const flaky = defineTask(() => {
      if (failures-- > 0) throw new Error("down");
    }, {
      name: "flaky",
      retry: { maxAttempts: 2, minDelay: 0, maxDelay: 0 },
    }) as DefinedTask;
    await using kv = await openKv();
    const consumer = {
      ...consumerOf(kv, [ok, flaky]),
      batch: batchWrites({ kv, keys, redelivery: [1_000, 5_000] }, {
        limit: 50,
        idle: 200,
        maxWait: 60_000,
        bytes: 60_000,
      }),
    };
    const plain: Step = { ...stepOf([["ok"], ["ok"]]), chain: "c1" };
    const keyed: Step = { ...stepOf([["flaky"]]), chain: "c2:0", key: "u" };
    for (const { chain } of [plain, keyed]) {
      await kv.set(keys.progress(chain), { index: 0, attempt: 1 });
    }
    const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
    try {
      await Promise.all([plain, keyed].map((step) => runStep(step, consumer)));
      const retry = enqueue.mock.calls.map((
        { arguments: [message, options] },
      ) => [message, options])
        .find(([message]) => (message as Step).chain === "c2:0");
      assert.deepEqual(retry, [{ ...keyed, attempt: 2 }, {
        delay: 0,
        keysIfUndelivered: [keys.undelivered("c2:0", 0, 2)],
        backoffSchedule: [1_000, 5_000],
      }]);
      assert.equal(enqueue.mock.callCount(), 2);
    } finally {
      enqueue.mock.restore();
    }
  },
);

guardedTest(
  "runStep() queues a retry without a delay with the next tasks, and one with a delay in a message of its own",
  async () => {
    const failures = new Map([["c1", 1], ["c2", 1]]);
    const options = (minDelay: number) => ({
      retry: { maxAttempts: 2, minDelay, maxDelay: minDelay, jitter: 0 },
    });
    const flaky = defineTask(({ id }) => {
      const chain = id.split(":")[0]!;
      const left = failures.get(chain) ?? 0;
      failures.set(chain, left - 1);
      if (left > 0) throw new Error("down");
    }, { name: "flaky", ...options(0) }) as DefinedTask;
    const slow = defineTask(({ id }) => {
      const chain = id.split(":")[0]!;
      const left = failures.get(chain) ?? 0;
      failures.set(chain, left - 1);
      if (left > 0) throw new Error("down");
    }, { name: "slow", ...options(60_000) }) as DefinedTask;
    await using kv = await openKv();
    const consumer = {
      ...consumerOf(kv, [ok, flaky, slow]),
      batch: batchWrites({ kv, keys, redelivery: [1_000, 5_000] }, {
        limit: 50,
        idle: 200,
        maxWait: 60_000,
        bytes: 60_000,
      }),
    };
    const steps: Step[] = [
      { ...stepOf([["flaky"]]), chain: "c1" },
      { ...stepOf([["slow"]]), chain: "c2" },
      { ...stepOf([["ok"], ["ok"]]), chain: "c3" },
    ];
    for (const { chain } of steps) {
      await kv.set(keys.progress(chain), { index: 0, attempt: 1 });
    }
    const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
    try {
      await Promise.all(steps.map((step) => runStep(step, consumer)));
      const messages = enqueue.mock.calls.map((
        { arguments: [message, queued] },
      ) => ({
        message,
        delay: (queued as { delay: number }).delay,
      }));
      assert.equal(messages.length, 2, Deno.inspect(messages));
      const group = messages.find(({ message }) => isStepGroup(message));
      assert.ok(group !== undefined, Deno.inspect(messages));
      assert.deepEqual(
        (group.message as StepGroup).steps.map(({ chain, index, attempt }) =>
          `${chain}:${index}:${attempt}`
        ).sort(),
        ["c1:0:2", "c3:1:1"],
      );
      assert.equal(group.delay, 0);
      const alone = messages.find(({ message }) => isStep(message));
      assert.deepEqual(alone, {
        message: { ...steps[1], attempt: 2 },
        delay: 60_000,
      });
    } finally {
      enqueue.mock.restore();
    }
  },
);

guardedTest(
  "runStep() renews its claim while a long attempt runs, and still writes the outcome",
  async () => {
    await using kv = await openKv();
    const renewed: number[] = [];
    const long = defineTask(async () => {
      // Three renewals of a 30 ms lease, 10 ms apart, at least.
      for (let i = 0; i < 4; i++) {
        await new Promise((resolve) => setTimeout(resolve, 15));
        const { value } = await kv.get<{ lease: { until: number } }>(
          keys.progress("c1"),
        );
        renewed.push(value!.lease.until);
      }
    }, { name: "long" }) as DefinedTask;
    const consumer = { ...consumerOf(kv, [long, ok]), lease: 30 };
    await kv.set(keys.progress("c1"), { index: 0, attempt: 1 });
    const end = await runStep(stepOf([["long"], ["ok"]]), consumer);
    assert.deepEqual(end, { name: "long", outcome: "succeeded" });
    assert.ok(renewed.at(-1)! > renewed[0]!, String(renewed));
    assert.deepEqual((await kv.get(keys.progress("c1"))).value, {
      index: 1,
      attempt: 1,
    });
  },
);

Deno.test("commitRetrying() commits again while the database is locked, and gives any other error at once", async () => {
  const locked = () => Promise.reject(new TypeError("database is locked"));
  let calls = 0;
  const flaky = {
    commit: () => ++calls < 3 ? locked() : Promise.resolve({ ok: true }),
  } as unknown as Deno.AtomicOperation;
  assert.deepEqual(await commitRetrying(flaky), { ok: true });
  assert.equal(calls, 3);

  calls = 0;
  const broken = {
    commit: () => {
      calls++;
      return Promise.reject(new TypeError("Value too large"));
    },
  } as unknown as Deno.AtomicOperation;
  await assert.rejects(commitRetrying(broken), {
    name: "TypeError",
    message: "Value too large",
  });
  assert.equal(calls, 1);
});

Deno.test("commitRetrying() gives up 30 s after its first commit, counting the time the commits took", async () => {
  // Each commit meets a lock held from outside Deno KV, on which SQLite
  // waits 5 s before it fails: the clock moves 5 s per commit.
  using clock = mock.timers;
  clock.enable({ apis: ["Date"], now: 0 });
  let calls = 0;
  const held = {
    commit: () => {
      calls++;
      clock.tick(5_000);
      return Promise.reject(new TypeError("database is locked"));
    },
  } as unknown as Deno.AtomicOperation;
  await assert.rejects(
    within(commitRetrying(held), 10_000, "commitRetrying()"),
    { name: "TypeError", message: "database is locked" },
  );
  assert.equal(calls, 6);
});

// The same, through kvBackend().

guardedTest(
  "kvBackend() acts on each message once, even when it is delivered again",
  async () => {
    let runs = 0;
    const finished = counter(2);
    const once = defineTask(() => {
      runs++;
      finished.tick();
    }, { name: "once" });
    const kv = await Deno.openKv(":memory:");
    const backend = kvBackend({ kv, tasks: [once], listen: false });
    const messages: unknown[] = [];
    kv.listenQueue(async (message) => {
      messages.push(message);
      await backend.handle(message);
    });
    try {
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(once);
        tasks.addTask(once);
        return new Response("ok");
      }, { backend });
      await (await callHandler(handler, "/")).tasks;
      await finished.done;
      assert.equal(runs, 2);
      // Redelivered after the chain moved on: ignored.
      for (const message of messages) {
        assert.equal(await backend.handle(message), true);
      }
      assert.equal(runs, 2);
      assert.equal(await backend.handle({ other: "message" }), false);
    } finally {
      backend.close();
      kv.close();
    }
  },
);

guardedTest(
  "kvBackend() keeps a failed task within Deno KV's limits, and goes on",
  async () => {
    const finished = counter(1);
    const big = defineTask((_context, _text: string) => {
      throw new Error(`declined ${"y".repeat(4_000)}`);
    }, { name: "big" });
    const after = defineTask(() => finished.tick(), { name: "after" });
    await using db = await openBackend({
      tasks: [big, after],
      onTaskError: () => {},
    });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(big, "x".repeat(64_000));
      tasks.addTask(after);
      return new Response("ok");
    }, { backend: db.backend });
    await (await callHandler(handler, "/")).tasks;
    await finished.done;
    const [letter, ...others] = await db.backend.failed();
    assert.deepEqual(others, []);
    assert.equal(letter?.reason, "failed");
    assert.deepEqual(letter?.args, ["x".repeat(64_000)]);
    assert.match(
      letter!.error,
      /^Error: declined y+ \[cut to fit in Deno KV\]$/,
    );
  },
);

guardedTest(
  "kvBackend() close() puts a running step back, to run again with its id wherever a backend listens",
  async () => {
    const path = await Deno.makeTempFile({ suffix: ".sqlite3" });
    const started = Promise.withResolvers<string>();
    const ranAgain = Promise.withResolvers<string>();
    let runs = 0;
    const slow = defineTask(({ id, signal }) => {
      if (++runs > 1) return ranAgain.resolve(id);
      started.resolve(id);
      return new Promise<void>((_resolve, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }, { name: "slow" });
    const first: string[] = [];
    const kv = await Deno.openKv(path);
    const closing = kvBackend({
      kv,
      tasks: [slow],
      redelivery: [10],
      onTaskEnd: ({ outcome }) => void first.push(outcome),
    });
    let other: Deno.Kv | undefined;
    let otherBackend: ReturnType<typeof kvBackend> | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const handler = withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(slow);
        return new Response("ok");
      }, { backend: closing });
      await (await callHandler(handler, "/")).tasks;
      const id = await started.promise;
      // Its database stays open: the message must not count as handled.
      closing.close();
      other = await Deno.openKv(path);
      otherBackend = kvBackend({ kv: other, tasks: [slow] });
      const waited = new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve("never ran again"), 20_000);
      });
      assert.equal(await Promise.race([ranAgain.promise, waited]), id);
      assert.equal(first[0], "abandoned");
      assert.ok(first.every((outcome) => outcome === "abandoned"));
    } finally {
      clearTimeout(timer);
      otherBackend?.close();
      other?.close();
      kv.close();
      await Deno.remove(path);
    }
  },
);
