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

/** The most bytes a length or an id takes as a varint. */
const VARINT = 5;

/**
 * An upper bound of the bytes V8's serializer (Deno KV's, and `node:v8`'s)
 * writes for `value`, without serializing it: a string counts two bytes per
 * code unit, a number nine, a view its whole buffer, a repeated object a
 * back-reference. `Infinity` for what it does not bound (errors, boxed
 * primitives, arrays with extra properties): the caller measures those.
 */
export function structuredSizeBound(
  value: unknown,
  seen: Set<object> = new Set(),
): number {
  switch (typeof value) {
    case "string":
      // Tag, length, an alignment byte, UTF-16 at worst.
      return 2 + VARINT + 2 * value.length;
    case "number":
      return 1 + 8;
    case "bigint":
      // Tag, bitfield, 64-bit digits.
      return 1 + VARINT + 8 * Math.ceil(value.toString(16).length / 16);
    case "boolean":
    case "undefined":
      return 1;
    case "function":
    case "symbol":
      return Infinity;
  }
  if (value === null) return 1;
  const object = value as object;
  if (seen.has(object)) return 1 + VARINT;
  seen.add(object);
  const prototype = Object.getPrototypeOf(object);
  let bytes = 1 + 3 * VARINT;
  if (Array.isArray(object)) {
    let items = 0;
    object.forEach((item) => {
      items++;
      // An index, in case V8 writes the array sparse.
      bytes += 1 + 8 + structuredSizeBound(item, seen);
    });
    return Object.keys(object).length === items ? bytes : Infinity;
  }
  if (prototype === Object.prototype || prototype === null) {
    for (const [key, item] of Object.entries(object)) {
      bytes += Math.max(structuredSizeBound(key), 1 + 8) +
        structuredSizeBound(item, seen);
    }
    return bytes;
  }
  if (object instanceof ArrayBuffer) return bytes + object.byteLength;
  if (ArrayBuffer.isView(object)) {
    // The view and, once, its whole buffer.
    return object.buffer instanceof ArrayBuffer
      ? bytes + structuredSizeBound(object.buffer, seen)
      : Infinity;
  }
  if (prototype === Date.prototype) return 1 + 8;
  if (prototype === RegExp.prototype) {
    return bytes + structuredSizeBound((object as RegExp).source);
  }
  if (prototype === Map.prototype || prototype === Set.prototype) {
    for (const item of (object as Map<unknown, unknown>).entries()) {
      bytes += structuredSizeBound(item[0], seen) +
        structuredSizeBound(item[1], seen);
    }
    return bytes;
  }
  return Infinity;
}
