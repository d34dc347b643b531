// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// serve()'s options: which of Deno.serve's call shapes it was given, and
// every option checked before anything listens, Deno.serve's own included
// (it accepts some wrong values silently, or fails with a message that does
// not name the option), so that a mistake fails at the call.

import { WITH_BACKGROUND_TASKS_OPTIONS } from "../core/_config.ts";
import {
  assertBoolean,
  assertFunction,
  assertInteger,
  assertNumber,
  assertOptions,
  describe,
  optionKeys,
} from "../util/_assert.ts";
import type { DrainResult } from "../api/task_controls.ts";
import type { WithBackgroundTasksOptions } from "../api/options.ts";

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
 *   shutdownSignals: [],
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
  /**
   * The most connections the kernel queues before the server accepts them.
   *
   * @default {511}
   */
  tcpBacklog?: number;
  /**
   * Whether Deno compresses response bodies when the client accepts it.
   *
   * @default {true}
   */
  automaticCompression?: boolean;
  /** The certificate, in PEM, to serve HTTPS; needs `key`. */
  cert?: string;
  /** The private key, in PEM, to serve HTTPS; needs `cert`. */
  key?: string;
  /** Called once the server listens; by default Deno prints the address. */
  onListen?: (localAddr: Deno.NetAddr) => void;
  /**
   * Turns an error thrown by the handler into a response, as `Deno.serve`'s
   * `onError` does (failed tasks go to `onTaskError`). It receives a
   * {@linkcode QueueFullError} the handler did not catch too.
   *
   * @default {a 503 response with `Retry-After: 5` for a QueueFullError,
   * which is counted in `stats.refused` and not written; else Deno's: a 500
   * response, the error written to the console}
   */
  onError?: (error: unknown) => Response | Promise<Response>;
  /**
   * Milliseconds a shutdown may take in all: finishing the responses in
   * flight, then the background tasks, those a backend runs in this process
   * (the Deno KV listener) included. Tasks still pending then are abandoned
   * (their signals aborted) and reported; a backend's are handed back to
   * its store, to run again. After a shutdown signal, it bounds the exit
   * too: with Deno's telemetry on, `Deno.exit()` first exports what is
   * left, and if it still is at the deadline (or 1 s after the exit began,
   * when the drain used the whole budget), the process writes so and ends
   * by SIGKILL (status 137).
   *
   * On Deno Deploy, which sends SIGINT and kills the process 5 s later, the
   * default is 3 s, so that the drain, the export's 1 s and what a shutdown
   * does at its deadline all end before Deploy's SIGKILL: the report is
   * written and the exit code is set. serve() knows it is on Deploy from
   * the `DENO_DEPLOY` variable Deploy sets (read only with the permission
   * to, which Deploy grants: it never prompts for it); give a value of your
   * own to keep it.
   *
   * @default {10000, or 3000 on Deno Deploy}
   */
  shutdownTimeout?: number;
  /**
   * The signals that start a graceful shutdown and then end the process: with
   * exit code 0 when every task finished, 1 when some were abandoned (those
   * a backend ran here and handed back to its store at the deadline count
   * among them: they were cut off, though they run again). One
   * received during a shutdown, however it started, abandons the remaining
   * tasks at once and ends the process. `[]` handles none.
   *
   * @default {["SIGINT", "SIGTERM"], only "SIGINT" on Windows}
   */
  shutdownSignals?: readonly Deno.Signal[];
  /** Starts a graceful shutdown when aborted, as `shutdown()` does; the process does not exit. */
  signal?: AbortSignal;
  /**
   * Told what a shutdown drained and what it abandoned.
   *
   * @default {logShutdown}
   */
  onShutdown?: (result: DrainResult) => unknown;
}

/** Every key serve() takes, its handler's included. */
const SERVE_OPTIONS = optionKeys<ServeOptions & { handler: unknown }>({
  onTaskError: true,
  timeout: true,
  onTaskStart: true,
  onTaskEnd: true,
  telemetry: true,
  skipUndelivered: true,
  concurrency: true,
  maxPending: true,
  ambient: true,
  backend: true,
  handOver: true,
  port: true,
  hostname: true,
  reusePort: true,
  tcpBacklog: true,
  automaticCompression: true,
  cert: true,
  key: true,
  onListen: true,
  onError: true,
  shutdownTimeout: true,
  shutdownSignals: true,
  signal: true,
  onShutdown: true,
  handler: true,
});

/** The default shutdownTimeout. */
const SHUTDOWN_TIMEOUT = 10_000;

/**
 * The default shutdownTimeout on Deno Deploy, which sends SIGINT and kills
 * the process 5 s later (docs.deno.com/deploy/reference/runtime, Shutdown).
 * What comes after the deadline takes time too: with telemetry on, the
 * export at exit gets 1 s more (EXPORT_GRACE in _exit_watchdog.ts) before
 * the watchdog ends the process, and the 1 s left covers what the shutdown
 * does at its deadline (abandoning, a backend's close, the report, arming
 * the watchdog in about 50 ms). So the report and the exit code come before
 * Deploy's SIGKILL, with a collector that answers or not.
 */
const DENO_DEPLOY_SHUTDOWN_TIMEOUT = 3_000;

/**
 * Whether this process runs on Deno Deploy, which sets `DENO_DEPLOY`
 * (`true` in docs.deno.com/deploy/reference/env_vars_and_contexts, `1` in
 * its changelog): any value but an empty one, `0` or `false`. Read only when
 * the permission to is granted, as it always is on Deploy, so that a
 * program run without it is neither prompted nor refused.
 */
function onDenoDeploy(): boolean {
  try {
    const env = { name: "env", variable: "DENO_DEPLOY" } as const;
    if (Deno.permissions.querySync(env).state !== "granted") return false;
    const value = Deno.env.get("DENO_DEPLOY") ?? "";
    return !/^(?:|0|false)$/i.test(value);
  } catch {
    return false;
  }
}

const SHAPES =
  "serve(handler), serve(options, handler) or serve({ ...options, handler })";

/** serve()'s options, checked, with their defaults. */
export interface ServeConfig {
  readonly handler: (...args: never[]) => unknown;
  /** The options for the wrapper. */
  readonly taskOptions: Record<string, unknown>;
  /** The options for `Deno.serve`. */
  readonly denoOptions: Deno.ServeTcpOptions;
  readonly shutdownTimeout: number;
  readonly shutdownSignals: readonly Deno.Signal[];
  readonly signal: AbortSignal | undefined;
  /** `undefined` for the default, `logShutdown`. */
  readonly onShutdown: ((result: DrainResult) => unknown) | undefined;
}

/** Checks what serve() was called with, and applies the defaults. */
export function serveConfig(
  first: unknown,
  second: unknown,
  action: string,
): ServeConfig {
  const { options, handler } = callShape(first, second, action);
  const {
    shutdownTimeout = onDenoDeploy()
      ? DENO_DEPLOY_SHUTDOWN_TIMEOUT
      : SHUTDOWN_TIMEOUT,
    shutdownSignals = Deno.build.os === "windows"
      ? ["SIGINT"]
      : ["SIGINT", "SIGTERM"],
    signal,
    onShutdown,
    // Checked here: serve() listens on TCP only.
    transport,
    ...rest
  } = options;
  assertNumber(shutdownTimeout, "shutdownTimeout", action, 0, true);
  if (onShutdown !== undefined) {
    assertFunction(onShutdown, "onShutdown", action);
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError(
      `${action} as 'signal' must be an AbortSignal: current value is ${
        describe(signal)
      }`,
    );
  }
  if (transport !== undefined && transport !== "tcp") {
    throw new TypeError(
      `${action} as 'transport' must be "tcp": for a Unix socket, give Deno.serve a handler made by withBackgroundTasks(); current value is ${
        describe(transport)
      }`,
    );
  }
  checkDenoOptions(options, action);
  return {
    handler,
    taskOptions: pick(rest, WITH_BACKGROUND_TASKS_OPTIONS),
    // Everything else is Deno's, a later Deno's new options included.
    denoOptions: omit(
      rest,
      WITH_BACKGROUND_TASKS_OPTIONS,
    ) as Deno.ServeTcpOptions,
    shutdownTimeout,
    shutdownSignals: signalNames(shutdownSignals, action),
    signal: signal as AbortSignal | undefined,
    onShutdown: onShutdown as ServeConfig["onShutdown"],
  };
}

/** Sorts out which of Deno.serve's call shapes serve() was called with. */
function callShape(
  first: unknown,
  second: unknown,
  action: string,
): {
  options: Record<string, unknown>;
  handler: (...args: never[]) => unknown;
} {
  if (typeof first === "function" && second === undefined) {
    return { options: {}, handler: first as () => unknown };
  }
  if (typeof first !== "object" || first === null) {
    throw new TypeError(
      `${action} as 'options' must be an object: current value is ${
        describe(first)
      }; call it as ${SHAPES}`,
    );
  }
  // A key close to one of serve()'s is a misspelling; any other may be an
  // option of a later Deno's, and goes to Deno.serve.
  assertOptions(first, SERVE_OPTIONS, action, "options", true);
  const { handler: inOptions, ...options } = first as Record<string, unknown>;
  if (second === undefined && inOptions === undefined) {
    throw new TypeError(
      `${action} as it needs a handler: call it as ${SHAPES}`,
    );
  }
  if (second !== undefined && inOptions !== undefined) {
    throw new TypeError(
      `${action} as it was given two handlers, in 'options' and as 'handler': call it as ${SHAPES}`,
    );
  }
  const handler = second ?? inOptions;
  assertFunction(handler, "handler", action);
  return { options, handler };
}

/** Checks the values Deno.serve would take without a word, or fail on unnamed. */
function checkDenoOptions(
  options: Record<string, unknown>,
  action: string,
): void {
  const { port, hostname, reusePort, tcpBacklog, cert, key } = options;
  if (port !== undefined) {
    assertInteger(port, "port", action, 0);
    if (port > 65_535) {
      throw new RangeError(
        `${action} as 'port' must be at most 65535: current value is ${port}`,
      );
    }
  }
  if (hostname !== undefined && typeof hostname !== "string") {
    throw new TypeError(
      `${action} as 'hostname' must be a string: current value is ${
        describe(hostname)
      }`,
    );
  }
  if (reusePort !== undefined) assertBoolean(reusePort, "reusePort", action);
  if (tcpBacklog !== undefined) {
    assertInteger(tcpBacklog, "tcpBacklog", action, 1);
  }
  const { automaticCompression: compression } = options;
  if (compression !== undefined) {
    assertBoolean(compression, "automaticCompression", action);
  }
  for (const [name, value] of [["cert", cert], ["key", key]] as const) {
    if (value !== undefined && typeof value !== "string") {
      throw new TypeError(
        `${action} as '${name}' must be a string, in PEM: current value is ${
          describe(value)
        }`,
      );
    }
  }
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError(
      `${action} as 'cert' and 'key' go together: only '${
        cert === undefined ? "key" : "cert"
      }' was given`,
    );
  }
  for (const name of ["onListen", "onError"]) {
    if (options[name] !== undefined) {
      assertFunction(options[name], name, action);
    }
  }
}

/** Checks that Deno can listen to each signal, without listening yet. */
function signalNames(names: unknown, action: string): Deno.Signal[] {
  if (!Array.isArray(names)) {
    throw new TypeError(
      `${action} as 'shutdownSignals' must be an array: current value is ${
        describe(names)
      }`,
    );
  }
  const probe = () => {};
  names.forEach((name: unknown, index) => {
    try {
      Deno.addSignalListener(name as Deno.Signal, probe);
      Deno.removeSignalListener(name as Deno.Signal, probe);
    } catch {
      throw new TypeError(
        `${action} as 'shutdownSignals[${index}]' must be a signal name Deno can listen to, such as "SIGTERM": current value is ${
          describe(name)
        }`,
      );
    }
  });
  return names;
}

/** The options given whose keys are not among `keys`, those left undefined out. */
function omit(
  options: Record<string, unknown>,
  keys: readonly string[],
): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (!keys.includes(key) && value !== undefined) kept[key] = value;
  }
  return kept;
}

/** The options given whose keys are among `keys`, those left undefined out. */
function pick(
  options: Record<string, unknown>,
  keys: readonly string[],
): Record<string, unknown> {
  const picked: Record<string, unknown> = {};
  for (const key of keys) {
    if (options[key] !== undefined) picked[key] = options[key];
  }
  return picked;
}
