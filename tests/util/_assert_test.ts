// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { assertOptions, describe } from "../../src/util/_assert.ts";

Deno.test("assertOptions() names the option a misspelt key most likely meant", async (t) => {
  const known = [
    "timeout",
    "shutdownTimeout",
    "shutdownSignals",
    "signal",
    "onError",
    "onTaskError",
    "handler",
    "queue",
  ];
  const table: [string, string][] = [
    ["timout", "did you mean 'timeout'?"],
    ["shutdownTimout", "did you mean 'shutdownTimeout'?"],
    ["onEror", "did you mean 'onError'?"],
    ["Signal", "did you mean 'signal'?"],
    // Too far from every key to be a slip of the keyboard.
    ["retries", `they are ${known.map((key) => `'${key}'`).join(", ")}`],
    ["queueName", `they are ${known.map((key) => `'${key}'`).join(", ")}`],
    ["xyz", `they are ${known.map((key) => `'${key}'`).join(", ")}`],
  ];
  for (const [key, hint] of table) {
    await t.step(key, () => {
      assert.throws(() => assertOptions({ [key]: 1 }, known, "Cannot test"), {
        name: "TypeError",
        message: `Cannot test as '${key}' is not one of its options: ${hint}`,
      });
    });
  }
  await t.step("what is not a plain object", () => {
    for (
      const [value, shown] of [[null, "null"], ["x", '"x"'], [[], "an array"], [
        new Date(0),
        "a Date",
      ]] as const
    ) {
      assert.throws(() => assertOptions(value, known, "Cannot test"), {
        name: "TypeError",
        message:
          `Cannot test as 'options' must be a plain object: current value is ${shown}`,
      });
    }
    assertOptions(Object.create(null), known, "Cannot test");
  });
});

Deno.test("describe() shows a value for an error message", () => {
  assert.deepEqual(
    ["s", 1, undefined, () => {}, {}, [], new Map(), Object.create(null)].map(
      describe,
    ),
    [
      '"s"',
      "1",
      "undefined",
      "a function",
      "an object",
      "an array",
      "a Map",
      "an object",
    ],
  );
});

Deno.test("describe() puts a or an before a class name as it is spoken", () => {
  assert.deepEqual(
    [
      new Error("x"),
      new ArrayBuffer(1),
      new Uint8Array(1),
      new URL("http://localhost/"),
      new URLSearchParams(),
      new Map(),
    ].map(describe),
    [
      "an Error",
      "an ArrayBuffer",
      "a Uint8Array",
      "a URL",
      "a URLSearchParams",
      "a Map",
    ],
  );
});
