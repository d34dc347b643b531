// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The executor's last line of defence, which only a bug in the runner can
// reach: it is provoked here with an owner that throws.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { Chain, type ChainOwner } from "../../src/core/_chain.ts";
import { taskOf } from "../../src/core/_task.ts";
import { runChain } from "../../src/core/_execute.ts";
import { logTaskError } from "../../mod.ts";
import { guardedTest } from "../_helpers/common.ts";

guardedTest(
  "runChain() never rejects, even when the runner itself throws",
  async () => {
    const consoleError = mock.method(console, "error", () => {});
    try {
      const bug = new Error("bookkeeping bug");
      const finished: Chain[] = [];
      const config = {
        onTaskError: logTaskError,
        onTaskStart: undefined,
        onTaskEnd: undefined,
        timeout: undefined,
        telemetry: undefined,
      };
      const owner: ChainOwner = {
        config,
        accept: () => true,
        retried() {},
        taskSettled() {
          throw bug;
        },
        finished(chain) {
          finished.push(chain);
          chain.moveTo("finished");
        },
        scheduleReturned() {},
        inProcess: () => undefined,
        successor: () => new Chain(),
      };
      const chain = new Chain();
      chain.owner = owner;
      const fn = () => "done";
      chain.add(taskOf(fn, []));
      const results = await runChain(chain, config);
      assert.deepEqual(results, [
        { status: "fulfilled", name: "fn", index: 0, value: "done" },
      ]);
      assert.deepEqual(finished, [chain]);
      assert.deepEqual(consoleError.mock.calls[0]?.arguments, [
        "Internal error in @afterward/background-tasks, please report it:",
        bug,
      ]);
      assert.equal(chain.state, "finished");
    } finally {
      consoleError.mock.restore();
    }
  },
);
