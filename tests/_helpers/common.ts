// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type BackgroundTasks,
  type TaskBackend,
  withBackgroundTasks,
} from "../../mod.ts";
import { callHandler, fakeServeHandlerInfo } from "../../testing.ts";

/** An info whose response counts as sent: tasks start one macrotask later. */
export function sentInfo(): Deno.ServeHandlerInfo {
  const info = fakeServeHandlerInfo();
  info.complete();
  return info;
}

/** An info without `completed`, as a framework that passes none would give. */
export function infoWithoutCompleted(): Deno.ServeHandlerInfo {
  return {
    remoteAddr: fakeServeHandlerInfo().remoteAddr,
  } as Deno.ServeHandlerInfo;
}

/**
 * Registers a test that fails if any promise rejection goes unhandled while it
 * runs: the library promises that none ever escapes.
 */
export function guardedTest(
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
): void {
  Deno.test(name, async (t) => {
    const unhandled: unknown[] = [];
    const listener = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      unhandled.push(event.reason);
    };
    addEventListener("unhandledrejection", listener);
    try {
      await fn(t);
      // Rejections are reported once the microtask queue is empty: give the
      // runtime one macrotask to do so.
      await new Promise((resolve) => setTimeout(resolve, 0));
    } finally {
      removeEventListener("unhandledrejection", listener);
    }
    assert.deepEqual(unhandled, [], "a promise rejection went unhandled");
  });
}

/** Starts `Deno.serve` on a free port of 127.0.0.1. */
export function listen(
  handler: Deno.ServeHandler<Deno.NetAddr>,
  options: { onError?: (error: unknown) => Response } = {},
): { server: Deno.HttpServer<Deno.NetAddr>; url: string } {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    ...options,
  }, handler);
  return { server, url: `http://127.0.0.1:${server.addr.port}` };
}

/** Resolves once `count` calls have been made to the returned function. */
export function counter(count: number): { tick(): void; done: Promise<void> } {
  const { promise, resolve } = Promise.withResolvers<void>();
  let seen = 0;
  return {
    tick: () => {
      if (++seen === count) resolve();
    },
    done: promise,
  };
}

/** Lets every pending promise reaction run, without letting a timer fire. */
export async function microtasks(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

/** Resolves after `turns` macrotasks: enough for a timer-started chain not to have started. */
export async function macrotasks(turns: number): Promise<void> {
  for (let turn = 0; turn < turns; turn++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/**
 * What `addTask` threw when `add` ran inside a handler wrapped with
 * `backend`, once its response has been sent; `undefined` if nothing.
 */
export async function addTaskError(
  backend: TaskBackend,
  add: (tasks: BackgroundTasks) => void,
): Promise<unknown> {
  let thrown: unknown;
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    try {
      // What the types refuse in such a handler is what its refusals at
      // run time are tested with.
      add(tasks as unknown as BackgroundTasks);
    } catch (error) {
      thrown = error;
    }
    return new Response("ok");
  }, { backend });
  await (await callHandler(handler, "/")).tasks;
  return thrown;
}

/**
 * Failure values that resist being described: `instanceof`, `String()`,
 * `JSON.stringify()` or a property read throws on each. Fresh ones per call,
 * each with the text the library gives it (its stack or message alike).
 */
export function hostileValues(): {
  label: string;
  value: unknown;
  text: string;
}[] {
  const cycle = Object.create(null);
  cycle.self = cycle;
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  const prototypeThrows = new Proxy({}, {
    getPrototypeOf() {
      throw new Error("no prototype");
    },
  });
  const error = new Error("hidden");
  for (const key of ["message", "stack", "name"]) {
    Object.defineProperty(error, key, {
      get() {
        throw new Error(`no ${key}`);
      },
    });
  }
  return [
    {
      label: "a null-prototype object with a cycle",
      value: cycle,
      text: "<ref *1> [Object: null prototype] { self: [Circular *1] }",
    },
    {
      label: "a revoked proxy",
      value: proxy,
      text: "[object that cannot be described]",
    },
    {
      label: "an error whose getters throw",
      value: error,
      text: "[object Error]",
    },
    {
      label: "a proxy whose getPrototypeOf throws",
      value: prototypeThrows,
      text: "{}",
    },
  ];
}

/**
 * Rejects if `promise` has not settled within `ms`: a bound on "did not
 * wait", so that a hang fails the test instead of stalling it. `what` names
 * what was awaited, or says (when called) why it failed.
 */
export function within<T>(
  promise: Promise<T>,
  ms: number,
  what: string | (() => string),
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(
              typeof what === "string"
                ? `${what} did not settle within ${ms} ms`
                : what(),
            ),
          ),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Lines written to console.error, until restored, and a way to await one. */
export function consoleLines(): {
  readonly lines: string[];
  seen(pattern: RegExp): Promise<void>;
  restore(): void;
  [Symbol.dispose](): void;
} {
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const spy = mock.method(console, "error", (...args: unknown[]) => {
    const line = args.map(String).join(" ");
    lines.push(line);
    for (const waiter of waiters) {
      if (waiter.pattern.test(line)) waiter.resolve();
    }
  });
  const restore = () => spy.mock.restore();
  return {
    lines,
    /** Resolves once a line matching `pattern` has been written. */
    seen(pattern: RegExp): Promise<void> {
      if (lines.some((line) => pattern.test(line))) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ pattern, resolve });
      return promise;
    },
    restore,
    [Symbol.dispose]: restore,
  };
}
