// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { backoff, delay, isRetriable } from "../../src/core/_retry.ts";
import { defineTask } from "../../mod.ts";

const policy = defineTask(() => {}, {
  retry: { minDelay: 100, maxDelay: 1_000, multiplier: 3, jitter: 0.5 },
}).retry!;
const info = {
  name: "t",
  index: 0,
  attempt: 1,
  request: undefined,
  delivered: undefined,
};

Deno.test("backoff() grows by the multiplier up to maxDelay, less its jitter", () => {
  assert.deepEqual([1, 2, 3, 4].map((retry) => backoff(policy, retry, 0)), [
    100,
    300,
    900,
    1_000,
  ]);
  assert.equal(backoff(policy, 2, 1), 150);
});

Deno.test("isRetriable() asks the policy, and answers no when it throws", () => {
  const consoleError = mock.method(console, "error", () => {});
  try {
    const picky = defineTask(() => {}, {
      retry: {
        isRetriable(error) {
          if (error === "boom") throw new Error("policy broke");
          return error === "again";
        },
      },
    }).retry!;
    assert.deepEqual(
      ["again", "other", "boom"].map((error) =>
        isRetriable(picky, error, info)
      ),
      [true, false, false],
    );
    assert.match(
      String(consoleError.mock.calls[0]?.arguments[0]),
      /'isRetriable' handler threw/,
    );
  } finally {
    consoleError.mock.restore();
  }
});

Deno.test("delay() waits, or ends as soon as its signal aborts", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const controller = new AbortController();
    const waited = delay(1_000, controller.signal);
    mock.timers.tick(1_000);
    assert.equal(await waited, true);
    const cut = delay(1_000, controller.signal);
    controller.abort();
    assert.equal(await cut, false);
    assert.equal(await delay(1_000, controller.signal), false);
  } finally {
    mock.timers.reset();
  }
});
