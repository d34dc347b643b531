// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One call of a task, raced against its timeout and its holder.

import assert from "node:assert/strict";
import { call, type Holder } from "../../src/core/_call.ts";
import { defineTask, TaskTimeoutError } from "../../mod.ts";
import type { TaskInfo } from "../../src/api/task_info.ts";

const info: TaskInfo = {
  name: "task",
  index: 0,
  attempt: 1,
  request: undefined,
  delivered: undefined,
};

/** A holder as a chain is one: its signal made on first use. */
function chainHolder(endsAttemptsAtOnce = false): Holder & {
  giveUp(reason: unknown): void;
} {
  let controller: AbortController | undefined;
  return {
    get controller() {
      return controller;
    },
    get signal() {
      return (controller ??= new AbortController()).signal;
    },
    endsAttemptsAtOnce,
    giveUp(reason) {
      (controller ??= new AbortController()).abort(reason);
    },
  };
}

function plain(fn: () => unknown) {
  return { fn, args: [], defined: undefined };
}

Deno.test("call() settles at once with what a task returned or threw", () => {
  const options = { id: "", holder: undefined, timeout: undefined };
  assert.deepEqual(call(plain(() => 1), info, options, undefined), {
    outcome: "succeeded",
    value: 1,
  });
  const error = new Error("no");
  assert.deepEqual(
    call(
      plain(() => {
        throw error;
      }),
      info,
      options,
      undefined,
    ),
    { outcome: "failed", value: error },
  );
});

Deno.test("call() counts as abandoned a task whose holder gave up during it", () => {
  const holder = chainHolder();
  const reason = new Error("deadline");
  const result = call(
    plain(() => holder.giveUp(reason)),
    info,
    { id: "", holder, timeout: undefined },
    undefined,
  );
  assert.deepEqual(result, { outcome: "abandoned", value: reason });
});

Deno.test("call() times a task out, aborting its signal with a TaskTimeoutError", async () => {
  let signal: AbortSignal | undefined;
  const task = defineTask(({ signal: given }) => {
    signal = given;
    return new Promise(() => {});
  }, { name: "slow" });
  const result = await call(
    { fn: task.fn, args: [], defined: task },
    { ...info, name: "slow" },
    { id: "chain:0", holder: undefined, timeout: 1 },
    undefined,
  );
  assert.equal(result.outcome, "timedOut");
  assert.ok(result.value instanceof TaskTimeoutError);
  assert.equal(signal!.reason, result.value);
});

Deno.test("call() ends at once when a worker's holder gives up on a task that never settles", async () => {
  const holder = chainHolder(true);
  const told: unknown[] = [];
  const started = call(
    plain(() => new Promise(() => {})),
    info,
    { id: "", holder, timeout: undefined },
    (reason) => void told.push(reason),
  );
  holder.giveUp("closed");
  assert.deepEqual(await started, { outcome: "abandoned", value: "closed" });
  assert.deepEqual(told, ["closed"]);
});

Deno.test("call() tells at once of a chain giving up, and ends when the task settles", async () => {
  const holder = chainHolder();
  const told: unknown[] = [];
  const settle = Promise.withResolvers<string>();
  let ended = false;
  const started = Promise.resolve(call(
    plain(() => settle.promise),
    info,
    { id: "", holder, timeout: undefined },
    (reason) => void told.push(reason),
  )).then((result) => {
    ended = true;
    return result;
  });
  holder.giveUp("deadline");
  assert.deepEqual(told, ["deadline"]);
  // The chain's loop is all that waits on the attempt: it waits for the task.
  await Promise.resolve();
  assert.equal(ended, false);
  settle.resolve("done late");
  assert.deepEqual(await started, { outcome: "abandoned", value: "deadline" });
});
