// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { serialize } from "node:v8";
import { structuredSizeBound } from "../src/_serializable.ts";

Deno.test("structuredSizeBound() is never below what V8 writes", () => {
  const shared = { id: "shared" };
  const cycle: Record<string, unknown> = { name: "cycle" };
  cycle.self = cycle;
  const sparse: unknown[] = [1, , 3];
  sparse[1_000] = "far";
  const buffer = new ArrayBuffer(64);
  const values: unknown[] = [
    "",
    "ascii",
    "é".repeat(100),
    "😀 two-byte".repeat(50),
    "x".repeat(70_000),
    0,
    -1,
    2 ** 31,
    -(2 ** 52) + 0.5,
    NaN,
    -0,
    0n,
    -(2n ** 200n),
    true,
    false,
    undefined,
    null,
    [],
    [1, "two", [3, [4]]],
    sparse,
    {},
    { "0": 1, "4294967295": 2, ["a long key ".repeat(20)]: [null] },
    Object.assign(Object.create(null), { bare: true }),
    { a: shared, b: shared, c: [shared, shared] },
    cycle,
    new Date(0),
    /a+b*/gimsuy,
    new Map<unknown, unknown>([["k", { v: 1 }], [{ key: 2 }, [3]]]),
    new Set(["a", 1, { b: 2 }]),
    buffer,
    new Uint8Array(buffer, 8, 16),
    new Float64Array([1.5, -2.5]),
    new DataView(new ArrayBuffer(8)),
    [new Uint8Array(buffer), new Int32Array(buffer)],
  ];
  for (const value of values) {
    // V8 writes a 2-byte header once per message, outside any value.
    const written = serialize(value).byteLength - 2;
    const bound = structuredSizeBound(value);
    assert.ok(
      bound >= written,
      `${Deno.inspect(value).slice(0, 60)}: bound ${bound} < ${written}`,
    );
  }
});

Deno.test("structuredSizeBound() stays close for common arguments", () => {
  const values = ["ada@example.com", 42, { id: "u_1", plan: "pro" }];
  for (const value of values) {
    const written = serialize(value).byteLength - 2;
    assert.ok(structuredSizeBound(value) <= 4 * written + 32);
  }
});

Deno.test("structuredSizeBound() leaves what it cannot bound to a measure", () => {
  const withProperty = Object.assign([1], { extra: true });
  for (const value of [new Error("boom"), new String("boxed"), withProperty]) {
    assert.equal(structuredSizeBound(value), Infinity);
  }
});
