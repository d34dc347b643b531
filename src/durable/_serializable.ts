// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What a durable backend can store as it is: a task's arguments are
// checked as they are added, where the handler can still hear it, against
// what JSON (BullMQ) or Deno KV's structured clone would refuse, or change
// on the way. What a value weighs in a Deno KV message is
// _structured_size.ts's, which reads values through the same accessors.

import { types } from "node:util";
import { article, describe } from "../util/_assert.ts";

/**
 * How a backend stores arguments: `"structured"` is the structured clone
 * that Deno KV uses, `"json"` is `JSON.stringify`, as BullMQ uses.
 */
export type Serialization = "structured" | "json";

/**
 * Throws a `TypeError` naming the first value under `path` that would not
 * come back the same from `format`: a function, a symbol, an instance of a
 * class, or (for JSON) `undefined`, a non-finite number, a `bigint`, a date,
 * a map, a set or a cycle. For Deno KV, also what its structured clone
 * would change on the way (see {@linkcode changedByKv}).
 */
export function assertSerializable(
  value: unknown,
  path: string,
  format: Serialization,
  action: string,
  seen: Set<object> = new Set(),
): void {
  const store = format === "json" ? "JSON" : "Deno KV";
  const refuse = (reason: string) => {
    throw new TypeError(
      `${action} as ${path} ${reason}: current value is ${describe(value)}`,
    );
  };
  const fail = (what: string) => refuse(`${what}, which ${store} cannot store`);
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (format === "json" && !Number.isFinite(value)) fail("is not finite");
      if (format === "json" && Object.is(value, -0)) fail("is -0");
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
  if (format === "structured") {
    // What V8's serializer refuses, though the walk below would let through.
    if (types.isProxy(object)) fail("is a proxy");
    if (types.isArgumentsObject(object)) fail("is an arguments object");
    if (types.isSharedArrayBuffer(object)) {
      fail("is a SharedArrayBuffer");
    }
    const buffer = types.isArrayBufferView(object)
      ? bufferOf(object)
      : types.isArrayBuffer(object)
      ? object
      : undefined;
    if (types.isSharedArrayBuffer(buffer)) {
      fail("is a view of a SharedArrayBuffer");
    }
    if ((buffer as { detached?: boolean } | undefined)?.detached) {
      fail("is detached");
    }
  }
  if (seen.has(object)) {
    if (format === "json") fail("is a cycle");
    return;
  }
  seen.add(object);
  const prototype = Object.getPrototypeOf(object);
  // A built-in is known by its internal slots, whatever its prototype.
  const plain = (prototype === Object.prototype || prototype === null) &&
    !isExotic(object) && !types.isArrayBufferView(object);
  if (
    (plain || Array.isArray(object)) &&
    Object.getOwnPropertySymbols(object).length > 0
  ) {
    fail("has symbol keys, which would be dropped");
  }
  if (format === "structured") {
    const changed = changedByKv(object, prototype, plain);
    if (changed === false) fail(`is an instance of ${classOf(object)}`);
    if (typeof changed === "string") refuse(changed);
  }
  if (Array.isArray(object)) {
    // JSON turns a hole into null and drops other properties.
    if (format === "json" && Object.keys(object).length !== object.length) {
      fail("has holes or properties besides its items");
    }
    object.forEach((item, index) =>
      assertSerializable(item, `${path}[${index}]`, format, action, seen)
    );
  } else if (plain) {
    for (const [key, item] of Object.entries(object)) {
      assertSerializable(item, `${path}.${key}`, format, action, seen);
    }
  } else if (format === "json") {
    fail(`is an instance of ${classOf(object)}`);
  } else if (types.isMap(object)) {
    for (const [key, item] of mapEntries.call(object)) {
      assertSerializable(key, `${path} (a key)`, format, action, seen);
      assertSerializable(item, `${path}.get(…)`, format, action, seen);
    }
  } else if (types.isSet(object)) {
    for (const item of setValues.call(object)) {
      assertSerializable(item, `${path} (an item)`, format, action, seen);
    }
  } else if (types.isNativeError(object) && Object.hasOwn(object, "cause")) {
    const { cause } = object as { cause?: unknown };
    assertSerializable(cause, `${path}.cause`, format, action, seen);
  }
  // JSON repeats an object reached twice; only one inside itself is a cycle.
  if (format === "json") seen.delete(object);
}

/**
 * The errors V8's serializer keeps as themselves. Any other error arrives
 * as the one of these its `name` says, or as a plain `Error`, without
 * properties of its own but `message`, `stack` and `cause`.
 */
const nativeErrors: readonly ErrorConstructor[] = [
  Error,
  EvalError,
  RangeError,
  ReferenceError,
  SyntaxError,
  TypeError,
  URIError,
];

/**
 * What Deno KV's structured clone (V8's serializer, measured on Deno 2.9
 * through a real `kv.enqueue()` and `listenQueue()`) would change in
 * `object`, said as the end of an error message; `false` for an object it
 * does not keep at all (an instance of a class of ours); `undefined` when it
 * comes back the same. It keeps a plain object's or an array's own
 * enumerable data properties (an array's holes and extra properties too),
 * and the contents of a `Date`, `RegExp`, `Map`, `Set`, `ArrayBuffer`
 * (resizable included), typed array, `DataView`, boxed primitive and native
 * error (`message`, `stack`, `cause`). It drops every other property of
 * their own (an error's `code`, a date's added field), gives a subclass's
 * instance the built-in's prototype, resets a regular expression's
 * `lastIndex`, and turns a getter into the value it returns (or, on an
 * error, drops it). A null-prototype object arrives with `Object`'s
 * prototype and the same properties: accepted, as JSON accepts it.
 */
function changedByKv(
  object: object,
  prototype: object | null,
  plain: boolean,
): string | false | undefined {
  if (plain || Array.isArray(object)) {
    if (!plain && prototype !== Array.prototype) {
      return builtOn(object, "Array");
    }
    for (const key of Object.getOwnPropertyNames(object)) {
      const property = Object.getOwnPropertyDescriptor(object, key)!;
      if (!("value" in property)) {
        return `has a getter or setter, '${key}', which Deno KV would turn into the value it returns`;
      }
      if (!property.enumerable && !(key === "length" && !plain)) {
        return `has a property that is not enumerable, '${key}', which Deno KV would drop`;
      }
    }
    return undefined;
  }
  let kind: string;
  let kept: (key: string) => boolean = () => false;
  if (types.isNativeError(object)) {
    const error = object as Error;
    // V8 picks the error's class by its name.
    const name = readName(error);
    kind = nativeErrors.find((type) => type.name === name && type !== Error)
      ?.name ?? "Error";
    for (const key of ["message", "cause"]) {
      const property = Object.getOwnPropertyDescriptor(error, key);
      if (property !== undefined && !("value" in property)) {
        return `has a getter or setter, '${key}', which Deno KV would drop`;
      }
    }
    if (Object.hasOwn(error, "message") && typeof error.message !== "string") {
      return `has a message that is not a string, which Deno KV would turn into one`;
    }
    const stack = stackOf(error);
    if (stack !== undefined && typeof stack !== "string") {
      return `has a stack that is not a string, which Deno KV would drop`;
    }
    kept = (key) => key === "message" || key === "stack" || key === "cause";
  } else if (types.isDate(object)) kind = "Date";
  else if (types.isRegExp(object)) {
    kind = "RegExp";
    const lastIndex = (object as RegExp).lastIndex;
    if (lastIndex !== 0) {
      return `has a lastIndex of ${lastIndex}, which Deno KV would reset to 0`;
    }
    kept = (key) => key === "lastIndex";
  } else if (types.isMap(object)) kind = "Map";
  else if (types.isSet(object)) kind = "Set";
  else if (types.isArrayBuffer(object)) kind = "ArrayBuffer";
  else if (types.isArrayBufferView(object)) {
    // "Uint8Array", say: the built-in's own name, whatever the subclass.
    kind = types.isDataView(object)
      ? "DataView"
      : typedArrayTag.call(object) as string;
    const length = types.isDataView(object)
      ? 0
      : typedArrayLength.call(object) as number;
    kept = (key) => isIndex(key, length);
  } else if (types.isBoxedPrimitive(object)) {
    if (types.isSymbolObject(object)) return false;
    kind = types.isStringObject(object)
      ? "String"
      : types.isNumberObject(object)
      ? "Number"
      : types.isBooleanObject(object)
      ? "Boolean"
      : "BigInt";
    const length = types.isStringObject(object) ? (object as string).length : 0;
    kept = (key) => key === "length" && length > 0 || isIndex(key, length);
  } else return false;
  const builtIn =
    (globalThis as unknown as Record<string, { prototype: object }>)[kind]!;
  if (prototype !== builtIn.prototype) return builtOn(object, kind);
  const dropped = Reflect.ownKeys(object).find((key) =>
    typeof key === "symbol" || !kept(key)
  );
  if (dropped !== undefined) {
    return `has a property of its own, ${
      typeof dropped === "symbol" ? String(dropped) : `'${dropped}'`
    }, which Deno KV would drop`;
  }
  return undefined;
}

/** "is a PaymentError built on an Error, which Deno KV would turn into a plain Error". */
function builtOn(object: object, kind: string): string {
  return `is ${readableClass(object)} built on ${
    article(kind)
  } ${kind}, which Deno KV would turn into a plain ${kind}`;
}

/** "a PaymentError", or "an object with no prototype"; never throws. */
function readableClass(object: object): string {
  const name = classOf(object);
  return name === "a class"
    ? Object.getPrototypeOf(object) === null
      ? "an object with no prototype"
      : "an object of a class with no name"
    : `${article(name)} ${name}`;
}

/** The name of an object's class, or "a class" when it has none. */
function classOf(object: object): string {
  try {
    const name: unknown = Object.getPrototypeOf(object)?.constructor?.name;
    return typeof name === "string" && name !== "" ? name : "a class";
  } catch {
    return "a class";
  }
}

/** An error's `name`, as V8 reads it to pick the class; never throws. */
function readName(error: Error): unknown {
  try {
    return error.name;
  } catch {
    return undefined;
  }
}

/** An error's `stack`, as V8 reads it; never throws. */
function stackOf(error: Error): unknown {
  try {
    return error.stack;
  } catch {
    return undefined;
  }
}

/** Whether `key` is an index below `length`, as a typed array's items are. */
function isIndex(key: string, length: number): boolean {
  const index = Number(key);
  return Number.isInteger(index) && index >= 0 && index < length &&
    String(index) === key;
}

// The built-in accessors, so that a value's own properties cannot fool the
// checks or the size bound (_structured_size.ts): V8's serializer reads the
// internal slots, not the properties.
const getter = (prototype: object, name: string) =>
  Object.getOwnPropertyDescriptor(prototype, name)!.get!;
const typedArrayBuffer = getter(
  Object.getPrototypeOf(Uint8Array.prototype),
  "buffer",
);
const dataViewBuffer = getter(DataView.prototype, "buffer");
export const arrayBufferLength = getter(ArrayBuffer.prototype, "byteLength");
export const regExpSource = getter(RegExp.prototype, "source");
export const mapEntries = Map.prototype.entries;
export const setValues = Set.prototype.values;
const typedArrayTag = Object.getOwnPropertyDescriptor(
  Object.getPrototypeOf(Uint8Array.prototype),
  Symbol.toStringTag,
)!.get!;
const typedArrayLength = getter(
  Object.getPrototypeOf(Uint8Array.prototype),
  "length",
);

/** The buffer of a view, as V8 sees it. */
export function bufferOf(view: ArrayBufferView): ArrayBufferLike {
  return (types.isDataView(view) ? dataViewBuffer : typedArrayBuffer).call(
    view,
  );
}

/** Whether an object V8 would not serialize as a plain object. */
export function isExotic(object: object): boolean {
  return types.isProxy(object) || types.isMap(object) ||
    types.isSet(object) || types.isDate(object) || types.isRegExp(object) ||
    types.isNativeError(object) || types.isBoxedPrimitive(object) ||
    types.isAnyArrayBuffer(object) || types.isArgumentsObject(object);
}
