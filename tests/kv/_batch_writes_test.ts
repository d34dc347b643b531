// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV listener's write batch: the writes of concurrent deliveries share
// an atomic operation, each resolving as its own commit would have.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  batchWrites,
  type Write,
  type WriteBatch,
} from "../../src/kv/_batch_writes.ts";
import { isStepGroup, kvKeys, type Step } from "../../src/kv/_step.ts";
import { openKv } from "../_helpers/kv.ts";
import { within } from "../_helpers/common.ts";

/** A batch on `kv`, its steps queued under the prefix "test". */
function batchOn(
  kv: Deno.Kv,
  limit: number,
  idle: number,
  maxWait = 1_000,
): WriteBatch {
  return batchWrites(
    { kv, keys: kvKeys(["test"]), redelivery: [1_000] },
    { limit, idle, maxWait, bytes: 60_000 },
  );
}

/** A write that sets `key` to `value` if `key` is at `versionstamp`. */
function setIf(
  key: string,
  value: unknown,
  versionstamp: string | null = null,
): Write {
  return {
    key,
    add: (operation) =>
      operation.check({ key: [key], versionstamp }).set([key], value),
  };
}

/** Counts the commits of atomic operations until disposed. */
function countCommits(): { readonly count: number } & Disposable {
  const commit = mock.method(Deno.AtomicOperation.prototype, "commit");
  return {
    get count() {
      return commit.mock.callCount();
    },
    [Symbol.dispose]: () => commit.mock.restore(),
  };
}

Deno.test("batchWrites() commits the writes handed in together as one operation", async () => {
  await using kv = await openKv();
  const batch = batchOn(kv, 50, 5);
  using commits = countCommits();
  const results = await Promise.all(
    ["a", "b", "c"].map((key) => batch.commit(setIf(key, key))),
  );
  assert.equal(commits.count, 1);
  assert.ok(results.every((result) => result.ok));
  assert.equal(new Set(results.map((result) => result.versionstamp)).size, 1);
  const entries = await kv.getMany([["a"], ["b"], ["c"]]);
  assert.deepEqual(entries.map(({ value }) => value), ["a", "b", "c"]);
});

Deno.test("batchWrites() fails a write whose check fails, alone, as its own commit would", async () => {
  await using kv = await openKv();
  await kv.set(["b"], "before");
  const batch = batchOn(kv, 50, 5);
  const results = await Promise.all([
    batch.commit(setIf("a", "a")),
    batch.commit(setIf("b", "b")),
    batch.commit(setIf("c", "c")),
  ]);
  assert.deepEqual(results.map((result) => result.ok), [true, false, true]);
  const entries = await kv.getMany([["a"], ["b"], ["c"]]);
  assert.deepEqual(entries.map(({ value }) => value), ["a", "before", "c"]);
});

Deno.test("batchWrites() never puts two writes on one key in one operation", async () => {
  await using kv = await openKv();
  const batch = batchOn(kv, 50, 5);
  using commits = countCommits();
  // In one operation both checks would pass, and both writes apply.
  const results = await Promise.all([
    batch.commit(setIf("a", "first")),
    batch.commit(setIf("a", "second")),
  ]);
  assert.deepEqual(results.map((result) => result.ok), [true, false]);
  assert.equal((await kv.get(["a"])).value, "first");
  assert.equal(commits.count, 2);
});

Deno.test("batchWrites() splits an operation over Deno KV's 800 KiB", async () => {
  await using kv = await openKv();
  const batch = batchOn(kv, 50, 5);
  using commits = countCommits();
  const big = "x".repeat(60_000);
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) => batch.commit(setIf(`k${i}`, big))),
  );
  assert.ok(results.every((result) => result.ok));
  // 1.2 MB refused as a whole, then its halves.
  assert.equal(commits.count, 3);
});

Deno.test("batchWrites() waits for the writes to stop coming, or for its limit", async () => {
  await using kv = await openKv();
  mock.timers.enable({ apis: ["setTimeout", "Date"] });
  try {
    const batch = batchOn(kv, 3, 10);
    using commits = countCommits();
    const first = batch.commit(setIf("a", 1));
    mock.timers.tick(9);
    const second = batch.commit(setIf("b", 2));
    mock.timers.tick(9);
    // 18 ms after the first, 9 after the last: still waiting.
    assert.equal(commits.count, 0);
    mock.timers.tick(1);
    assert.equal(commits.count, 1);
    assert.ok((await first).ok && (await second).ok);
    // The limit commits at once.
    const fresh = batchOn(kv, 3, 10);
    const writes = ["c", "d", "e"].map((key) => fresh.commit(setIf(key, key)));
    assert.equal(commits.count, 2);
    for (const result of await Promise.all(writes)) assert.ok(result.ok);
  } finally {
    mock.timers.reset();
  }
});

Deno.test("batchWrites() commits the writes of a steady trickle once the first has waited its most", async () => {
  // Writes 4 ms apart never leave 5 ms of quiet: without a bound, each
  // would wait for the limit's 50th write (196 ms for the first).
  await using kv = await openKv();
  mock.timers.enable({ apis: ["setTimeout", "Date"] });
  try {
    const batch = batchOn(kv, 50, 5, 20);
    using commits = countCommits();
    const writes = [batch.commit(setIf("k0", 0))];
    for (let i = 1; i <= 4; i++) {
      mock.timers.tick(4);
      writes.push(batch.commit(setIf(`k${i}`, i)));
    }
    // 16 ms after the first write, 0 after the last.
    mock.timers.tick(3);
    assert.equal(commits.count, 0);
    mock.timers.tick(1);
    assert.equal(commits.count, 1);
    for (const result of await Promise.all(writes)) assert.ok(result.ok);
    // The next write waits its own most, from its arrival, not the first's.
    mock.timers.tick(4);
    const next = batch.commit(setIf("k5", 5));
    for (let i = 0; i < 4; i++) {
      mock.timers.tick(4);
      void batch.commit(setIf(`k${6 + i}`, i));
    }
    mock.timers.tick(3);
    assert.equal(commits.count, 1);
    mock.timers.tick(1);
    assert.equal(commits.count, 2);
    assert.ok((await next).ok);
    batch.close();
  } finally {
    mock.timers.reset();
  }
});

Deno.test("batchWrites() bounds a write that comes during a commit from its arrival", async () => {
  await using kv = await openKv();
  mock.timers.enable({ apis: ["setTimeout", "Date"] });
  try {
    const batch = batchOn(kv, 50, 5, 20);
    using commits = countCommits();
    const first = batch.commit(setIf("k0", 0));
    mock.timers.tick(5);
    assert.equal(commits.count, 1);
    // A commit Deno KV takes 24 ms over, a trickle 4 ms apart meanwhile:
    // the first of it has waited its 20 ms when the commit ends.
    const writes = [];
    for (let i = 1; i <= 6; i++) {
      mock.timers.tick(4);
      writes.push(batch.commit(setIf(`k${i}`, i)));
    }
    assert.ok((await first).ok);
    // A round trip to the database: the batch has done what it does next.
    await kv.get(["unrelated"]);
    assert.equal(commits.count, 2);
    for (const result of await Promise.all(writes)) assert.ok(result.ok);
    batch.close();
  } finally {
    mock.timers.reset();
  }
});

Deno.test("batchWrites() commits a write a commit left for a key it had, within the bound it waited under", async () => {
  await using kv = await openKv();
  mock.timers.enable({ apis: ["setTimeout", "Date"] });
  try {
    const batch = batchOn(kv, 50, 5, 20);
    using commits = countCommits();
    const a = (name: string): Write => ({
      key: "a",
      add: (operation) => operation.set([name], name),
    });
    const writes = [batch.commit(a("a1"))];
    mock.timers.tick(4);
    // On the first's key: it waits for the next operation.
    const second = batch.commit(a("a2"));
    for (let i = 1; i <= 3; i++) {
      mock.timers.tick(4);
      writes.push(batch.commit(setIf(`k${i}`, i)));
    }
    mock.timers.tick(4);
    // 20 ms after the first: all but the second commit.
    assert.equal(commits.count, 1);
    // One more comes while they commit.
    const last = batch.commit(setIf("k4", 4));
    for (const result of await Promise.all(writes)) assert.ok(result.ok);
    await kv.get(["unrelated"]);
    // The second has waited 16 ms, and the 20 ms of the wait it was part
    // of are over: no wait of its own begins.
    assert.equal(commits.count, 2);
    assert.ok((await second).ok && (await last).ok);
    batch.close();
  } finally {
    mock.timers.reset();
  }
});

Deno.test("batchWrites() commits what waits at its close, and each write after it at once", async () => {
  await using kv = await openKv();
  mock.timers.enable({ apis: ["setTimeout", "Date"] });
  try {
    const batch = batchOn(kv, 50, 10);
    using commits = countCommits();
    const waiting = batch.commit(setIf("a", 1));
    assert.equal(commits.count, 0);
    batch.close();
    assert.equal(commits.count, 1);
    assert.ok((await waiting).ok);
    // Committed with the clock stopped: no wait for a timer.
    assert.ok((await batch.commit(setIf("b", 2))).ok);
    assert.equal(commits.count, 2);
  } finally {
    mock.timers.reset();
  }
});

Deno.test("batchWrites() rejects the writes of an operation that fails for another reason", async () => {
  const kv = await Deno.openKv(":memory:");
  const batch = batchOn(kv, 50, 5);
  const results = Promise.allSettled([
    batch.commit(setIf("a", 1)),
    batch.commit(setIf("b", 2)),
  ]);
  kv.close();
  const settled = await results;
  assert.deepEqual(settled.map(({ status }) => status), [
    "rejected",
    "rejected",
  ]);
  const { reason } = settled[0] as PromiseRejectedResult;
  assert.ok(reason instanceof Deno.errors.BadResource, Deno.inspect(reason));
});

Deno.test("batchWrites() queues the steps its writes queue in one message, with each chain's progress", async () => {
  await using kv = await openKv();
  const batch = batchOn(kv, 50, 5);
  const step = (chain: string): Step => ({
    afterwardStep: 1,
    chain,
    index: 1,
    attempt: 1,
    tasks: [{ name: "a", args: [] }, { name: "b", args: [chain] }],
  });
  const enqueue = mock.method(Deno.AtomicOperation.prototype, "enqueue");
  try {
    const results = await Promise.all(
      ["c1", "c2", "c3"].map((chain) =>
        batch.commit({ key: chain, add: (op) => op, queue: step(chain) })
      ),
    );
    assert.ok(results.every((result) => result.ok));
    assert.equal(enqueue.mock.callCount(), 1);
    const [message] = enqueue.mock.calls[0]!.arguments;
    assert.ok(isStepGroup(message), Deno.inspect(message));
    assert.deepEqual(message.steps, [step("c1"), step("c2"), step("c3")]);
  } finally {
    enqueue.mock.restore();
  }
  const keys = kvKeys(["test"]);
  const progress = await kv.getMany(
    ["c1", "c2", "c3"].map((chain) => keys.progress(chain)),
  );
  assert.deepEqual(
    progress.map(({ value }) => value),
    Array(3).fill({ index: 1, attempt: 1 }),
  );
});

Deno.test("batchWrites() commits once the writes stop coming, though the clock stands still", async () => {
  // Date.now() stopped, as under mock.timers.enable({ apis: ["Date"] }) in a
  // program's tests: the batch's timer still runs.
  await using kv = await openKv();
  using clock = mock.timers;
  clock.enable({ apis: ["Date"], now: 1_700_000_000_000 });
  const batch = batchOn(kv, 50, 5);
  try {
    const result = await within(
      batch.commit(setIf("a", 1)),
      2_000,
      "a write with the clock stopped",
    );
    assert.ok(result.ok);
  } finally {
    batch.close();
  }
});

Deno.test("batchWrites() waits no longer than its idle time when the clock is set back", async () => {
  await using kv = await openKv();
  using clock = mock.timers;
  clock.enable({ apis: ["Date"], now: 1_700_000_000_000 });
  const batch = batchOn(kv, 50, 5);
  try {
    const write = batch.commit(setIf("a", 1));
    // An hour back, as a clock corrected by NTP may step.
    clock.setTime(1_700_000_000_000 - 3_600_000);
    const result = await within(
      write,
      2_000,
      "a write after the clock went back",
    );
    assert.ok(result.ok);
  } finally {
    batch.close();
  }
});

Deno.test("batchWrites() rejects the writes of an operation the database stayed locked for, without splitting it", async () => {
  // Another program holds the file's lock: each commit waits 5 s, then
  // fails with Deno KV's TypeError, and commitRetrying() gives up after
  // 30 s. Split, each half would wait its 30 s again.
  await using kv = await openKv();
  using clock = mock.timers;
  clock.enable({ apis: ["Date"], now: 0 });
  const commit = mock.method(
    Deno.AtomicOperation.prototype,
    "commit",
    () => {
      clock.tick(5_000);
      return Promise.reject(new TypeError("database is locked"));
    },
  );
  const batch = batchOn(kv, 50, 5);
  try {
    const settled = await within(
      Promise.allSettled(
        ["a", "b", "c", "d"].map((key) => batch.commit(setIf(key, key))),
      ),
      10_000,
      "the writes",
    );
    for (const result of settled) {
      assert.equal(result.status, "rejected");
      const { reason } = result as PromiseRejectedResult;
      assert.ok(reason instanceof TypeError, Deno.inspect(reason));
      assert.equal(reason.message, "database is locked");
    }
    // The 30 s of one operation, not of each of its halves.
    assert.equal(commit.mock.callCount(), 6);
  } finally {
    commit.mock.restore();
    batch.close();
  }
});

Deno.test("batchWrites() commits at its timer's tick when only setTimeout is mocked", async () => {
  await using kv = await openKv();
  using clock = mock.timers;
  clock.enable({ apis: ["setTimeout"] });
  const batch = batchOn(kv, 50, 5);
  using commits = countCommits();
  const write = batch.commit(setIf("a", 1));
  clock.tick(4);
  assert.equal(commits.count, 0);
  // No write came while the timer ran: the real clock, which did not move
  // 5 ms meanwhile, does not hold it.
  clock.tick(1);
  assert.equal(commits.count, 1);
  assert.ok((await write).ok);
});
