// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The wrapper itself: a Deno.serve handler in, a handler with controls
// out. Per request it opens a chain, calls the user's handler with it,
// and, once a Response is returned, hands the chain to the runner to be
// run after the response (or stored by a backend before it).

import { type Chain, internals } from "../core/_chain.ts";
import { runnerConfig } from "../core/_config.ts";
import { Runner } from "../core/_runner.ts";
import {
  assertFunction,
  assertNumber,
  assertOptions,
  describe,
  optionKeys,
} from "../util/_assert.ts";
import { isThenable, toPromise } from "../util/_promise.ts";
import { BackgroundTasks } from "../core/background_tasks.ts";
import type {
  DrainOptions,
  DrainResult,
  TaskControls,
  WithBackgroundTasksOptions,
} from "../api/task_controls.ts";

/**
 * A handler that receives the request's tasks third: what
 * `BackgroundTasksHandler` says, seen from below the public class.
 */
type HandlerWithTasks = (
  request: Request,
  info: Deno.ServeHandlerInfo,
  tasks: BackgroundTasks,
) => Response | Promise<Response>;

/** A wrapped handler: what `DrainableHandler` says, seen from below. */
type WrappedHandler =
  & ((
    request: Request,
    info: Deno.ServeHandlerInfo,
  ) => Response | Promise<Response>)
  & TaskControls;

/** Creates a request's tasks, owned by `runner`. */
export function tasksFor(
  runner: Runner,
  request: Request,
): { tasks: BackgroundTasks; chain: Chain } {
  const tasks = new BackgroundTasks();
  const chain = internals.chainOf(tasks);
  chain.owner = runner;
  chain.facade = tasks;
  runner.opened(chain, request);
  internals.created?.(chain);
  return { tasks, chain };
}

/**
 * The error a request fails with when the backend could not store its
 * chain before its response: the response will not be sent, so its body is
 * cancelled, letting whatever produces it stop.
 */
export function unstored(response: Response, cause: unknown): Error {
  response.body?.cancel().catch(() => {});
  return new Error(
    "Cannot respond as the backend could not store the request's tasks",
    { cause },
  );
}

/** The keys of `DrainOptions`. */
const DRAIN_OPTIONS = optionKeys<DrainOptions>({ timeout: true, signal: true });

/** The runner behind each handler or middleware given controls. */
export const runnerOf: WeakMap<object, Runner> = new WeakMap();

/** Gives a handler or middleware the runner's `drain()` and `stats`. */
export function withControls<F extends object>(
  target: F,
  runner: Runner,
): F & TaskControls {
  function drain(options: DrainOptions = {}): Promise<DrainResult> {
    const action = "Cannot drain";
    assertOptions(options, DRAIN_OPTIONS, action);
    // Infinity, the default, waits as long as it takes.
    if (options.timeout !== undefined) {
      assertNumber(options.timeout, "timeout", action, 0, true);
    }
    if (
      options.signal !== undefined && !(options.signal instanceof AbortSignal)
    ) {
      throw new TypeError(
        `${action} as 'signal' must be an AbortSignal: current value is ${
          describe(options.signal)
        }`,
      );
    }
    return runner.drain(options);
  }
  runnerOf.set(target, runner);
  return Object.defineProperties(target, {
    drain: { value: drain },
    stats: { get: () => runner.stats, enumerable: true },
  }) as F & TaskControls;
}

/**
 * What withBackgroundTasks() does, with the `action` its errors start with:
 * serve() wraps its handler with its own.
 */
export function wrapHandler(
  handler: HandlerWithTasks,
  options: WithBackgroundTasksOptions,
  action: string,
): WrappedHandler {
  assertFunction(handler, "handler", action);
  const config = runnerConfig(options, action);
  const runner = new Runner(config);
  const { storage, storeFirst } = config;

  /** What the wrapper answers once the handler has answered `response`. */
  function respond(
    chain: Chain,
    response: unknown,
    request: Request,
    info: Deno.ServeHandlerInfo,
  ): Response | Promise<Response> {
    if (!(response instanceof Response)) {
      runner.discard(chain);
      return response as Response;
    }
    if (storeFirst && chain.remaining > 0) {
      return runner.store(chain, request).then(
        () => response,
        (error) => {
          throw unstored(response, error);
        },
      );
    }
    runner.schedule(chain, request, info);
    return response;
  }

  function backgroundTasksHandler(
    request: Request,
    info: Deno.ServeHandlerInfo,
  ): Response | Promise<Response> {
    const { tasks, chain } = tasksFor(runner, request);
    let response: Response | Promise<Response>;
    try {
      response = storage === undefined
        ? handler(request, info, tasks)
        : storage.run(tasks, () => handler(request, info, tasks));
    } catch (error) {
      runner.discard(chain);
      throw error;
    }
    if (isThenable(response)) {
      return toPromise(response).then(
        (resolved) => respond(chain, resolved, request, info),
        (error) => {
          runner.discard(chain);
          throw error;
        },
      );
    }
    return respond(chain, response, request, info);
  }

  return withControls(backgroundTasksHandler, runner);
}
