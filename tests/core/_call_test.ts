// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One call of a task, raced against its timeout and its holder's signal.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { call } from "../../src/core/_call.ts";
import { defineTask, TaskTimeoutError } from "../../mod.ts";
import type { TaskInfo } from "../../src/api/task_info.ts";

const info: TaskInfo = {
  name: "task",
  index: 0,
  attempt: 1,
  request: undefined,
  delivered: undefined,
};

function plain(fn: () => unknown) {
  return { fn, args: [], defined: undefined };
}

Deno.test("call() settles at once with what a task returned or threw", () => {
  const options = { id: "", signal: undefined, timeout: undefined };
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
  const holder = new AbortController();
  const reason = new Error("deadline");
  const result = call(
    plain(() => holder.abort(reason)),
    info,
    { id: "", signal: holder.signal, timeout: undefined },
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
    { id: "chain:0", signal: undefined, timeout: 1 },
    undefined,
  );
  assert.equal(result.outcome, "timedOut");
  assert.ok(result.value instanceof TaskTimeoutError);
  assert.equal(signal!.reason, result.value);
});

Deno.test("call() ends at once when a worker's shutdown gives up on a task that never settles", async () => {
  const shutdown = new AbortController();
  const told: unknown[] = [];
  const started = call(
    plain(() => new Promise(() => {})),
    info,
    { id: "", signal: shutdown.signal, timeout: undefined },
    (reason) => void told.push(reason),
  );
  shutdown.abort("closed");
  assert.deepEqual(await started, { outcome: "abandoned", value: "closed" });
  assert.deepEqual(told, ["closed"]);
});

Deno.test("call() tells at once of a chain giving up, and ends without waiting for the task", async () => {
  const chain = new AbortController();
  const told: unknown[] = [];
  const settle = Promise.withResolvers<string>();
  const started = call(
    plain(() => settle.promise),
    info,
    { id: "", signal: chain.signal, timeout: undefined },
    (reason) => void told.push(reason),
  );
  chain.abort("deadline");
  assert.deepEqual(told, ["deadline"]);
  assert.deepEqual(await started, { outcome: "abandoned", value: "deadline" });
  // Settling late changes nothing, and tells nothing more.
  settle.resolve("done late");
  await settle.promise;
  assert.deepEqual(told, ["deadline"]);
});

Deno.test("call() counts a timeout from the clock it is given: what the task did before its promise counts", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    // Called as if a minute ago, with a timeout of 100 s: 40 s are left.
    const result = call(
      plain(() => new Promise(() => {})),
      info,
      { id: "", signal: undefined, timeout: 100_000 },
      undefined,
      performance.now() - 60_000,
    );
    let ended = false;
    void Promise.resolve(result).then(() => ended = true);
    mock.timers.tick(30_000);
    await Promise.resolve();
    assert.equal(ended, false, "timed out before its time");
    mock.timers.tick(10_000);
    assert.equal((await result).outcome, "timedOut");
  } finally {
    mock.timers.reset();
  }
});

Deno.test("call() sets a timeout's timer before it follows the task's promise, which Deno may settle inside setTimeout", async () => {
  // In a process of its own, whose first timer runs the pending microtasks
  // (tests/suites/deno_behaviours_test.ts): a task already settled must be
  // followed only once its timer is set, so that its end clears the timer,
  // which would otherwise abort its signal after it succeeded. A timer of
  // the same delay set after it fires after it.
  const dir = await Deno.makeTempDir();
  try {
    const source = new URL("../../src/core/_call.ts", import.meta.url).href;
    await Deno.writeTextFile(
      `${dir}/probe_test.ts`,
      `import { call } from ${JSON.stringify(source)};
      Deno.test("probe", async () => {
        let signal;
        const info = { name: "task", index: 0, attempt: 1, request: undefined, delivered: undefined };
        const task = {
          fn: (context) => {
            signal = context.signal;
            return Promise.resolve(1);
          },
          args: [],
          defined: {},
        };
        const result = await call(task, info, { id: "", signal: undefined, timeout: 1 }, undefined);
        await new Promise((resolve) => setTimeout(resolve, 1));
        console.log("outcome:", result.outcome, "aborted after:", signal.aborted);
      });`,
    );
    const { stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["test", "--no-check", "--allow-read", `${dir}/probe_test.ts`],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "null",
    }).output();
    assert.match(
      new TextDecoder().decode(stdout),
      /outcome: succeeded aborted after: false/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
