// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { groupCommit } from "../src/_group_commit.ts";

Deno.test("groupCommit() stores the items handed in together in groups", async () => {
  const commits: number[][] = [];
  const store = groupCommit<number>((group) => {
    commits.push(group);
    return Promise.resolve();
  }, 4);
  await Promise.all([1, 2, 3, 4, 5, 6].map(store));
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
  const later = [2, 3, 4].map(store);
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
    ["a", "b", "bad", "c", "d"].map(store),
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
    (error) => error instanceof TypeError,
  );
  const outcomes = await Promise.allSettled([1, 2, 3].map(store));
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
