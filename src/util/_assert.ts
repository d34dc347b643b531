// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Checking what enters the library: the error messages name the option and
// its value (std style), and suggest the key meant when one is misspelled.

/** Formats a rejected value for an error message: strings quoted, objects by their type. */
export function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return "a function";
  if (value === null || typeof value !== "object") return String(value);
  if (Array.isArray(value)) return "an array";
  const kind = className(value);
  return kind === undefined ? "an object" : `${article(kind)} ${kind}`;
}

/**
 * The article before a class name as it is spoken: "an Error", but "a
 * Uint8Array" and "a URL", whose U sounds like "you" (a certificate read
 * with Deno.readFile() is a Uint8Array).
 */
export function article(name: string): "a" | "an" {
  return /^(?:[AEIO]|U(?!int|R[IL]))/.test(name) ? "an" : "a";
}

/** The class an object was made by, unless an object literal; never throws. */
function className(value: object): string | undefined {
  try {
    const prototype = Object.getPrototypeOf(value);
    if (prototype === null || prototype === Object.prototype) return undefined;
    const name: unknown = prototype.constructor?.name;
    return typeof name === "string" && name !== "" ? name : undefined;
  } catch {
    return undefined;
  }
}

/** The longest delay `setTimeout` honours; a longer one fires at once. */
export const MAX_TIMER_DELAY = 2 ** 31 - 1;

interface TypeOf {
  function: (...args: never[]) => unknown;
  boolean: boolean;
  number: number;
}

/** Throws a `TypeError` unless `typeof value` is `type`. */
function assertTypeOf<T extends keyof TypeOf>(
  value: unknown,
  type: T,
  name: string,
  action: string,
): asserts value is TypeOf[T] {
  const actual: string = typeof value;
  if (actual !== type) {
    throw new TypeError(
      `${action} as '${name}' must be a ${type}: current value is ${
        describe(value)
      }`,
    );
  }
}

/** Throws a `TypeError` unless `value` is a function. */
export function assertFunction(
  value: unknown,
  name: string,
  action: string,
): asserts value is (...args: never[]) => unknown {
  assertTypeOf(value, "function", name, action);
}

/** Throws unless `value` is a finite number of at least `min`, or `Infinity` when `infinite` is set. */
export function assertNumber(
  value: unknown,
  name: string,
  action: string,
  min: number,
  infinite = false,
): asserts value is number {
  assertTypeOf(value, "number", name, action);
  const allowed = Number.isFinite(value)
    ? value >= min
    : infinite && value === Infinity;
  if (!allowed) {
    throw new RangeError(
      `${action} as '${name}' must be a ${
        infinite ? "number" : "finite number"
      } >= ${min}${infinite ? " or Infinity" : ""}: current value is ${value}`,
    );
  }
}

/** Throws unless `value` is an integer of at least `min`, or `Infinity` when `infinite` is set. */
export function assertInteger(
  value: unknown,
  name: string,
  action: string,
  min: number,
  infinite = false,
): asserts value is number {
  assertTypeOf(value, "number", name, action);
  const allowed = Number.isInteger(value) ? value >= min : (
    infinite && value === Infinity
  );
  if (!allowed) {
    throw new RangeError(
      `${action} as '${name}' must be an integer >= ${min}${
        infinite ? " or Infinity" : ""
      }: current value is ${value}`,
    );
  }
}

/** Throws unless `value` is a positive number of milliseconds, `Infinity` included. */
export function assertTimeout(
  value: unknown,
  name: string,
  action: string,
): asserts value is number {
  assertTypeOf(value, "number", name, action);
  if (!(value > 0)) {
    throw new RangeError(
      `${action} as '${name}' must be a positive number of milliseconds: current value is ${value}`,
    );
  }
}

/** Throws a `TypeError` unless `value` is a boolean. */
export function assertBoolean(
  value: unknown,
  name: string,
  action: string,
): asserts value is boolean {
  assertTypeOf(value, "boolean", name, action);
}

/**
 * Throws a `TypeError` unless `options` is a plain options object whose
 * keys are all among `known`: a misspelt option would otherwise be ignored
 * without a word. The message names the closest known key. With
 * `passUnknown`, only a key close to a known one (a misspelling) is
 * refused: the others are someone else's (`Deno.serve`'s), and pass.
 */
export function assertOptions(
  options: unknown,
  known: readonly string[],
  action: string,
  name = "options",
  passUnknown = false,
): asserts options is object {
  if (!isPlainObject(options)) {
    throw new TypeError(
      `${action} as '${name}' must be a plain object: current value is ${
        describe(options)
      }`,
    );
  }
  // Nested options are named by their path, as in 'retry.maxAttempts'.
  const path = (key: string) => name === "options" ? key : `${name}.${key}`;
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const meant = meantBy(key, known);
    if (passUnknown && meant === undefined) continue;
    throw new TypeError(
      `${action} as '${path(key)}' is not one of its options: ${
        meant === undefined
          ? `they are ${known.map((option) => `'${path(option)}'`).join(", ")}`
          : `did you mean '${path(meant)}'?`
      }`,
    );
  }
}

/** Whether `value` is an object literal (or made by `Object.create(null)`). */
function isPlainObject(value: unknown): value is object {
  if (typeof value !== "object" || value === null) return false;
  try {
    const prototype = Object.getPrototypeOf(value);
    return prototype === Object.prototype || prototype === null;
  } catch {
    return false;
  }
}

/**
 * The keys of an options type, as a list `assertOptions()` takes: written as
 * an object whose type requires every key of `T` and no other, so that the
 * list cannot drift from the type.
 */
export function optionKeys<T>(
  keys: { readonly [K in keyof T]-?: true },
): readonly string[] {
  return Object.keys(keys);
}

/**
 * The option `key` most likely meant, if one is close enough in spelling to
 * be a slip of the keyboard (`timout`, `shutdownTimout`): within a third of
 * its letters, and at least two.
 */
function meantBy(
  key: string,
  known: readonly string[],
): string | undefined {
  const lower = key.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const option of known) {
    const distance = editDistance(lower, option.toLowerCase());
    if (distance < bestDistance) {
      best = option;
      bestDistance = distance;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(key.length / 3))
    ? best
    : undefined;
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        previous[j]! + 1,
        current[j - 1]! + 1,
        previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length]!;
}
