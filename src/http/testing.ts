// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { type Chain, type EndState, internals } from "../core/_chain.ts";
import { nameOf } from "../core/_task.ts";
import { describeTask } from "../api/_describe_task.ts";
import type { TaskResult } from "../api/task_info.ts";
import {
  assertFunction,
  assertOptions,
  describe,
  optionKeys,
} from "../util/_assert.ts";
import type { DrainableHandler } from "./with_background_tasks.ts";

/**
 * A `Deno.ServeHandlerInfo` for tests, whose `completed` promise the test
 * settles: call {@linkcode FakeServeHandlerInfo.complete} when the response
 * counts as sent, or {@linkcode FakeServeHandlerInfo.interrupt} to play an
 * HTTP/2 client that went away.
 *
 * @example Play a client that went away
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { fakeServeHandlerInfo } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(() => {});
 *   return new Response("ok");
 * }, { skipUndelivered: true });
 * const info = fakeServeHandlerInfo();
 * await (await handler(new Request("http://localhost/"), info)).text();
 * info.interrupt();
 * await handler.drain();
 * assert.equal(handler.stats.skipped, 1);
 * ```
 */
export interface FakeServeHandlerInfo extends Deno.ServeHandlerInfo {
  /** Resolves `completed`: the response has been sent. */
  complete(): void;
  /**
   * Rejects `completed` with a `Deno.errors.Interrupted`, as Deno does when
   * a response could not be delivered.
   */
  interrupt(): void;
}

/**
 * Options for {@linkcode fakeServeHandlerInfo}.
 *
 * @example Pretend the client has another address
 * ```ts
 * import { fakeServeHandlerInfo } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const info = fakeServeHandlerInfo({
 *   remoteAddr: { transport: "tcp", hostname: "203.0.113.9", port: 51000 },
 * });
 * assert.equal((info.remoteAddr as Deno.NetAddr).hostname, "203.0.113.9");
 * ```
 */
export interface FakeServeHandlerInfoOptions {
  /**
   * The client's address.
   *
   * @default {{ transport: "tcp", hostname: "127.0.0.1", port: 54321 }}
   */
  remoteAddr?: Deno.NetAddr;
}

/**
 * Makes a `Deno.ServeHandlerInfo` whose `completed` stays pending until the
 * test calls `complete()` or `interrupt()`, so that it decides when a
 * wrapped handler's tasks may start.
 *
 * @example Tasks wait for the response to be sent
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { fakeServeHandlerInfo } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const log: string[] = [];
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(() => log.push("task"));
 *   return new Response("ok");
 * });
 * const info = fakeServeHandlerInfo();
 * await handler(new Request("http://localhost/"), info);
 * assert.equal(handler.stats.pending, 1);
 *
 * info.complete();
 * await handler.drain();
 * assert.deepEqual(log, ["task"]);
 * ```
 *
 * @param options The client's address.
 * @returns The info, with `complete()` and `interrupt()`.
 */
export function fakeServeHandlerInfo(
  options: FakeServeHandlerInfoOptions = {},
): FakeServeHandlerInfo {
  const action = "Cannot make handler info";
  assertOptions(options, FAKE_INFO_OPTIONS, action);
  const {
    remoteAddr = { transport: "tcp", hostname: "127.0.0.1", port: 54321 },
  } = options;
  if (typeof remoteAddr !== "object" || remoteAddr === null) {
    throw new TypeError(
      `${action} as 'remoteAddr' must be an address, such as { transport: "tcp", hostname: "127.0.0.1", port: 80 }: current value is ${
        describe(remoteAddr)
      }`,
    );
  }
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  // A test that never reads `completed` must not see an unhandled rejection.
  promise.catch(() => {});
  return {
    remoteAddr,
    completed: promise,
    complete: () => resolve(),
    interrupt: () =>
      reject(new Deno.errors.Interrupted("HTTP response was not sent")),
  };
}

/**
 * Options for {@linkcode callHandler}: a `RequestInit`, as `fetch` and Hono's
 * `app.request()` take, and the handler's `info`.
 *
 * @example Post a form and hold the tasks until the test says so
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { callHandler, fakeServeHandlerInfo } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const log: string[] = [];
 * const handler = withBackgroundTasks(async (request, _info, tasks) => {
 *   const { email } = await request.json();
 *   tasks.addTask((to: string) => log.push(`task for ${to}`), email);
 *   return new Response("ok", { status: 201 });
 * });
 * const info = fakeServeHandlerInfo();
 * const { response, tasks } = await callHandler(handler, "/signup", {
 *   method: "POST",
 *   headers: { "content-type": "application/json" },
 *   body: JSON.stringify({ email: "a@example.com" }),
 *   info,
 * });
 * log.push(`${response.status} ${await response.text()}`);
 * info.complete();
 * await tasks;
 * assert.deepEqual(log, ["201 ok", "task for a@example.com"]);
 * ```
 */
export interface CallHandlerOptions extends RequestInit {
  /**
   * The handler's second argument.
   *
   * @default {a fake info whose response counts as sent at once}
   */
  info?: Deno.ServeHandlerInfo;
}

/** What `new Request(input, init)` reads, and the handler's `info`. */
const CALL_HANDLER_OPTIONS = optionKeys<CallHandlerOptions>({
  body: true,
  cache: true,
  credentials: true,
  headers: true,
  integrity: true,
  keepalive: true,
  method: true,
  mode: true,
  priority: true,
  redirect: true,
  referrer: true,
  referrerPolicy: true,
  signal: true,
  window: true,
  info: true,
});

/** The keys of `FakeServeHandlerInfoOptions`. */
const FAKE_INFO_OPTIONS = optionKeys<FakeServeHandlerInfoOptions>({
  remoteAddr: true,
});

/**
 * What {@linkcode callHandler} returns.
 *
 * @example Inspect the response, then the tasks
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { callHandler, type HandlerCall } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(() => 42);
 *   return new Response("ok");
 * });
 * const call: HandlerCall = await callHandler(handler, "/");
 * assert.equal(call.response.status, 200);
 * await call.response.body?.cancel();
 * const [result] = await call.tasks;
 * assert.ok(result?.status === "fulfilled" && result.value === 42);
 * ```
 */
export interface HandlerCall {
  /** The handler's response. */
  response: Response;
  /**
   * Resolves with one settled result per task of this request, once they have
   * all run; with none when it added no task. Its keyed tasks' come in the
   * order they settled, and one deduplicated has none. With a backend, those
   * of the tasks it ran in this process (`tasks.inProcess`), once the
   * backend has taken the others. It never rejects.
   */
  tasks: Promise<TaskResult[]>;
}

/**
 * Calls a wrapped handler with a request and returns its response together
 * with a promise of the request's task results, the way Starlette's
 * `TestClient` waits for tasks and Cloudflare's `waitOnExecutionContext()`
 * waits for `waitUntil()`.
 *
 * @example Test a handler and its tasks
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const handler = withBackgroundTasks((request, _info, tasks) => {
 *   const email = new URL(request.url).searchParams.get("email")!;
 *   tasks.addTask((to: string) => `welcome mail for ${to}`, email);
 *   return new Response("Signed up", { status: 201 });
 * });
 *
 * const { response, tasks } = await callHandler(handler, "/signup?email=a@example.com");
 * assert.equal(response.status, 201);
 * assert.equal(await response.text(), "Signed up");
 * assert.deepEqual(await tasks, [{
 *   status: "fulfilled",
 *   name: "anonymous",
 *   index: 0,
 *   value: "welcome mail for a@example.com",
 * }]);
 * ```
 *
 * @param handler A handler made by `withBackgroundTasks`.
 * @param request The request, or a URL; a path is resolved against
 * `http://localhost`.
 * @param options What to make the request with (its method, headers and
 * body, as for `fetch`), and the info to pass; by default the response
 * counts as sent as soon as it is returned.
 * @returns The response and the tasks' results to come.
 * @throws {TypeError} If `handler` is not a function or an option is
 * unknown.
 * @throws Whatever the handler throws.
 */
export async function callHandler(
  handler: DrainableHandler,
  request: Request | URL | string,
  options: CallHandlerOptions = {},
): Promise<HandlerCall> {
  const action = "Cannot call handler";
  assertFunction(handler, "handler", action);
  if (typeof handler.drain !== "function") {
    throw new TypeError(
      `${action} as 'handler' must be made by withBackgroundTasks(): current value is a function without drain()`,
    );
  }
  if (
    !(request instanceof Request || request instanceof URL ||
      typeof request === "string")
  ) {
    throw new TypeError(
      `${action} as 'request' must be a Request, a URL or a string: current value is ${
        describe(request)
      }`,
    );
  }
  assertOptions(options, CALL_HANDLER_OPTIONS, action);
  const { info: given, ...init } = options;
  if (given !== undefined && (typeof given !== "object" || given === null)) {
    throw new TypeError(
      `${action} as 'info' must be a Deno.ServeHandlerInfo: current value is ${
        describe(given)
      }`,
    );
  }
  const input = request instanceof Request
    ? new Request(request, init)
    : new Request(new URL(request, "http://localhost"), init);
  let info = given;
  if (info === undefined) {
    const fake = fakeServeHandlerInfo();
    fake.complete();
    info = fake;
  }
  let chain: Chain | undefined;
  const previous = internals.created;
  // The handler creates its chain synchronously, before its first await.
  internals.created = (created) => {
    previous?.(created);
    chain ??= created;
    created.results = [];
  };
  let returned: Response | Promise<Response>;
  try {
    returned = handler(input, info);
  } finally {
    internals.created = previous;
  }
  const response = await returned;
  // Returning scheduled the chain, so a drain started now covers it, and
  // with a backend, the request's in-process chain too.
  const tasks = handler.drain().then(() => [
    ...chain?.results ?? [],
    ...chain?.inProcessChain?.results ?? [],
  ]);
  return { response, tasks };
}

/**
 * The states in which a chain has no task left to run here: every end
 * state, listed from its type so that a new one cannot be missed.
 */
const ENDED: ReadonlySet<string> = new Set(Object.keys(
  {
    finished: true,
    handedOver: true,
    discarded: true,
    skipped: true,
    deduplicated: true,
    abandoned: true,
  } satisfies Record<EndState, true>,
));

/**
 * What {@linkcode trackTasks} returns: the tasks of the requests handled
 * since, that are not over yet.
 *
 * @example Fail a test that forgets its tasks
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { callHandler, fakeServeHandlerInfo, trackTasks } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const app = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(function sendWelcome() {});
 *   return new Response("ok");
 * });
 * const tracker = trackTasks();
 * const info = fakeServeHandlerInfo();
 * await (await callHandler(app, "/signup", { info })).response.text();
 * assert.deepEqual(tracker.pending, ['"sendWelcome" at index 0 of GET /signup']);
 * assert.throws(() => tracker[Symbol.dispose](), /1 background task is still pending/);
 * info.complete();
 * await app.drain();
 * ```
 */
export interface TaskTracker extends Disposable {
  /**
   * Each task not over yet, of the requests handled since
   * {@linkcode trackTasks} was called, as the default reporter names it:
   * `"name" at index N of METHOD /path`.
   */
  readonly pending: string[];
  /**
   * Stops tracking, and throws if a task tracked is still pending, naming
   * each: a test that uses the tracker with `using` fails when it ends
   * with tasks it did not wait for.
   *
   * @throws {Error} If a task tracked is still pending.
   */
  [Symbol.dispose](): void;
}

/**
 * Tracks the tasks of every request that a handler made by
 * `withBackgroundTasks`, `serve()` or the Hono middleware handles from now
 * on, so that a test fails when it ends before they are over (a test that
 * forgot to await them otherwise passes, its tasks running during the next
 * test, or never, when their response is never sent). Deno's sanitizers
 * cannot see it: a chain waiting for its response holds no timer and no
 * resource.
 *
 * Begin a test with `using tracker = trackTasks();`: when the test ends, the
 * tracker throws if tasks are still pending. Tasks added after their
 * request's chain ended run as a chain of their own, which it does not see.
 *
 * @example Begin a test with it
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { callHandler, trackTasks } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const sent: string[] = [];
 * const app = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask((to: string) => sent.push(to), "a@example.com");
 *   return new Response("ok", { status: 201 });
 * });
 *
 * Deno.test("signup sends a welcome mail", async () => {
 *   using _tracker = trackTasks();
 *   const { response, tasks } = await callHandler(app, "/signup");
 *   assert.equal(response.status, 201);
 *   await tasks; // without it, the test fails, naming the task
 *   assert.deepEqual(sent, ["a@example.com"]);
 * });
 * ```
 *
 * @returns The tracker: its `pending` tasks, and a dispose that throws when
 * some are left.
 */
export function trackTasks(): TaskTracker {
  let chains: Chain[] = [];
  let tracking = true;
  // Trackers and callHandler() nest: each tells the one before.
  const previous = internals.created;
  function track(chain: Chain): void {
    previous?.(chain);
    if (tracking) chains.push(chain);
  }
  internals.created = track;

  function pending(): string[] {
    chains = chains.filter((chain) => !ENDED.has(chain.state));
    const names: string[] = [];
    for (const chain of chains) {
      let index = chain.position;
      for (let task = chain.head; task !== undefined; task = task.next) {
        names.push(describeTask({
          name: nameOf(task),
          index: index++,
          attempt: 1,
          request: chain.request,
          delivered: chain.delivered,
        }));
      }
    }
    return names;
  }

  return {
    get pending() {
      return pending();
    },
    [Symbol.dispose]() {
      tracking = false;
      if (internals.created === track) internals.created = previous;
      const left = pending();
      if (left.length === 0) return;
      throw new Error(
        `Cannot end the test as ${left.length} background ${
          left.length === 1 ? "task is" : "tasks are"
        } still pending: ${
          left.join(", ")
        }; await the tasks callHandler() returns, or the handler's drain()`,
      );
    },
  };
}
