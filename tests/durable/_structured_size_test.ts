// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  messageSize,
  structuredSize,
  structuredSizeBound,
} from "../../src/durable/_structured_size.ts";
import { openKv } from "../_helpers/kv.ts";

/** Values a task may carry, the awkward ones included. */
function corpus(): unknown[] {
  const shared = { id: "shared" };
  const cycle: Record<string, unknown> = { name: "cycle" };
  cycle["self"] = cycle;
  const sparse: unknown[] = [1, , 3];
  sparse[1_000] = "far";
  const buffer = new ArrayBuffer(64);
  return [
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
    // Views over more than they show: Deno KV writes the whole buffer.
    new Uint8Array(30_000).subarray(0, 16),
    Buffer.from("pooled"),
    // Built-ins that hide what they are, or lie about their contents.
    Object.setPrototypeOf(new Map([["k", "v".repeat(3_000)]]), null),
    Object.setPrototypeOf(new Set(["s".repeat(3_000)]), Object.prototype),
    Object.setPrototypeOf(new Uint8Array(3_000).buffer, null),
    Object.setPrototypeOf(new Date(0), null),
    Object.assign(new Map([["k", "v".repeat(3_000)]]), { entries: null }),
    Object.defineProperty(new Uint8Array(4_000).subarray(0, 1), "buffer", {
      value: new ArrayBuffer(0),
    }),
    Object.defineProperty(new RegExp("x".repeat(3_000)), "source", {
      value: "",
    }),
    Object.assign(["a"], { extra: "x".repeat(3_000) }),
    Object.assign(
      Object.defineProperty(["a", "b"], "1", { enumerable: false }),
      { extra: "x".repeat(3_000) },
    ),
  ];
}

/** Deno KV's limit on a message, its header included. */
const LIMIT = 65_536;

/**
 * Pads each value of the corpus with as many `char`s as `measure` says fit
 * in a message, and enqueues it: Deno KV refuses it if `measure` was below
 * what it writes.
 */
async function assertFits(
  measure: (value: unknown) => number,
  char: string,
): Promise<void> {
  await using kv = await openKv();
  for (const value of corpus()) {
    let length = LIMIT - measure([value, ""]);
    if (length < 0) continue;
    while (measure([value, char.repeat(length)]) > LIMIT) length--;
    try {
      await kv.enqueue([value, char.repeat(length)], { delay: 3_600_000 });
    } catch (error) {
      throw new Error(`Measured too small: ${Deno.inspect(value)}`, {
        cause: error,
      });
    }
  }
}

Deno.test("structuredSizeBound() is never below what Deno KV writes", async () => {
  // A two-byte padding, so that the bound of the padding is its exact size.
  // The 2-byte header comes once per message, outside any value.
  await assertFits((value) => structuredSizeBound(value) + 2, "\u0100");
});

Deno.test("structuredSize() is never below what Deno KV writes", async () => {
  await assertFits(structuredSize, "p");
});

Deno.test("messageSize() is never below what Deno KV writes for a delivered copy", async () => {
  await using kv = await openKv();
  // A packed array of doubles weighs more as given than once delivered.
  const values = [...corpus(), Array.from(new Float64Array([1, 2, 3]))];
  const padded = values.map((value) => {
    let length = LIMIT - messageSize([value, ""]);
    while (length > 0 && messageSize([value, "p".repeat(length)]) > LIMIT) {
      length--;
    }
    return length < 0 ? undefined : [value, "p".repeat(length)];
  }).filter((message) => message !== undefined);
  const failures: string[] = [];
  let left = padded.length;
  const done = Promise.withResolvers<void>();
  // Each delivered copy is enqueued again, as a chain's next step is.
  kv.listenQueue(async (message: [unknown, string]) => {
    try {
      await kv.enqueue(message, { delay: 3_600_000 });
    } catch (error) {
      failures.push(`${Deno.inspect(message[0])}: ${error}`);
    }
    if (--left === 0) done.resolve();
  });
  for (const message of padded) {
    try {
      await kv.enqueue(message);
    } catch (error) {
      failures.push(`first: ${Deno.inspect(message[0])}: ${error}`);
      left--;
    }
  }
  if (left === 0) done.resolve();
  await done.promise;
  assert.deepEqual(failures, []);
});

Deno.test("structuredSizeBound() stays close for common arguments", () => {
  const values = ["ada@example.com", 42, { id: "u_1", plan: "pro" }];
  for (const value of values) {
    const written = structuredSize(value) - 2;
    assert.ok(structuredSizeBound(value) <= 4 * written + 32);
  }
});

Deno.test("structuredSizeBound() leaves what it cannot bound to a measure", () => {
  const withProperty = Object.assign([1], { extra: true });
  for (const value of [new Error("boom"), new String("boxed"), withProperty]) {
    assert.equal(structuredSizeBound(value), Infinity);
  }
});
