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
} from "../util/_assert.ts";
import type { DrainResult } from "../api/task_controls.ts";

/** The options of `Deno.serve` that serve() passes on. */
const DENO_SERVE_OPTIONS = [
  "port",
  "hostname",
  "reusePort",
  "tcpBacklog",
  "automaticCompression",
  "cert",
  "key",
  "onListen",
  "onError",
] as const;

/** Every key of `ServeOptions`. */
const SERVE_OPTIONS: readonly string[] = [
  ...WITH_BACKGROUND_TASKS_OPTIONS,
  ...DENO_SERVE_OPTIONS,
  "transport",
  "shutdownTimeout",
  "shutdownSignals",
  "signal",
  "onShutdown",
];

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
    shutdownTimeout = 10_000,
    shutdownSignals = Deno.build.os === "windows"
      ? ["SIGINT"]
      : ["SIGINT", "SIGTERM"],
    signal,
    onShutdown,
    transport,
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
    taskOptions: pick(options, WITH_BACKGROUND_TASKS_OPTIONS),
    denoOptions: pick(options, DENO_SERVE_OPTIONS) as Deno.ServeTcpOptions,
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
  assertOptions(first, [...SERVE_OPTIONS, "handler"], action);
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
