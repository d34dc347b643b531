// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Values that may be promises, functions or hostile objects, handled so
// that reading them never throws where the library cannot report it.

/**
 * Whether `value` has a callable `then`, as `await` would treat it. A `then`
 * that throws when read (a getter, a revoked proxy) counts: awaiting the
 * value then rejects with what it threw, and the caller's rejection path
 * reports it.
 */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  if (
    value === null || (typeof value !== "object" && typeof value !== "function")
  ) {
    return false;
  }
  try {
    return typeof (value as PromiseLike<unknown>).then === "function";
  } catch {
    return true;
  }
}

/**
 * `Promise.resolve(value)` that never throws: reading a native promise's
 * `constructor` may (a getter, a proxy), and the caller gets a rejection
 * instead.
 */
export function toPromise(value: unknown): Promise<unknown> {
  try {
    return Promise.resolve(value);
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * `value instanceof type` that never throws: a revoked proxy, or a proxy
 * whose `getPrototypeOf` throws, is an instance of nothing.
 */
export function isInstance<T>(
  value: unknown,
  type: abstract new (...args: never[]) => T,
): value is T {
  try {
    return value instanceof type;
  } catch {
    return false;
  }
}

/**
 * A function's `name` when it is a non-empty string, else `"anonymous"`: a
 * name may be a getter that throws, or a symbol.
 */
export function functionName(fn: unknown): string {
  try {
    const name: unknown = (fn as { name?: unknown }).name;
    return typeof name === "string" && name !== "" ? name : "anonymous";
  } catch {
    return "anonymous";
  }
}

/**
 * Aborts `controller` without letting its listeners end the process: Deno
 * reports a listener's throw as an uncaught error, which exits; here each is
 * handed to `onListenerError` instead, and the other listeners still run.
 * When a listener aborts another controller this way, a throw among that
 * one's listeners goes to its own `onListenerError` only.
 */
export function abortIsolated(
  controller: AbortController,
  reason: unknown,
  onListenerError: (error: unknown) => void,
): void {
  if (isolating.length === 0) globalThis.addEventListener("error", caught);
  isolating.push(onListenerError);
  try {
    controller.abort(reason);
  } finally {
    isolating.pop();
    if (isolating.length === 0) {
      globalThis.removeEventListener("error", caught);
    }
  }
}

/** Who is told of a listener's throw, innermost abort last. */
const isolating: ((error: unknown) => void)[] = [];

function caught(event: ErrorEvent): void {
  event.preventDefault();
  isolating.at(-1)!(event.error);
}
