// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What a value weighs in a Deno KV queue message, which may weigh at most
// 64 KiB: a cheap upper bound, an exact measure through V8's serializer as
// Deno KV uses it, and the weight of a message at any step of its chain.
// The KV backend weighs with them each task as it is added
// (kv/_message_budget.ts) and each failed task it keeps; the checks of what
// can be stored at all are _serializable.ts's.

import { types } from "node:util";
import { DefaultSerializer } from "node:v8";
import {
  arrayBufferLength,
  bufferOf,
  isExotic,
  mapEntries,
  regExpSource,
  setValues,
} from "./_serializable.ts";

/** The most bytes a length or an id takes as a varint. */
const VARINT = 5;

/**
 * An upper bound of the bytes V8's serializer (Deno KV's) writes for
 * `value`, without serializing it: a string counts two bytes per code unit,
 * a number nine, a view its whole buffer, a repeated object a back-reference.
 * `Infinity` for what it does not bound (errors, boxed primitives, objects
 * that only look plain, arrays with extra properties): the caller measures
 * those with {@linkcode structuredSize}.
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
  let bytes = 1 + 3 * VARINT;
  if (types.isArrayBufferView(object)) {
    // The view and, once, its whole buffer.
    const buffer = bufferOf(object);
    return types.isArrayBuffer(buffer)
      ? bytes + structuredSizeBound(buffer, seen)
      : Infinity;
  }
  if (types.isArrayBuffer(object)) {
    return bytes + arrayBufferLength.call(object);
  }
  if (types.isDate(object)) return 1 + 8;
  if (types.isRegExp(object)) {
    return bytes + structuredSizeBound(regExpSource.call(object));
  }
  if (types.isMap(object)) {
    for (const [key, item] of mapEntries.call(object)) {
      bytes += structuredSizeBound(key, seen) + structuredSizeBound(item, seen);
    }
    return bytes;
  }
  if (types.isSet(object)) {
    for (const item of setValues.call(object)) {
      bytes += structuredSizeBound(item, seen);
    }
    return bytes;
  }
  if (isExotic(object)) return Infinity;
  if (Array.isArray(object)) {
    let items = 0;
    object.forEach((item) => {
      items++;
      // An index, in case V8 writes the array sparse.
      bytes += 1 + 8 + structuredSizeBound(item, seen);
    });
    // Only the items and `length`: any other property is written too.
    return Reflect.ownKeys(object).length === items + 1 ? bytes : Infinity;
  }
  const prototype = Object.getPrototypeOf(object);
  if (prototype !== Object.prototype && prototype !== null) return Infinity;
  for (const [key, item] of Object.entries(object)) {
    bytes += Math.max(structuredSizeBound(key), 1 + 8) +
      structuredSizeBound(item, seen);
  }
  return bytes;
}

const VIEW_HEADER = new Uint8Array(2 + 3 * VARINT);

/**
 * Measures V8's serializer as Deno KV uses it: `node:v8` writes a view as
 * its own bytes only, where Deno KV writes the view's whole buffer.
 */
class KvMeasure extends DefaultSerializer {
  // Called for views; Node's typings leave this hook out.
  _writeHostObject(object: object): void {
    const buffer = bufferOf(object as ArrayBufferView);
    this.writeUint32(buffer.byteLength);
    this.writeRawBytes(new Uint8Array(buffer));
    // Room for what V8 writes about the view: tag, type, offset, length
    // and flags.
    this.writeRawBytes(VIEW_HEADER);
  }
}

/**
 * The bytes Deno KV's serializer writes for `value`, or a little more (a
 * buffer shared by two views counts twice). Serializes it: a few
 * microseconds for small values.
 */
export function structuredSize(value: unknown): number {
  const measure = new KvMeasure();
  measure.writeHeader();
  measure.writeValue(value);
  return measure.releaseBuffer().byteLength;
}

/**
 * The most `value` weighs in a Deno KV message at any step of its chain: as
 * first enqueued, or as enqueued again from the copy a delivery handed back.
 *
 * That copy weighs more. V8's deserializer makes every array holey, and its
 * serializer writes a holey array in its sparse format, each item after its
 * index: with node:v8, a message of 150 tasks `{ name, args: [i, 400 chars] }`
 * weighs 64,755 bytes, its delivered copy 65,742 (+987); with 496 tasks of
 * 100 characters, +3,409. The copy of the copy weighs the same as the copy:
 * after one round trip the size stays put, so that is the one to measure.
 * It can also weigh less (a packed array of doubles comes back holding small
 * integers as such), hence the larger of the two. `structuredClone` makes
 * the copy with the same V8 deserializer as Deno KV.
 */
export function messageSize(value: unknown): number {
  return Math.max(
    structuredSize(value),
    structuredSize(structuredClone(value)),
  );
}
