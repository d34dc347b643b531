// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { groupCommit } from "../../src/durable/_group_commit.ts";
import { macrotasks } from "../_helpers/common.ts";

Deno.test("groupCommit() stores the items handed in together in groups", async () => {
  const commits: number[][] = [];
  const store = groupCommit<number>((group) => {
    commits.push(group);
    return Promise.resolve();
  }, 4);
  await Promise.all([1, 2, 3, 4, 5, 6].map((item) => store(item)));
  assert.deepEqual(commits, [[1, 2, 3, 4], [5, 6]]);
});

Deno.test("groupCommit() groups what arrives while a commit is in flight", async () => {
  const commits: number[][] = [];
  const gate = Promise.withResolvers<void>();
  const store = groupCommit<number>(async (group) => {
    commits.push(group);
    if (commits.length === 1) await gate.promise;
  }, 10);
  const first = store(1);
  await Promise.resolve(); // the first commit starts
  const later = [2, 3, 4].map((item) => store(item));
  gate.resolve();
  await Promise.all([first, ...later]);
  assert.deepEqual(commits, [[1], [2, 3, 4]]);
});

Deno.test("groupCommit() rejects only the item at fault, with its own error", async () => {
  const commits: string[][] = [];
  const store = groupCommit<string>((group) => {
    commits.push(group);
    return group.includes("bad")
      ? Promise.reject(new Error(`refused ${group.join(",")}`))
      : Promise.resolve();
  }, 10);
  const outcomes = await Promise.allSettled(
    ["a", "b", "bad", "c", "d"].map((item) => store(item)),
  );
  assert.deepEqual(
    outcomes.map((outcome) =>
      outcome.status === "fulfilled" ? "stored" : outcome.reason.message
    ),
    ["stored", "stored", "refused bad", "stored", "stored"],
  );
  assert.deepEqual(commits, [
    ["a", "b", "bad", "c", "d"],
    ["a", "b", "bad"],
    ["a", "b"],
    ["bad"],
    ["c", "d"],
  ]);
});

Deno.test("groupCommit() goes on after a failed group", async () => {
  let healthy = false;
  const store = groupCommit<number>(() => {
    return healthy ? Promise.resolve() : Promise.reject(new Error("down"));
  }, 10);
  const failed = await Promise.allSettled([store(1), store(2)]);
  assert.deepEqual(failed.map((outcome) => outcome.status), [
    "rejected",
    "rejected",
  ]);
  healthy = true;
  await store(3);
});

Deno.test("groupCommit() rejects a whole group for an error that is nobody's fault", async () => {
  const commits: number[][] = [];
  const store = groupCommit<number>(
    (group) => {
      commits.push(group);
      return Promise.reject(new Error("connection lost"));
    },
    10,
    { split: (error) => error instanceof TypeError },
  );
  const outcomes = await Promise.allSettled(
    [1, 2, 3].map((item) => store(item)),
  );
  assert.deepEqual(
    outcomes.map((outcome) =>
      outcome.status === "rejected" ? outcome.reason.message : "stored"
    ),
    ["connection lost", "connection lost", "connection lost"],
  );
  assert.deepEqual(commits, [[1, 2, 3]]);
});

Deno.test("groupCommit() idle() waits for what is being stored", async () => {
  const gate = Promise.withResolvers<void>();
  const stored: number[] = [];
  const store = groupCommit<number>(async (group) => {
    await gate.promise;
    stored.push(...group);
  }, 10);
  await store.idle();
  const pending = [store(1), store(2)];
  const idle = store.idle().then(() => [...stored]);
  gate.resolve();
  assert.deepEqual(await idle, [1, 2]);
  await Promise.all(pending);
});

Deno.test("groupCommit() commits a group again after the delay retry gives, with what arrived meanwhile", async () => {
  const commits: [number[], boolean][] = [];
  const failures: number[] = [];
  let down = 2;
  const arrived = Promise.withResolvers<void>();
  const store = groupCommit<number>(
    async (group, retrying) => {
      commits.push([group, retrying]);
      if (down-- > 0) {
        // Item 3 comes while the first commit is in flight.
        if (commits.length === 1) await arrived.promise;
        throw new Error("Connection lost");
      }
    },
    10,
    {
      split: (error) => error instanceof TypeError,
      retry: (_error, failed) => {
        failures.push(failed);
        return 0;
      },
    },
  );
  const stored = [store(1), store(2)];
  await Promise.resolve(); // the first commit starts
  stored.push(store(3));
  arrived.resolve();
  await Promise.all(stored);
  assert.deepEqual(commits, [
    [[1, 2], false],
    [[1, 2, 3], true],
    [[1, 2, 3], true],
  ]);
  assert.deepEqual(failures, [1, 2]);
  // A success starts the count again.
  down = 1;
  await store(4);
  assert.deepEqual(failures, [1, 2, 1]);
  assert.deepEqual(commits.slice(3), [[[4], false], [[4], true]]);
});

Deno.test("groupCommit() retries only errors that are nobody's fault, and splits the others", async () => {
  const commits: string[][] = [];
  let connected = false;
  const store = groupCommit<string>(
    (group) => {
      commits.push(group);
      if (!connected) {
        connected = true;
        return Promise.reject(new Error("Connection lost"));
      }
      return group.includes("bad")
        ? Promise.reject(new TypeError("Do not know how to serialize"))
        : Promise.resolve();
    },
    10,
    {
      split: (error) => error instanceof TypeError,
      retry: () => 0,
    },
  );
  const outcomes = await Promise.allSettled(
    ["a", "bad", "c"].map((item) => store(item)),
  );
  assert.deepEqual(
    outcomes.map((outcome) =>
      outcome.status === "fulfilled" ? "stored" : String(outcome.reason)
    ),
    ["stored", "TypeError: Do not know how to serialize", "stored"],
  );
  assert.deepEqual(commits, [
    ["a", "bad", "c"],
    ["a", "bad", "c"],
    ["a", "bad"],
    ["a"],
    ["bad"],
    ["c"],
  ]);
});

// The tests with signals give up after 100 retries, so that a signal that
// does not act fails them instead of retrying forever.

Deno.test("groupCommit() lets an item whose signal aborts leave the retries, rejected with the reason", async () => {
  const commits: number[][] = [];
  let healthy = false;
  const failed = Promise.withResolvers<void>();
  const store = groupCommit<number>(
    (group) => {
      commits.push(group);
      if (healthy) return Promise.resolve();
      failed.resolve();
      return Promise.reject(new Error("Connection refused"));
    },
    10,
    {
      retry: (_error, failures) => failures < 100 ? 0 : undefined,
      split: () => false,
    },
  );
  const deadline = new AbortController();
  const kept = store(1);
  const given = store(2, deadline.signal);
  await failed.promise;
  const reason = new Error("Abandoned at the drain deadline");
  deadline.abort(reason);
  await assert.rejects(given, (error) => error === reason);
  healthy = true;
  await kept;
  assert.deepEqual(commits.at(-1), [1]);
});

Deno.test("groupCommit() rejects an item at once when its signal aborts during its commit", async () => {
  const gate = Promise.withResolvers<void>();
  const store = groupCommit<number>(async () => {
    await gate.promise;
  }, 10);
  const deadline = new AbortController();
  const given = store(1, deadline.signal);
  await Promise.resolve(); // the commit starts, and hangs
  deadline.abort(new RangeError("Deadline"));
  await assert.rejects(given, { name: "RangeError", message: "Deadline" });
  // Nothing is left to wait for, though the commit is still in flight.
  await store.idle();
  gate.resolve();
});

Deno.test("groupCommit() refuses an item whose signal has already aborted, without a commit", async () => {
  const commits: number[][] = [];
  const store = groupCommit<number>((group) => {
    commits.push(group);
    return Promise.resolve();
  }, 10);
  await assert.rejects(
    store(1, AbortSignal.abort(new Error("Too late"))),
    { name: "Error", message: "Too late" },
  );
  await store.idle();
  assert.deepEqual(commits, []);
});

Deno.test("groupCommit() stops waiting to retry once every item has left", async () => {
  // A retry an hour away: the op sanitizer fails this test if its timer
  // outlives the items.
  const retrying = Promise.withResolvers<void>();
  const store = groupCommit<number>(
    () => Promise.reject(new Error("Connection refused")),
    10,
    {
      retry: () => {
        retrying.resolve();
        return 3_600_000;
      },
      split: () => false,
    },
  );
  const deadline = new AbortController();
  const given = store(1, deadline.signal);
  await retrying.promise;
  await macrotasks(1); // the group commit is in its pause
  deadline.abort(new Error("Abandoned"));
  await assert.rejects(given, { name: "Error", message: "Abandoned" });
  await store.idle();
});

Deno.test("groupCommit() rejects the items still waiting on a shared signal when it aborts", async () => {
  const commits: number[][] = [];
  const gate = Promise.withResolvers<void>();
  const failed = Promise.withResolvers<void>();
  const store = groupCommit<number>(
    async (group) => {
      commits.push(group);
      if (commits.length === 1) return await gate.promise;
      failed.resolve();
      throw new Error("Connection refused");
    },
    10,
    {
      retry: (_error, failures) => failures < 100 ? 0 : undefined,
      split: () => false,
    },
  );
  const deadline = new AbortController();
  const first = store(1, deadline.signal);
  await Promise.resolve(); // the first commit starts
  // These wait with the same signal while the first is stored.
  const waiting = [store(2, deadline.signal), store(3, deadline.signal)];
  gate.resolve();
  await first;
  await failed.promise;
  deadline.abort(new Error("Abandoned"));
  const outcomes = await Promise.allSettled(waiting);
  assert.deepEqual(
    outcomes.map((outcome) =>
      outcome.status === "rejected" ? outcome.reason.message : "stored"
    ),
    ["Abandoned", "Abandoned"],
  );
  assert.deepEqual(commits.slice(0, 2), [[1], [2, 3]]);
  await store.idle();
});
