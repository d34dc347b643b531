// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { describe } from "./_util.ts";

/**
 * How a backend stores arguments: `"structured"` is the structured clone
 * that Deno KV uses, `"json"` is `JSON.stringify`, as BullMQ uses.
 */
export type Serialization = "structured" | "json";

const structuredClasses = [
  Date,
  RegExp,
  Map,
  Set,
  ArrayBuffer,
  DataView,
  Error,
];

/**
 * Throws a `TypeError` naming the first value under `path` that would not
 * come back the same from `format`: a function, a symbol, an instance of a
 * class, or (for JSON) `undefined`, a non-finite number, a `bigint`, a date,
 * a map, a set or a cycle.
 */
export function assertSerializable(
  value: unknown,
  path: string,
  format: Serialization,
  action: string,
  seen: Set<object> = new Set(),
): void {
  const fail = (what: string) => {
    throw new TypeError(
      `${action} as ${path} ${what}, which ${
        format === "json" ? "JSON" : "Deno KV"
      } cannot store: current value is ${describe(value)}`,
    );
  };
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (format === "json" && !Number.isFinite(value)) fail("is not finite");
      return;
    case "undefined":
      if (format === "json") fail("is undefined");
      return;
    case "bigint":
      if (format === "json") fail("is a bigint");
      return;
    case "function":
      return fail("is a function");
    case "symbol":
      return fail("is a symbol");
  }
  if (value === null) return;
  const object = value as object;
  if (seen.has(object)) {
    if (format === "json") fail("is a cycle");
    return;
  }
  seen.add(object);
  const prototype = Object.getPrototypeOf(object);
  if (Array.isArray(object)) {
    object.forEach((item, index) =>
      assertSerializable(item, `${path}[${index}]`, format, action, seen)
    );
  } else if (prototype === Object.prototype || prototype === null) {
    for (const [key, item] of Object.entries(object)) {
      assertSerializable(item, `${path}.${key}`, format, action, seen);
    }
  } else if (format === "json") {
    fail(`is an instance of ${object.constructor?.name ?? "a class"}`);
  } else if (ArrayBuffer.isView(object)) {
    return;
  } else if (object instanceof Map) {
    for (const [key, item] of object) {
      assertSerializable(key, `${path} (a key)`, format, action, seen);
      assertSerializable(item, `${path}.get(…)`, format, action, seen);
    }
  } else if (object instanceof Set) {
    for (const item of object) {
      assertSerializable(item, `${path} (an item)`, format, action, seen);
    }
  } else if (
    !structuredClasses.some((type) => prototype === type.prototype)
  ) {
    fail(`is an instance of ${object.constructor?.name ?? "a class"}`);
  }
}
