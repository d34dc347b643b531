// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  assertSerializable,
  messageSize,
  structuredSize,
  structuredSizeBound,
} from "../../src/durable/_serializable.ts";
import { describe } from "../../src/util/_assert.ts";

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

/** A Deno KV database for one test. */
async function openKv(): Promise<Deno.Kv & AsyncDisposable> {
  const kv = await Deno.openKv(":memory:");
  return Object.assign(kv, {
    [Symbol.asyncDispose]() {
      kv.close();
      return Promise.resolve();
    },
  });
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

Deno.test("assertSerializable() refuses what Deno KV cannot store", async (t) => {
  const view = new Uint8Array(8);
  const detached = view.buffer;
  structuredClone(detached, { transfer: [detached] });
  const table: [string, unknown, string][] = [
    ["a proxy", new Proxy({}, {}), "is a proxy"],
    [
      "an arguments object",
      (function () {
        return arguments;
      })(),
      "is an arguments object",
    ],
    [
      "a view of a SharedArrayBuffer",
      new Uint8Array(new SharedArrayBuffer(8)),
      "is a view of a SharedArrayBuffer",
    ],
    ["a detached buffer", detached, "is detached"],
    ["a view of a detached buffer", view, "is detached"],
  ];
  for (const [name, value, what] of table) {
    await t.step(name, () => {
      assert.throws(
        () => assertSerializable(value, "args[0]", "structured", "Cannot add"),
        {
          name: "TypeError",
          message: new RegExp(
            `^Cannot add as args\\[0\\] ${what}, which Deno KV cannot store: current value is `,
          ),
        },
      );
    });
  }
});

Deno.test("assertSerializable() refuses what JSON would change silently", async (t) => {
  const table: [string, unknown, string][] = [
    ["-0", -0, "args[0] is -0"],
    ["a hole", [1, , 3], "args[0] has holes or properties besides its items"],
    [
      "an array's own property",
      Object.assign([1, 2], { extra: "x" }),
      "args[0] has holes or properties besides its items",
    ],
    [
      "a symbol key",
      { [Symbol("id")]: 1 },
      "args[0] has symbol keys, which would be dropped",
    ],
  ];
  for (const [name, value, what] of table) {
    await t.step(name, () => {
      assert.throws(
        () => assertSerializable(value, "args[0]", "json", "Cannot add"),
        {
          name: "TypeError",
          message: new RegExp(
            `^Cannot add as ${
              what.replace(/[[\]]/g, "\\$&")
            }, which JSON cannot store: current value is `,
          ),
        },
      );
    });
  }
});

Deno.test("assertSerializable() takes an object reached twice for JSON, not for a cycle", () => {
  const shared = { id: 1 };
  assertSerializable([shared, { again: shared }], "args[0]", "json", "Add");
  const node: Record<string, unknown> = {};
  node["self"] = { node };
  assert.throws(() => assertSerializable(node, "args[0]", "json", "Add"), {
    name: "TypeError",
    message:
      "Add as args[0].self.node is a cycle, which JSON cannot store: current value is an object",
  });
});

class PaymentError extends Error {
  override name = "PaymentError";
  code = "E_DECLINED";
}
class Dated extends Date {}
class Registry extends Map<string, number> {}
class List extends Array<number> {}

/**
 * Values Deno KV's structured clone changes on the way, each with the end of
 * the message that refuses it: the round trip test below checks that each
 * indeed comes back different.
 */
function changedByKv(): [string, unknown, string][] {
  const sticky = /x/g;
  sticky.lastIndex = 3;
  return [
    [
      "an Error subclass",
      new PaymentError("declined"),
      "is a PaymentError built on an Error, which Deno KV would turn into a plain Error",
    ],
    [
      "an AggregateError",
      new AggregateError([new Error("one")], "all failed"),
      "is an AggregateError built on an Error, which Deno KV would turn into a plain Error",
    ],
    [
      "an Error with a code",
      Object.assign(new Error("declined"), { code: "E_DECLINED" }),
      "has a property of its own, 'code', which Deno KV would drop",
    ],
    [
      "an Error with a name of its own",
      Object.assign(new Error("declined"), { name: "PaymentError" }),
      "has a property of its own, 'name', which Deno KV would drop",
    ],
    [
      "an Error whose message is not a string",
      Object.assign(new Error(), { message: 42 }),
      "has a message that is not a string, which Deno KV would turn into one",
    ],
    [
      "an Error whose cause is a getter",
      Object.defineProperty(new Error("declined"), "cause", {
        get: () => "card expired",
      }),
      "has a getter or setter, 'cause', which Deno KV would drop",
    ],
    [
      "a Date with a property of its own",
      Object.assign(new Date(0), { zone: "UTC" }),
      "has a property of its own, 'zone', which Deno KV would drop",
    ],
    [
      "a Map with a property of its own",
      Object.assign(new Map([["a", 1]]), { label: "totals" }),
      "has a property of its own, 'label', which Deno KV would drop",
    ],
    [
      "a Set with a property of its own",
      Object.assign(new Set([1]), { label: "ids" }),
      "has a property of its own, 'label', which Deno KV would drop",
    ],
    [
      "a Set with a symbol key",
      Object.assign(new Set([1]), { [Symbol("tag")]: 1 }),
      "has a property of its own, Symbol(tag), which Deno KV would drop",
    ],
    [
      "an ArrayBuffer with a property of its own",
      Object.assign(new ArrayBuffer(2), { encoding: "raw" }),
      "has a property of its own, 'encoding', which Deno KV would drop",
    ],
    [
      "a typed array with a property of its own",
      Object.assign(new Uint8Array(2), { encoding: "raw" }),
      "has a property of its own, 'encoding', which Deno KV would drop",
    ],
    [
      "a boxed string with a property of its own",
      Object.assign(new String("s"), { note: "boxed" }),
      "has a property of its own, 'note', which Deno KV would drop",
    ],
    [
      "a RegExp whose lastIndex is not 0",
      sticky,
      "has a lastIndex of 3, which Deno KV would reset to 0",
    ],
    [
      "a Date subclass",
      new Dated(0),
      "is a Dated built on a Date, which Deno KV would turn into a plain Date",
    ],
    [
      "a Map subclass",
      new Registry([["a", 1]]),
      "is a Registry built on a Map, which Deno KV would turn into a plain Map",
    ],
    [
      "a Map with no prototype",
      Object.setPrototypeOf(new Map([["a", 1]]), null),
      "is an object with no prototype built on a Map, which Deno KV would turn into a plain Map",
    ],
    [
      "a Buffer",
      Buffer.from("bytes"),
      "is a Buffer built on a Uint8Array, which Deno KV would turn into a plain Uint8Array",
    ],
    [
      "an Array subclass",
      List.from([1, 2]),
      "is a List built on an Array, which Deno KV would turn into a plain Array",
    ],
    [
      "an object with a getter",
      {
        get total() {
          return 1;
        },
      },
      "has a getter or setter, 'total', which Deno KV would turn into the value it returns",
    ],
    [
      "an object with a property that is not enumerable",
      Object.defineProperty({ a: 1 }, "hidden", { value: 2 }),
      "has a property that is not enumerable, 'hidden', which Deno KV would drop",
    ],
    [
      "an array with a property that is not enumerable",
      Object.defineProperty([1, 2], "hidden", { value: 2 }),
      "has a property that is not enumerable, 'hidden', which Deno KV would drop",
    ],
  ];
}

/** What Deno KV keeps as it is, an error's cause and a sparse array included. */
function keptByKv(): [string, unknown][] {
  const sparse: unknown[] = [1, , 3];
  return [
    ["an Error", new Error("declined")],
    [
      "an Error with a cause",
      new Error("declined", { cause: new TypeError("expired") }),
    ],
    ["a RangeError", new RangeError("too far")],
    ["an Error with no stack", Object.assign(new Error("bare"), { stack: "" })],
    ["a Date", new Date(0)],
    ["a RegExp", /a+b*/dgimsy],
    ["a Map", new Map<unknown, unknown>([["k", { v: 1 }], [{ key: 2 }, [3]]])],
    ["a Set", new Set(["a", 1])],
    ["an ArrayBuffer", new ArrayBuffer(4)],
    ["a resizable ArrayBuffer", new ArrayBuffer(4, { maxByteLength: 8 })],
    ["a typed array", new Float64Array([1.5, -2.5])],
    ["a DataView", new DataView(new ArrayBuffer(8))],
    ["a boxed string", new String("boxed")],
    ["a boxed number", new Number(1)],
    ["a boxed boolean", new Boolean(false)],
    ["a boxed bigint", Object(1n)],
    ["a sparse array", sparse],
    ["an array with a property of its own", Object.assign([1, 2], { x: 1 })],
    ["-0", -0],
  ];
}

/** Everything about a value that a round trip could change. */
function fingerprint(value: unknown): string {
  return Deno.inspect(value, {
    showHidden: true,
    getters: true,
    depth: Infinity,
    sorted: true,
  });
}

/** Each value as a Deno KV queue message delivers it back. */
async function roundTrip(values: unknown[]): Promise<unknown[]> {
  await using kv = await openKv();
  const received: unknown[] = [];
  const done = Promise.withResolvers<void>();
  kv.listenQueue((message: { index: number; value: unknown }) => {
    received[message.index] = message.value;
    if (Object.keys(received).length === values.length) done.resolve();
  });
  for (const [index, value] of values.entries()) {
    await kv.enqueue({ index, value });
  }
  await done.promise;
  return received;
}

Deno.test("assertSerializable() refuses what Deno KV would change on the way, naming it", async (t) => {
  for (const [name, value, what] of changedByKv()) {
    await t.step(name, () => {
      assert.throws(
        () =>
          assertSerializable(
            { order: [value] },
            "args[0]",
            "structured",
            `Cannot add task "charge"`,
          ),
        {
          name: "TypeError",
          message:
            `Cannot add task "charge" as args[0].order[0] ${what}: current value is ${
              describe(value)
            }`,
        },
      );
    });
  }
});

Deno.test("assertSerializable() refuses only what a Deno KV round trip really changes", async () => {
  const changed = changedByKv();
  const kept = keptByKv();
  const received = await roundTrip([
    ...changed.map(([, value]) => value),
    ...kept.map(([, value]) => value),
  ]);
  for (const [index, [name, value]] of changed.entries()) {
    assert.notEqual(
      fingerprint(received[index]),
      fingerprint(value),
      `${name} came back the same`,
    );
  }
  for (const [index, [name, value]] of kept.entries()) {
    const back = received[changed.length + index];
    assert.equal(fingerprint(back), fingerprint(value), name);
    assert.deepStrictEqual(back, value, name);
    assertSerializable(value, "args[0]", "structured", "Cannot add");
  }
});

Deno.test("assertSerializable() takes a null-prototype object, which Deno KV gives back with the same properties", async () => {
  const bare = Object.assign(Object.create(null), { id: 1, tags: ["a"] });
  assertSerializable(bare, "args[0]", "structured", "Cannot add");
  const [back] = await roundTrip([bare]);
  assert.deepStrictEqual({ ...(back as object) }, { ...bare });
});
