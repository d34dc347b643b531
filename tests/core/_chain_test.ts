// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { Chain, type ChainState } from "../../src/core/_chain.ts";
import { taskOf } from "../../src/core/_task.ts";

/** A chain moved along `path` from its first state. */
function chainAt(...path: ChainState[]): Chain {
  const chain = new Chain();
  for (const state of path) chain.moveTo(state);
  return chain;
}

Deno.test("a chain moves through its life as the runner takes it", async (t) => {
  const lives: [string, ChainState[]][] = [
    ["run in process", ["waiting", "queued", "running", "finished"]],
    ["stored before its response", ["storing", "handedOver"]],
    ["stored after its response", [
      "waiting",
      "queued",
      "storing",
      "handedOver",
    ]],
    ["returned empty, then given a task", ["returned", "waiting"]],
    ["its handler failed", ["discarded"]],
    ["its response was not delivered", ["waiting", "skipped"]],
    ["given up on while it ran", ["waiting", "queued", "running", "abandoned"]],
    ["run with run()", ["running", "finished"]],
    ["its tasks all keyed, sent", ["waiting", "finished"]],
    ["a keyed task replaced while it waited", ["waiting", "deduplicated"]],
    ["a keyed task replaced while it waited for a slot", [
      "waiting",
      "queued",
      "deduplicated",
    ]],
  ];
  for (const [name, path] of lives) {
    await t.step(name, () => {
      assert.equal(chainAt(...path).state, path.at(-1));
    });
  }
});

Deno.test("a chain refuses a move its life does not allow", async (t) => {
  const illegal: [ChainState[], ChainState][] = [
    [[], "finished"],
    [["waiting", "queued", "running", "finished"], "running"],
    [["returned"], "discarded"],
    [["waiting", "queued", "running"], "storing"],
    [["storing"], "running"],
    [["discarded"], "open"],
    [["waiting"], "running"],
    [["running"], "deduplicated"],
  ];
  for (const [path, to] of illegal) {
    const from = path.at(-1) ?? "open";
    await t.step(`${from} to ${to}`, () => {
      const chain = chainAt(...path);
      assert.throws(() => chain.moveTo(to), {
        name: "Error",
        message: `Cannot move a chain from "${from}" to "${to}"`,
      });
      assert.equal(chain.state, from);
    });
  }
});

Deno.test("a chain takes tasks until it ends or is being stored", () => {
  const task = () => taskOf(() => {}, []);
  const open = new Chain();
  open.add(task());
  assert.equal(open.added, 1);
  for (
    const path of [["storing"], ["discarded"], [
      "running",
      "finished",
    ]] as ChainState[][]
  ) {
    const chain = chainAt(...path);
    assert.equal(chain.accepting, false, path.join(" "));
    assert.throws(() => chain.add(task()), {
      message: "Cannot add task as the request's tasks have already run",
    });
  }
  assert.equal(chainAt("waiting", "queued", "running").accepting, true);
});

Deno.test("taskOf() calls a task with its arguments as given, keeping none it need not", async (t) => {
  const calls: unknown[][] = [];
  const record = (...args: unknown[]) => calls.push(args);
  const list = [1, 2];
  const cases: [string, unknown[]][] = [
    ["no argument", []],
    ["one argument", ["a"]],
    ["one argument that is an array", [list]],
    ["one argument that is undefined", [undefined]],
    ["several arguments", ["a", list, undefined]],
  ];
  for (const [name, args] of cases) {
    await t.step(name, () => {
      calls.length = 0;
      const task = taskOf(record, args);
      task.call();
      assert.deepEqual(calls, [args]);
      assert.deepEqual(task.args, args);
      // An array argument is passed as the same array, never a copy.
      if (args.includes(list)) assert.equal(calls[0]!.includes(list), true);
    });
  }
  await t.step("called as a plain function", () => {
    let self: unknown = "unset";
    taskOf(function (this: unknown) {
      self = this;
    }, ["a"]).call();
    assert.equal(self, undefined);
  });
  await t.step("no arguments share one array, which cannot change", () => {
    const args = taskOf(record, []).args;
    assert.equal(taskOf(record, []).args, args);
    assert.ok(Object.isFrozen(args));
  });
});
