// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { escapeControls } from "../api/_describe_task.ts";
import { exitBy } from "./_exit_watchdog.ts";
import { serveConfig, type ServeOptions } from "./_serve_options.ts";
import { MAX_TIMER_DELAY } from "../util/_assert.ts";
import { isInstance } from "../util/_promise.ts";
import { scopesFor, wrapHandler } from "./_scope.ts";
import { QueueFullError } from "../api/queue_full_error.ts";
import type { DrainResult, TaskStats } from "../api/task_controls.ts";
import type { BackendCloseResult, TaskBackend } from "../api/task_backend.ts";
import type {
  BackgroundTasksHandler,
  DrainableHandler,
  DurableTasksHandler,
} from "./with_background_tasks.ts";

export type { ServeOptions } from "./_serve_options.ts";

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
 *   { hostname: "127.0.0.1", port: 0, shutdownSignals: [], onListen() {}, onShutdown() {} },
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
  /** The wrapped handler: its `stats` and `drain()`. */
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
 * With a `backend`, the drain waits until the chains are stored, then calls
 * the backend's `close()` with the deadline's signal: the Deno KV backend
 * takes no new task and lets those its listener runs finish until the
 * deadline, when it hands them back to its store (counted in
 * `DrainResult.handedBack`, among the abandoned); the BullMQ backend closes
 * its connections. Closing the backend again afterwards is harmless.
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
 *   { hostname: "127.0.0.1", port: 0, shutdownSignals: [], onListen() {}, onShutdown() {} },
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
 * @example All in one options object, as Deno.serve takes it
 * ```ts
 * import { serve } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const server = serve({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   shutdownSignals: [],
 *   onListen() {},
 *   onShutdown() {},
 *   handler: () => new Response("ok"),
 * });
 * const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
 * assert.equal(await response.text(), "ok");
 * await server.shutdown();
 * ```
 *
 * @param handler The handler, which receives the request's tasks third.
 * @returns The server; its `shutdown()` drains the tasks.
 * @throws {TypeError} If the handler is not a function.
 */
export function serve(handler: BackgroundTasksHandler): BackgroundTasksServer;
/**
 * Serves `handler` with options that name a `backend`: its tasks go to the
 * backend, but for those it adds to `tasks.inProcess`, which run in this
 * process after the response. Its `tasks` are {@linkcode DurableTasks}, so
 * that `deno check` refuses a plain function given to `addTask()`. The
 * shutdown drains both, closes the backend, and reports both in one line.
 *
 * @example Orders stored in Deno KV, welcome mails sent from this process
 * ```ts ignore
 * import { defineTask, serve } from "@afterward/background-tasks";
 * import { kvBackend } from "@afterward/background-tasks/kv";
 *
 * const chargeCard = defineTask(async ({ id }, order: string) => {
 *   await payments.charge(order, { idempotencyKey: id });
 * }, { name: "chargeCard", retry: { maxAttempts: 5 } });
 * const kv = await Deno.openKv("./tasks.sqlite3");
 *
 * serve({ port: 8000, backend: kvBackend({ kv, tasks: [chargeCard] }) }, (request, _info, tasks) => {
 *   const { pathname } = new URL(request.url);
 *   if (pathname === "/signup") tasks.inProcess.addTask(sendWelcomeEmail, "ada@example.com");
 *   else tasks.addTask(chargeCard, "42");
 *   return new Response("Accepted", { status: 202 });
 * });
 * ```
 *
 * @param options Where to listen, the backend, how tasks run, and how to
 * shut down.
 * @param handler The handler, which receives the request's tasks third.
 * @returns The server; its `shutdown()` drains the tasks.
 * @throws {TypeError} If the handler or an option has the wrong type, or a
 * key is a misspelling of one of its options.
 * @throws {RangeError} If a number is out of range.
 */
export function serve(
  options: ServeOptions & { backend: TaskBackend },
  handler: DurableTasksHandler,
): BackgroundTasksServer;
/**
 * Serves `handler` with the given options: where to listen, how tasks run,
 * and how to shut down. `handler` may also be one already made by
 * {@linkcode withBackgroundTasks} (an app a test calls directly), whose own
 * options then apply: the task options are refused here.
 *
 * @example Serve an app the tests call directly
 * ```ts
 * import { serve, withBackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const app = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(() => {});
 *   return new Response("ok");
 * }, { maxPending: 1_000 });
 * const server = serve(
 *   { hostname: "127.0.0.1", port: 0, shutdownSignals: [], onListen() {}, onShutdown() {} },
 *   app,
 * );
 * await (await fetch(`http://127.0.0.1:${server.addr.port}/`)).text();
 * await server.shutdown();
 * assert.equal(server.handler, app);
 * assert.equal(app.stats.succeeded, 1);
 * ```
 *
 * @param options Where to listen, how tasks run, and how to shut down.
 * @param handler The handler, which receives the request's tasks third.
 * @returns The server; its `shutdown()` drains the tasks.
 * @throws {TypeError} If the handler or an option has the wrong type, or a
 * key is a misspelling of one of its options (other keys go to `Deno.serve`,
 * so that a later Deno's options work).
 * @throws {RangeError} If a number is out of range.
 */
export function serve(
  options: ServeOptions,
  handler: BackgroundTasksHandler,
): BackgroundTasksServer;
/**
 * Serves the `handler` given with options that name a `backend`, as
 * `Deno.serve({ handler })` takes it: see the overload with the handler
 * apart.
 *
 * @param options Where to listen, the backend, how tasks run, how to shut
 * down, and the handler.
 * @returns The server; its `shutdown()` drains the tasks.
 * @throws {TypeError} If the handler or an option has the wrong type, or a
 * key is a misspelling of one of its options.
 * @throws {RangeError} If a number is out of range.
 */
export function serve(
  options: ServeOptions & {
    backend: TaskBackend;
    handler: DurableTasksHandler;
  },
): BackgroundTasksServer;
/**
 * Serves the `handler` given with the options, as `Deno.serve({ handler })`
 * takes it.
 *
 * @param options Where to listen, how tasks run, how to shut down, and the
 * handler.
 * @returns The server; its `shutdown()` drains the tasks.
 * @throws {TypeError} If the handler or an option has the wrong type, or a
 * key is a misspelling of one of its options (other keys go to `Deno.serve`,
 * so that a later Deno's options work).
 * @throws {RangeError} If a number is out of range.
 */
export function serve(
  options: ServeOptions & { handler: BackgroundTasksHandler },
): BackgroundTasksServer;
export function serve(
  first: unknown,
  second?: unknown,
): BackgroundTasksServer {
  const action = "Cannot serve";
  const {
    handler,
    taskOptions,
    denoOptions,
    shutdownTimeout,
    shutdownSignals,
    signal,
    onShutdown,
  } = serveConfig(first, second, action);
  let drainable: DrainableHandler;
  if (scopesFor(handler) !== undefined) {
    const [given] = Object.keys(taskOptions);
    if (given !== undefined) {
      throw new TypeError(
        `${action} as '${given}' belongs to the handler's own withBackgroundTasks(): the handler given was made by it`,
      );
    }
    drainable = handler as unknown as DrainableHandler;
  } else {
    drainable = wrapHandler(
      handler as unknown as BackgroundTasksHandler,
      taskOptions,
      action,
    );
  }
  const server = Deno.serve(
    { onError: answerError, ...denoOptions },
    drainable,
  );
  // Listening for signals only once there is a server: had Deno.serve
  // thrown (a port in use), a listener left behind would shut down nothing
  // on the next signal, and fail doing it.
  for (const name of shutdownSignals) Deno.addSignalListener(name, onSignal);

  // Aborted at the deadline, or by a signal during the shutdown: whatever is still
  // pending is abandoned.
  const giveUp = new AbortController();
  let closing: Promise<DrainResult> | undefined;
  // When the shutdown's budget is spent, in milliseconds since the epoch.
  let endsAt = Infinity;

  const finished = Promise.withResolvers<void>();

  function shutdown(): Promise<DrainResult> {
    return closing ??= drainWithin().then((result) => {
      report(onShutdown, result);
      finished.resolve();
      return result;
    });
  }

  async function drainWithin(): Promise<DrainResult> {
    const bounded = shutdownTimeout <= MAX_TIMER_DELAY;
    if (bounded) endsAt = Date.now() + shutdownTimeout;
    const deadline = bounded
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
    // What ends while responses in flight finish counts too: their tasks
    // may run before the drain begins.
    const before = drainable.stats;
    try {
      // Responses in flight schedule their tasks as they complete, so the
      // drain starts once they are done, or once time is up.
      await untilAborted(server.shutdown(), giveUp.signal);
      // At the deadline, the tasks of handlers still running (their
      // responses will not go out) are abandoned too.
      const scopes = scopesFor(drainable)!;
      const drained = sinceShutdown(
        await scopes.shutdown(giveUp.signal),
        before,
        drainable.stats,
      );
      // Its chains stored, the backend stops: one that runs tasks here (the
      // Deno KV listener) lets them finish until the deadline, then hands
      // them back to its store.
      return withBackendClosed(
        drained,
        await closeBackend(scopes.backend, giveUp.signal),
      );
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
      (result) =>
        exitBy(result.abandoned === 0 ? 0 : 1, endsAt, shutdownTimeout),
      () => exitBy(1, endsAt, shutdownTimeout),
    );
  }

  function onAbort(): void {
    shutdown();
  }

  signal?.addEventListener("abort", onAbort, { once: true });
  function stopListening(): void {
    for (const name of shutdownSignals) {
      Deno.removeSignalListener(name, onSignal);
    }
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

/**
 * serve()'s default `onError`: a task refused for `maxPending` is expected
 * backpressure, already counted in `stats.refused`, so it gets the `503` the
 * documentation recommends and no line, which a saturated server would
 * otherwise write once per request. `Retry-After: 5`, as in that
 * recommendation: a queue full at `maxPending` makes room in seconds rather
 * than milliseconds, and clients sent back sooner would find it still full.
 * Any other error gets what `Deno.serve`'s own default gives.
 */
function answerError(error: unknown): Response {
  if (isInstance(error, QueueFullError)) {
    return new Response("Service Unavailable", {
      status: 503,
      headers: { "retry-after": "5" },
    });
  }
  console.error(error);
  // Deno's own bytes: a body without a content type.
  return new Response(new TextEncoder().encode("Internal Server Error"), {
    status: 500,
  });
}

/**
 * A drain's result with what ended between the `before` and `after` stats of
 * its handler: the tasks that ran while the responses in flight finished,
 * before the drain began, count as drained.
 */
function sinceShutdown(
  drained: DrainResult,
  before: TaskStats,
  after: TaskStats,
): DrainResult {
  return {
    ...drained,
    succeeded: after.succeeded - before.succeeded,
    failed: after.failed - before.failed,
    handedOver: after.handedOver - before.handedOver,
  };
}

/**
 * Closes `backend` within the deadline, if it can be closed: what the tasks
 * it ran here did meanwhile. A close that fails is written, and the shutdown
 * goes on.
 */
async function closeBackend(
  backend: TaskBackend | undefined,
  signal: AbortSignal,
): Promise<BackendCloseResult | undefined> {
  if (typeof backend?.close !== "function") return undefined;
  try {
    return (await backend.close({ signal })) ?? undefined;
  } catch (error) {
    try {
      console.error("The backend's close() failed at the shutdown:", error);
    } catch {
      // console.error itself throws: nobody is left to tell.
    }
    return undefined;
  }
}

/**
 * A drain's result with what a backend's close saw of the tasks it ran in
 * this process: those handed back to its store count as abandoned.
 */
function withBackendClosed(
  drained: DrainResult,
  closed: BackendCloseResult | undefined,
): DrainResult {
  if (closed === undefined) return drained;
  const abandonedTasks = { ...drained.abandonedTasks };
  for (const [name, count] of Object.entries(closed.handedBackTasks)) {
    abandonedTasks[name] = (abandonedTasks[name] ?? 0) + count;
  }
  return {
    ...drained,
    succeeded: drained.succeeded + closed.succeeded,
    failed: drained.failed + closed.failed,
    abandoned: drained.abandoned + closed.handedBack,
    abandonedTasks,
    handedBack: (drained.handedBack ?? 0) + closed.handedBack,
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

/**
 * Tells `onShutdown` what the shutdown did, or the default reporter when
 * none was given. If a handler of the user's throws, the default reporter
 * writes the result and what the handler threw.
 */
function report(
  onShutdown: ((result: DrainResult) => unknown) | undefined,
  result: DrainResult,
): void {
  try {
    if (onShutdown === undefined) logShutdown(result);
    else onShutdown(result);
  } catch (error) {
    if (onShutdown === undefined) return; // The console itself failed.
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
 * many tasks succeeded, failed or were handed to a backend while draining,
 * and, when some were abandoned at the deadline, how many of each task, how
 * many a backend was running here and handed back to its store, how many it
 * had not stored yet, and why if it was down. It says "drained every
 * background task" only when nothing was abandoned.
 *
 * @example Usage
 * ```ts
 * import { logShutdown } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 * import { mock } from "node:test";
 *
 * const consoleError = mock.method(console, "error", () => {});
 * logShutdown({
 *   succeeded: 5,
 *   failed: 1,
 *   handedOver: 0,
 *   abandoned: 3,
 *   abandonedTasks: { sendEmail: 2, resizeImage: 1 },
 *   unstored: 0,
 * });
 * consoleError.mock.restore();
 * assert.deepEqual(consoleError.mock.calls[0]?.arguments, [
 *   "Shutdown abandoned 3 background tasks (sendEmail: 2, resizeImage: 1); 5 succeeded and 1 failed while draining",
 * ]);
 * ```
 *
 * @param result What the shutdown drained and abandoned.
 */
export function logShutdown(result: DrainResult): void {
  let finished =
    `${result.succeeded} succeeded and ${result.failed} failed while draining`;
  if (result.handedOver > 0) {
    finished += `, ${result.handedOver} handed to the backend`;
  }
  if (result.abandoned === 0) {
    console.error(`Shutdown drained every background task: ${finished}`);
    return;
  }
  const byName = Object.entries(result.abandonedTasks)
    .map(([name, count]) => `${escapeControls(name)}: ${count}`)
    .join(", ");
  let unstored = "";
  if (result.handedBack) {
    unstored = `, ${result.handedBack} of them handed back to the store`;
  }
  if (result.unstored > 0) {
    unstored += `, ${result.unstored} of them not yet stored by the backend`;
    const { backend } = result;
    if (backend?.state === "down") {
      unstored += `, down since ${backend.since.toISOString()}${
        backend.error === undefined ? "" : ` (${escapeControls(backend.error)})`
      }`;
    }
  }
  console.error(
    `Shutdown abandoned ${result.abandoned} background ${
      result.abandoned === 1 ? "task" : "tasks"
    } (${byName})${unstored}; ${finished}`,
  );
}
