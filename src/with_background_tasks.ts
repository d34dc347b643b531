// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { type Chain, internals } from "./_chain.ts";
import { Runner } from "./_runner.ts";
import { describe, isThenable } from "./_util.ts";
import { BackgroundTasks, type TaskErrorHandler } from "./background_tasks.ts";
import { logTaskError } from "./log_task_error.ts";

/**
 * A `Deno.serve` handler that also receives the request's
 * {@linkcode BackgroundTasks}.
 *
 * @param request The incoming request.
 * @param info Deno's information about the connection and the response.
 * @param tasks The request's tasks, to run after its response has been sent.
 * @returns The response, or a promise of it.
 */
export type BackgroundTasksHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo,
  tasks: BackgroundTasks,
) => Response | Promise<Response>;

/**
 * What {@linkcode withBackgroundTasks} returns: a handler for `Deno.serve` (or
 * the `fetch` of a `deno serve` default export) that can also report and wait
 * for the work it has scheduled.
 */
export interface DrainableHandler {
  /**
   * Handles a request like the wrapped handler, then runs its tasks once the
   * response has been sent.
   *
   * @param request The incoming request.
   * @param info Deno's information about the connection and the response.
   * @returns The wrapped handler's response, as the same object.
   */
  (request: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response>;
  /**
   * Resolves once every chain scheduled so far has finished: call it after
   * `server.shutdown()`, or in a test after the response has been read.
   * Chains scheduled after the call are not waited for.
   *
   * @returns A promise that resolves when those chains are done; it never
   * rejects.
   */
  drain(): Promise<void>;
  /**
   * Tasks accepted and not yet finished: those of requests still being
   * handled, waiting for their response to be sent, or running.
   */
  readonly pending: number;
}

/** Options for {@linkcode withBackgroundTasks}. */
export interface WithBackgroundTasksOptions {
  /**
   * Called once for each task that throws or rejects, with the task's name,
   * index and request.
   *
   * @default {logTaskError}
   */
  onError?: TaskErrorHandler;
  /**
   * Skip a request's tasks when its response was not delivered, which Deno
   * signals by rejecting `info.completed` (an HTTP/2 client that went away).
   * By default the tasks still run, since the work was accepted; over
   * HTTP/1.1, Deno 2.9 reports every response as delivered.
   *
   * @default {false}
   */
  skipUndelivered?: boolean;
}

const DISCARDED = "the handler failed and its tasks were discarded";

/**
 * Wraps a `Deno.serve` handler so that it receives a {@linkcode BackgroundTasks}
 * as its third argument, and runs the tasks it adds after the response has
 * been sent.
 *
 * The tasks of a request run one after another, in the order they were
 * added, starting one macrotask after `info.completed` has settled; a task
 * that throws or rejects is reported through `onError` and the next one runs.
 * The chains of different requests are independent. If the handler throws,
 * rejects or returns something other than a `Response`, its tasks are
 * discarded and the error reaches `Deno.serve` unchanged. The response itself
 * is returned as it is: its body is never wrapped.
 *
 * The request is closed once its response completes, so tasks cannot read
 * its URL, headers or body: pass them what they need as arguments.
 *
 * @example The seed's notification endpoint
 * ```ts ignore
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 *
 * function writeNotification(email: string, message = "") {
 *   Deno.writeTextFileSync("log.txt", `notification for ${email}: ${message}`);
 * }
 *
 * Deno.serve(withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(writeNotification, "a@example.com", "some notification");
 *   return Response.json({ message: "Notification sent in the background" });
 * }));
 * ```
 *
 * @example Call the handler directly and wait for its tasks
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import assert from "node:assert/strict";
 *
 * const log: string[] = [];
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask((line: string) => log.push(line), "after the response");
 *   log.push("response");
 *   return new Response("ok");
 * });
 *
 * const info = { remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 80 } };
 * const response = await handler(new Request("http://localhost/"), info as Deno.ServeHandlerInfo);
 * assert.equal(await response.text(), "ok");
 * await handler.drain();
 * assert.deepEqual(log, ["response", "after the response"]);
 * ```
 *
 * @param handler The handler to wrap.
 * @param options How to report failures and treat undelivered responses.
 * @returns A handler for `Deno.serve`, with `drain()` and `pending`.
 * @throws {TypeError} If `handler` is not a function or an option has the
 * wrong type.
 */
export function withBackgroundTasks(
  handler: BackgroundTasksHandler,
  options: WithBackgroundTasksOptions = {},
): DrainableHandler {
  if (typeof handler !== "function") {
    throw new TypeError(
      `Cannot wrap handler as 'handler' must be a function: current value is ${
        describe(handler)
      }`,
    );
  }
  const { onError = logTaskError, skipUndelivered = false } = options;
  if (typeof onError !== "function") {
    throw new TypeError(
      `Cannot wrap handler as 'onError' must be a function: current value is ${
        describe(onError)
      }`,
    );
  }
  if (typeof skipUndelivered !== "boolean") {
    throw new TypeError(
      `Cannot wrap handler as 'skipUndelivered' must be a boolean: current value is ${
        describe(skipUndelivered)
      }`,
    );
  }
  const runner = new Runner({ onError, skipUndelivered });

  function settle(
    chain: Chain,
    response: unknown,
    request: Request,
    info: Deno.ServeHandlerInfo,
  ): void {
    if (response instanceof Response) runner.schedule(chain, request, info);
    else chain.close(DISCARDED);
  }

  function backgroundTasksHandler(
    request: Request,
    info: Deno.ServeHandlerInfo,
  ): Response | Promise<Response> {
    const tasks = new BackgroundTasks();
    const chain = internals.chainOf(tasks);
    chain.owner = runner;
    let response: Response | Promise<Response>;
    try {
      response = handler(request, info, tasks);
    } catch (error) {
      chain.close(DISCARDED);
      throw error;
    }
    if (isThenable(response)) {
      return Promise.resolve(response).then((resolved) => {
        settle(chain, resolved, request, info);
        return resolved;
      }, (error) => {
        chain.close(DISCARDED);
        throw error;
      });
    }
    settle(chain, response, request, info);
    return response;
  }

  return Object.defineProperties(backgroundTasksHandler, {
    drain: {
      value: function drain() {
        return runner.drain();
      },
    },
    pending: { get: () => runner.pending, enumerable: true },
  }) as DrainableHandler;
}
