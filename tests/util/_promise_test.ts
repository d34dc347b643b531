// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import {
  abortIsolated,
  functionName,
  isThenable,
  toPromise,
} from "../../src/util/_promise.ts";

Deno.test("functionName() reads a name that can be read, else says anonymous", () => {
  const throwing = () => {};
  Object.defineProperty(throwing, "name", {
    get() {
      throw new Error("no");
    },
  });
  const symbol = () => {};
  Object.defineProperty(symbol, "name", { value: Symbol("s") });
  assert.deepEqual(
    [function named() {}, () => {}, throwing, symbol].map(functionName),
    ["named", "anonymous", "anonymous", "anonymous"],
  );
});

Deno.test("isThenable() and toPromise() never throw on what they are given", async () => {
  const hostileThen = Object.defineProperty({}, "then", {
    get() {
      throw new Error("no then");
    },
  });
  assert.equal(isThenable(hostileThen), true);
  assert.equal(isThenable({ then: 1 }), false);
  assert.equal(isThenable(null), false);
  const hostilePromise = Promise.resolve(1);
  Object.defineProperty(hostilePromise, "constructor", {
    get() {
      throw new Error("no constructor");
    },
  });
  await assert.rejects(() => toPromise(hostilePromise), {
    message: "no constructor",
  });
  await assert.rejects(() => toPromise(hostileThen), { message: "no then" });
  assert.equal(await toPromise(2), 2);
});

Deno.test("abortIsolated() hands a throwing listener's error over, and the others still run", () => {
  const controller = new AbortController();
  const ran: string[] = [];
  controller.signal.addEventListener("abort", () => {
    throw new Error("listener failed");
  });
  controller.signal.addEventListener("abort", () => void ran.push("second"));
  const caught: unknown[] = [];
  abortIsolated(controller, "why", (error) => void caught.push(error));
  assert.deepEqual(ran, ["second"]);
  assert.equal((caught[0] as Error).message, "listener failed");
  assert.equal(controller.signal.reason, "why");
});

Deno.test("abortIsolated() inside a listener hands a throw to the innermost caller only", () => {
  const outer = new AbortController();
  const inner = new AbortController();
  inner.signal.addEventListener("abort", () => {
    throw new Error("inner listener failed");
  });
  outer.signal.addEventListener("abort", () => {
    abortIsolated(inner, "inner", (error) => void innerCaught.push(error));
    throw new Error("outer listener failed");
  });
  const innerCaught: unknown[] = [];
  const outerCaught: unknown[] = [];
  abortIsolated(outer, "outer", (error) => void outerCaught.push(error));
  assert.deepEqual(innerCaught.map((error) => (error as Error).message), [
    "inner listener failed",
  ]);
  assert.deepEqual(outerCaught.map((error) => (error as Error).message), [
    "outer listener failed",
  ]);
});
