// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { assertSerializable } from "../../src/durable/_serializable.ts";
import { describe } from "../../src/util/_assert.ts";
import { openKv } from "../_helpers/kv.ts";

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
