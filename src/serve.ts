// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { assertFunction, describe, MAX_TIMER_DELAY } from "./_util.ts";
import { runnerOf } from "./_wrap.ts";
import {
  type BackgroundTasksHandler,
  type DrainableHandler,
  type DrainResult,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "./with_background_tasks.ts";

/**
 * Options for {@linkcode serve}: `Deno.serve`'s, the task options, and how to shut down.
 *
 * @example Everything a production server sets
 * ```ts
 * import { serve, type ServeOptions } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const options: ServeOptions = {
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   onListen() {},
 *   shutdownTimeout: 5_000,
 *   signals: [],
 *   concurrency: 8,
 *   maxPending: 10_000,
 *   timeout: 30_000,
 *   onShutdown: (result) => assert.equal(result.abandoned, 0),
 * };
 * const server = serve(options, () => new Response("ok"));
 * await server.shutdown();
 * ```
 */
export interface ServeOptions extends WithBackgroundTasksOptions {
  /**
   * The port to listen on; `0` picks a free one.
   *
   * @default {8000}
   */
  port?: number;
  /**
   * The address to listen on.
   *
   * @default {"0.0.0.0"}
   */
  hostname?: string;
  /** Lets several processes listen on the same port (Linux only). */
  reusePort?: boolean;
  /** The certificate, in PEM, to serve HTTPS; needs `key`. */
  cert?: string;
  /** The private key, in PEM, to serve HTTPS; needs `cert`. */
  key?: string;
  /** Called once the server listens; by default Deno prints the address. */
  onListen?: (localAddr: Deno.NetAddr) => void;
  /**
   * Turns an error thrown by the handler into a response: `Deno.serve`'s
   * `onError`, renamed because `onError` here reports failed tasks.
   */
  onHandlerError?: (error: unknown) => Response | Promise<Response>;
  /**
   * Milliseconds a shutdown may take in all: finishing the responses in
   * flight, then the background tasks. Tasks still pending then are
   * abandoned (their signals aborted) and reported.
   *
   * @default {10000}
   */
  shutdownTimeout?: number;
  /**
   * The signals that start a graceful shutdown and then end the process: with
   * exit code 0 when every task finished, 1 when some were abandoned. One
   * received during a shutdown, however it started, abandons the remaining
   * tasks at once and ends the process. `[]` handles none.
   *
   * @default {["SIGINT", "SIGTERM"], only "SIGINT" on Windows}
   */
  signals?: readonly Deno.Signal[];
  /** Starts a graceful shutdown when aborted, as `shutdown()` does; the process does not exit. */
  signal?: AbortSignal;
  /**
   * Told what a shutdown drained and what it abandoned.
   *
   * @default {logShutdown}
   */
  onShutdown?: (result: DrainResult) => unknown;
}

/**
 * What {@linkcode serve} returns: the `Deno.HttpServer`, whose `shutdown()`
 * also drains the background tasks.
 *
 * @example Read the stats, then shut down
 * ```ts
 * import { serve } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const server = serve(
 *   { hostname: "127.0.0.1", port: 0, signals: [], onListen() {}, onShutdown() {} },
 *   (_request, _info, tasks) => {
 *     tasks.addTask(() => {});
 *     return new Response("ok");
 *   },
 * );
 * await (await fetch(`http://127.0.0.1:${server.addr.port}/`)).text();
 * const result = await server.shutdown();
 * await server.finished;
 * assert.equal(server.handler.stats.succeeded, 1);
 * assert.equal(result.abandoned, 0);
 * ```
 */
export interface BackgroundTasksServer
  extends Omit<Deno.HttpServer<Deno.NetAddr>, "shutdown" | "finished"> {
  /**
   * Resolves once a shutdown has finished: the server closed, the tasks
   * drained or abandoned, and `onShutdown` called.
   */
  readonly finished: Promise<void>;
  /** The wrapped handler: its `stats`, `pending` and `drain()`. */
  readonly handler: DrainableHandler;
  /**
   * Shuts down gracefully: stops accepting connections, lets the responses in
   * flight finish, then waits for the background tasks, all within
   * `shutdownTimeout`. What is still pending then is abandoned. Calling it
   * again returns the same promise.
   *
   * @returns What was drained and what was abandoned, also passed to
   * `onShutdown`; the promise never rejects.
   */
  shutdown(): Promise<DrainResult>;
}

/**
 * Serves `handler` with `Deno.serve`, passing it the request's
 * {@linkcode BackgroundTasks} as {@linkcode withBackgroundTasks} does, and
 * shuts down gracefully on SIGINT and SIGTERM: stop accepting, finish the
 * responses in flight, drain the background tasks up to `shutdownTimeout`,
 * abort the signals of tasks still running then, report what was abandoned,
 * and exit with code 0 when everything drained, 1 otherwise.
 *
 * It never aborts `Deno.serve`'s own signal: on Deno 2.9, doing so after
 * `shutdown()` crashes the process.
 *
 * @example Serve with a 5-second shutdown budget
 * ```ts ignore
 * import { serve } from "@afterward/background-tasks";
 *
 * serve({ port: 8000, shutdownTimeout: 5_000 }, (_request, _info, tasks) => {
 *   tasks.addTask(async () => {
 *     await new Promise((resolve) => setTimeout(resolve, 1_000));
 *   });
 *   return new Response("Accepted", { status: 202 });
 * });
 * ```
 *
 * @example Shut down from code, as a test does
 * ```ts
 * import { serve } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const log: string[] = [];
 * const server = serve(
 *   { hostname: "127.0.0.1", port: 0, signals: [], onListen() {}, onShutdown() {} },
 *   (_request, _info, tasks) => {
 *     tasks.addTask(() => log.push("task"));
 *     return new Response("ok");
 *   },
 * );
 * const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
 * await response.text();
 * const result = await server.shutdown();
 * assert.deepEqual(log, ["task"]);
 * assert.equal(result.abandoned, 0);
 * ```
 *
 * @param options Where to listen, how tasks run, and how to shut down.
 * @param handler The handler, which receives the request's tasks third.
 * @returns The server; its `shutdown()` drains the tasks.
 * @throws {TypeError} If the handler or an option has the wrong type.
 * @throws {RangeError} If `shutdownTimeout` is negative.
 */
export function serve(
  options: ServeOptions,
  handler: BackgroundTasksHandler,
): BackgroundTasksServer {
  const action = "Cannot serve";
  const {
    shutdownTimeout = 10_000,
    signals = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"],
    signal,
    onShutdown = logShutdown,
    onHandlerError,
    port,
    hostname,
    reusePort,
    cert,
    key,
    onListen,
  } = options;
  if (typeof shutdownTimeout !== "number" || !(shutdownTimeout >= 0)) {
    throw new RangeError(
      `${action} as 'shutdownTimeout' must be a number >= 0: current value is ${
        describe(shutdownTimeout)
      }`,
    );
  }
  if (!Array.isArray(signals)) {
    throw new TypeError(
      `${action} as 'signals' must be an array: current value is ${
        describe(signals)
      }`,
    );
  }
  assertFunction(onShutdown, "onShutdown", action);
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError(
      `${action} as 'signal' must be an AbortSignal: current value is ${
        describe(signal)
      }`,
    );
  }
  const drainable = withBackgroundTasks(handler, options);
  // Listening first: a signal name Deno does not know throws here, before a
  // server exists that would need closing.
  const listening: Deno.Signal[] = [];
  try {
    for (const name of signals) {
      Deno.addSignalListener(name, onSignal);
      listening.push(name);
    }
  } catch (error) {
    for (const name of listening) Deno.removeSignalListener(name, onSignal);
    throw error;
  }
  const server = Deno.serve({
    ...(port === undefined ? {} : { port }),
    ...(hostname === undefined ? {} : { hostname }),
    ...(reusePort === undefined ? {} : { reusePort }),
    ...(cert === undefined || key === undefined ? {} : { cert, key }),
    ...(onListen === undefined ? {} : { onListen }),
    ...(onHandlerError === undefined ? {} : { onError: onHandlerError }),
  }, drainable);

  // Aborted at the deadline, or by a signal during the shutdown: whatever is still
  // pending is abandoned.
  const giveUp = new AbortController();
  let closing: Promise<DrainResult> | undefined;

  const finished = Promise.withResolvers<void>();

  function shutdown(): Promise<DrainResult> {
    return closing ??= drainWithin().then((result) => {
      report(onShutdown, result);
      finished.resolve();
      return result;
    });
  }

  async function drainWithin(): Promise<DrainResult> {
    const deadline = shutdownTimeout <= MAX_TIMER_DELAY
      ? setTimeout(
        () =>
          giveUp.abort(
            new DOMException(
              `Background task abandoned at the shutdown deadline (${shutdownTimeout} ms)`,
              "AbortError",
            ),
          ),
        shutdownTimeout,
      )
      : undefined;
    try {
      // Responses in flight schedule their tasks as they complete, so the
      // drain starts once they are done, or once time is up.
      await untilAborted(server.shutdown(), giveUp.signal);
      const result = await drainable.drain({ signal: giveUp.signal });
      if (!giveUp.signal.aborted) return result;
      // Handlers still running at the deadline added tasks that no drain
      // waits for: they are abandoned too.
      const open = runnerOf.get(drainable)!.abandonOpen();
      const abandonedTasks = { ...result.abandonedTasks };
      let abandoned = result.abandoned;
      for (const [name, count] of Object.entries(open)) {
        abandonedTasks[name] = (abandonedTasks[name] ?? 0) + count;
        abandoned += count;
      }
      return { ...result, abandoned, abandonedTasks };
    } finally {
      clearTimeout(deadline);
      stopListening();
    }
  }

  let exiting = false;
  function onSignal(): void {
    // A signal during a shutdown, however it started (a first signal, the
    // `signal` option, a call), ends it at once: whatever is left is
    // abandoned, and the process exits when the report is written.
    if (closing !== undefined) {
      giveUp.abort(
        new DOMException(
          "Background task abandoned at a shutdown signal during a shutdown",
          "AbortError",
        ),
      );
    }
    if (exiting) return;
    exiting = true;
    shutdown().then(
      (result) => Deno.exit(result.abandoned === 0 ? 0 : 1),
      () => Deno.exit(1),
    );
  }

  function onAbort(): void {
    shutdown();
  }

  signal?.addEventListener("abort", onAbort, { once: true });
  function stopListening(): void {
    for (const name of listening) Deno.removeSignalListener(name, onSignal);
    signal?.removeEventListener("abort", onAbort);
  }
  if (signal?.aborted) shutdown();

  return {
    get addr() {
      return server.addr;
    },
    finished: finished.promise,
    handler: drainable,
    ref: () => server.ref(),
    unref: () => server.unref(),
    shutdown,
    async [Symbol.asyncDispose]() {
      await shutdown();
    },
  };
}

/** Resolves when `promise` settles or `signal` aborts, whichever comes first. */
function untilAborted(
  promise: Promise<unknown>,
  signal: AbortSignal,
): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      signal.removeEventListener("abort", done);
      resolve();
    };
    signal.addEventListener("abort", done);
    promise.then(done, done);
  });
}

function report(
  onShutdown: (result: DrainResult) => unknown,
  result: DrainResult,
): void {
  try {
    onShutdown(result);
  } catch (error) {
    try {
      logShutdown(result);
      console.error("The 'onShutdown' handler threw:", error);
    } catch {
      // console.error itself throws: nobody is left to tell.
    }
  }
}

/**
 * The default shutdown reporter: writes one `console.error` line saying how
 * many tasks completed and failed while draining, and, when some were
 * abandoned at the deadline, how many of each task.
 *
 * @example Usage
 * ```ts
 * import { logShutdown } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 * import { mock } from "node:test";
 *
 * const consoleError = mock.method(console, "error", () => {});
 * logShutdown({
 *   completed: 5,
 *   failed: 1,
 *   abandoned: 3,
 *   abandonedTasks: { sendEmail: 2, resizeImage: 1 },
 * });
 * consoleError.mock.restore();
 * assert.deepEqual(consoleError.mock.calls[0]?.arguments, [
 *   "Shutdown abandoned 3 background tasks (sendEmail: 2, resizeImage: 1); 5 completed and 1 failed while draining",
 * ]);
 * ```
 *
 * @param result What the shutdown drained and abandoned.
 */
export function logShutdown(result: DrainResult): void {
  const finished =
    `${result.completed} completed and ${result.failed} failed while draining`;
  if (result.abandoned === 0) {
    console.error(`Shutdown drained every background task: ${finished}`);
    return;
  }
  const byName = Object.entries(result.abandonedTasks)
    .map(([name, count]) => `${name}: ${count}`)
    .join(", ");
  console.error(
    `Shutdown abandoned ${result.abandoned} background tasks (${byName}); ${finished}`,
  );
}
