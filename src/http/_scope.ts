// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The request scope, which both HTTP adapters follow (the Deno.serve
// wrapper and the Hono middleware): a request's chain is opened before its
// handler runs; once the handler has answered, the chain is discarded (the
// handler threw, or answered with something other than a Response), or a
// backend stores it before the response goes out (the response waits, and
// fails when it cannot be stored), or it is scheduled to run after the
// response. A request's scope is its chain, which the adapter hands back at
// each step: a request holds no object of its own for it.

import type { Chain } from "../core/_chain.ts";
import { type RunnerConfig, runnerConfig } from "../core/_config.ts";
import type { AmbientContext } from "../core/_ambient.ts";
import { Runner } from "../core/_runner.ts";
import {
  assertFunction,
  assertNumber,
  assertOptions,
  describe,
  optionKeys,
} from "../util/_assert.ts";
import { isThenable, toPromise } from "../util/_promise.ts";
import type { BackgroundTasks } from "../core/background_tasks.ts";
import type { TaskBackend } from "../api/task_backend.ts";
import type { DrainResult, TaskControls } from "../api/task_controls.ts";
import type {
  DrainOptions,
  WithBackgroundTasksOptions,
} from "../api/options.ts";

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

/** The keys of `DrainOptions`. */
const DRAIN_OPTIONS = optionKeys<DrainOptions>({ timeout: true, signal: true });

/** The scopes behind each handler or middleware given controls. */
const byTarget = new WeakMap<object, RequestScopes>();

/**
 * The request scopes of one handler or middleware, over its runner: one
 * object per adapter, whose methods take a request's chain.
 */
export class RequestScopes {
  readonly #runner: Runner;
  readonly #config: RunnerConfig;

  /**
   * @param options The adapter's options, checked here.
   * @param action What a bad option's error starts with.
   */
  constructor(options: WithBackgroundTasksOptions, action: string) {
    this.#config = runnerConfig(options, action);
    this.#runner = new Runner(this.#config);
  }

  /** Set with `ambient: true`: the handler runs with its tasks in it. */
  get ambient(): AmbientContext | undefined {
    return this.#config.ambient;
  }

  /** Where chains go instead of running here, if anywhere: serve() closes it. */
  get backend(): TaskBackend | undefined {
    return this.#config.backend;
  }

  /** Opens a request's scope, before its handler runs: see `tasksOf()`. */
  open(request: Request): Chain {
    return this.#runner.open(request);
  }

  /** The handler threw or rejected: its tasks are discarded. */
  fail(chain: Chain): void {
    this.#runner.discard(chain);
  }

  /**
   * The handler answered `response`, which is returned, as the same
   * object: anything but a Response discards the tasks. With a backend that
   * stores chains before their response, a promise of it instead, which
   * resolves once the chain is stored; if it cannot be, the response will
   * not be sent, so its body is cancelled, the request's in-process tasks
   * are discarded, and the promise rejects with an error whose `cause` says
   * why. Otherwise, the chain runs once the response has been sent, and so
   * does the request's in-process chain (`tasks.inProcess`), if any.
   */
  respond<R>(
    chain: Chain,
    response: R,
    request: Request,
    info: Deno.ServeHandlerInfo | undefined,
  ): R | Promise<R> {
    if (!(response instanceof Response)) {
      this.#runner.discard(chain);
      return response;
    }
    if (this.#config.backend !== undefined) {
      return this.#respondDurable(chain, response, request, info);
    }
    this.#runner.schedule(chain, request, info);
    return response;
  }

  /** respond() with a backend: the chain it takes, and the in-process one. */
  #respondDurable<R extends Response>(
    chain: Chain,
    response: R,
    request: Request,
    info: Deno.ServeHandlerInfo | undefined,
  ): R | Promise<R> {
    const runner = this.#runner;
    const { inProcessChain: inProcess } = chain;
    if (this.#config.storeFirst && chain.remaining > 0) {
      return runner.store(chain, request).then(
        () => {
          if (inProcess !== undefined) {
            runner.schedule(inProcess, request, info);
          }
          return response;
        },
        (cause) => {
          if (inProcess !== undefined) runner.discard(inProcess);
          response.body?.cancel().catch(() => {});
          throw new Error(
            "Cannot respond as the backend could not store the request's tasks",
            { cause },
          );
        },
      );
    }
    runner.schedule(chain, request, info);
    if (inProcess !== undefined) runner.schedule(inProcess, request, info);
    return response;
  }

  /**
   * At a shutdown: waits for the chains live now, as `drain()` does, and,
   * once `signal` aborts, gives up on them and on the chains whose handler
   * still runs (their responses will not go out).
   */
  shutdown(signal: AbortSignal): Promise<DrainResult> {
    return this.#runner.drain({ signal, open: true });
  }

  /**
   * Gives a handler or middleware the runner's `drain()` and `stats`, and
   * makes these scopes its own for `scopesFor()`.
   */
  controls<F extends object>(target: F): F & TaskControls {
    const runner = this.#runner;
    function drain(options: DrainOptions = {}): Promise<DrainResult> {
      const action = "Cannot drain";
      assertOptions(options, DRAIN_OPTIONS, action);
      // Infinity, the default, waits as long as it takes.
      if (options.timeout !== undefined) {
        assertNumber(options.timeout, "timeout", action, 0, true);
      }
      if (
        options.signal !== undefined &&
        !(options.signal instanceof AbortSignal)
      ) {
        throw new TypeError(
          `${action} as 'signal' must be an AbortSignal: current value is ${
            describe(options.signal)
          }`,
        );
      }
      return runner.drain(options);
    }
    byTarget.set(target, this);
    return Object.defineProperties(target, {
      drain: { value: drain },
      stats: { get: () => runner.stats, enumerable: true },
    }) as F & TaskControls;
  }
}

/** A request's tasks, for its handler. */
export function tasksOf(chain: Chain): BackgroundTasks {
  return chain.facade as unknown as BackgroundTasks;
}

/**
 * The request scopes behind a handler made by `withBackgroundTasks()` or
 * `serve()`, or a middleware; `undefined` for any other value. Looked up
 * in a table of this module's, which runs no code of the value's.
 */
export function scopesFor(target: unknown): RequestScopes | undefined {
  // A WeakMap answers undefined for a value that cannot be a key.
  return byTarget.get(target as object);
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
  const scopes = new RequestScopes(options, action);
  const { ambient } = scopes;

  function backgroundTasksHandler(
    request: Request,
    info: Deno.ServeHandlerInfo,
  ): Response | Promise<Response> {
    const chain = scopes.open(request);
    const tasks = tasksOf(chain);
    let response: Response | Promise<Response>;
    try {
      response = ambient === undefined
        ? handler(request, info, tasks)
        : ambient.run(tasks, () => handler(request, info, tasks));
    } catch (error) {
      scopes.fail(chain);
      throw error;
    }
    if (isThenable(response)) {
      return toPromise(response).then(
        (resolved) => scopes.respond(chain, resolved, request, info),
        (error) => {
          scopes.fail(chain);
          throw error;
        },
      ) as Promise<Response>;
    }
    return scopes.respond(chain, response, request, info);
  }

  return scopes.controls(backgroundTasksHandler);
}
