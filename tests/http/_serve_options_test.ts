// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// serve()'s options, checked before anything listens: serveConfig() sorts
// out the call shape, applies the defaults, splits the options between the
// wrapper and Deno.serve, and refuses what Deno.serve would take without a
// word or refuse without naming the option.

import assert from "node:assert/strict";
import { serve, type ServeOptions } from "../../mod.ts";
import { serveConfig } from "../../src/http/_serve_options.ts";
import { startScript } from "../_helpers/process.ts";

const action = "Cannot test serve";

const local = {
  hostname: "127.0.0.1",
  port: 0,
  shutdownSignals: [],
  onListen() {},
} satisfies ServeOptions;

const handler = () => new Response("ok");

Deno.test("serveConfig() takes each of Deno.serve's call shapes", async (t) => {
  const shapes: [string, unknown, unknown][] = [
    ["serve(handler)", handler, undefined],
    ["serve(options, handler)", { port: 0 }, handler],
    ["serve({ ...options, handler })", { port: 0, handler }, undefined],
  ];
  for (const [name, first, second] of shapes) {
    await t.step(name, () => {
      const config = serveConfig(first, second, action);
      assert.equal(config.handler, handler);
      assert.deepEqual(config.taskOptions, {});
    });
  }
});

Deno.test("serveConfig() applies its defaults", () => {
  const config = serveConfig(handler, undefined, action);
  assert.deepEqual({ ...config, handler: undefined }, {
    handler: undefined,
    taskOptions: {},
    denoOptions: {},
    shutdownTimeout: 10_000,
    shutdownSignals: Deno.build.os === "windows"
      ? ["SIGINT"]
      : ["SIGINT", "SIGTERM"],
    signal: undefined,
    onShutdown: undefined,
  });
});

/**
 * The shutdownTimeout serve() takes by default in a process of its own,
 * with `env` added to its environment and the given permission flags.
 */
async function defaultInProcess(
  env: Record<string, string>,
  flags: string[],
  options = "{}",
): Promise<string> {
  const module = new URL("../../src/http/_serve_options.ts", import.meta.url);
  await using script = await startScript(
    `
    import { serveConfig } from ${JSON.stringify(module.href)};
    console.log(serveConfig(${options}, () => new Response(), "Cannot serve").shutdownTimeout);
    `,
    flags,
    20_000,
    env,
  );
  const { code, stdout, stderr } = await script.exit();
  assert.equal(code, 0, stderr);
  return stdout.join("\n");
}

Deno.test("serveConfig() makes the default shutdownTimeout fit inside Deno Deploy's 5 s from SIGINT to SIGKILL when DENO_DEPLOY is set", async (t) => {
  // Deploy's docs give "true" (deploy/reference/env_vars_and_contexts.md)
  // and once gave "1" (deploy/changelog.md).
  for (const value of ["true", "1"]) {
    await t.step(`DENO_DEPLOY=${value}`, async () => {
      assert.equal(
        await defaultInProcess({ DENO_DEPLOY: value }, ["--allow-env"]),
        "3000",
      );
    });
  }
  await t.step("only the variable it reads needs a permission", async () => {
    assert.equal(
      await defaultInProcess({ DENO_DEPLOY: "true" }, [
        "--allow-env=DENO_DEPLOY",
      ]),
      "3000",
    );
  });
  await t.step("a shutdownTimeout given is kept as it is", async () => {
    assert.equal(
      await defaultInProcess(
        { DENO_DEPLOY: "true" },
        ["--allow-env"],
        "{ shutdownTimeout: 4_500 }",
      ),
      "4500",
    );
  });
});

Deno.test("serveConfig() keeps the 10 s default off Deno Deploy, and without the permission to read DENO_DEPLOY, which it never asks for", async (t) => {
  const cases: [string, Record<string, string>, string[]][] = [
    ["DENO_DEPLOY unset", {}, ["--allow-env"]],
    ["DENO_DEPLOY=false", { DENO_DEPLOY: "false" }, ["--allow-env"]],
    ["DENO_DEPLOY=0", { DENO_DEPLOY: "0" }, ["--allow-env"]],
    ["DENO_DEPLOY empty", { DENO_DEPLOY: "" }, ["--allow-env"]],
    // Deploy grants every permission: a program run without this one is
    // not on Deploy, and is neither prompted nor refused.
    ["no permission to read it", { DENO_DEPLOY: "true" }, []],
  ];
  for (const [name, env, flags] of cases) {
    await t.step(name, async () => {
      assert.equal(await defaultInProcess(env, flags), "10000");
    });
  }
});

Deno.test("serveConfig() passes a key that is none of serve()'s options, nor a misspelling of one, on to Deno.serve", () => {
  const later = {
    someOptionOfALaterDeno: 1,
    errorHandler: () => new Response(),
    drainTimeout: 5_000,
  };
  const config = serveConfig(
    { port: 8080, timeout: 100, ...later },
    handler,
    action,
  );
  assert.deepEqual(config.denoOptions, { port: 8080, ...later });
  assert.deepEqual(config.taskOptions, { timeout: 100 });
  assert.throws(
    () => serveConfig({ shutdownTimout: 1 }, handler, action),
    {
      name: "TypeError",
      message:
        "Cannot test serve as 'shutdownTimout' is not one of its options: did you mean 'shutdownTimeout'?",
    },
  );
});

Deno.test("serveConfig() gives the wrapper its options and Deno.serve its own, leaving out those undefined", () => {
  const onListen = () => {};
  const onShutdown = () => {};
  const signal = new AbortController().signal;
  const config = serveConfig(
    {
      port: 8080,
      hostname: "127.0.0.1",
      onListen,
      onError: undefined,
      cert: "-----BEGIN CERTIFICATE-----",
      key: "-----BEGIN PRIVATE KEY-----",
      timeout: 100,
      maxPending: 5,
      concurrency: undefined,
      transport: "tcp",
      shutdownTimeout: Infinity,
      shutdownSignals: ["SIGTERM"],
      signal,
      onShutdown,
    },
    handler,
    action,
  );
  assert.deepEqual(config.taskOptions, { timeout: 100, maxPending: 5 });
  assert.deepEqual(config.denoOptions, {
    port: 8080,
    hostname: "127.0.0.1",
    cert: "-----BEGIN CERTIFICATE-----",
    key: "-----BEGIN PRIVATE KEY-----",
    onListen,
  });
  assert.deepEqual(
    [config.shutdownTimeout, config.shutdownSignals],
    [Infinity, ["SIGTERM"]],
  );
  assert.equal(config.signal, signal);
  assert.equal(config.onShutdown, onShutdown);
});

Deno.test("serveConfig() refuses what Deno.serve would take without a word, or refuse without naming the option", async (t) => {
  const table: [string, Record<string, unknown>, string, string][] = [
    [
      "a key without its cert",
      { key: "-----BEGIN PRIVATE KEY-----" },
      "TypeError",
      `${action} as 'cert' and 'key' go together: only 'key' was given`,
    ],
    [
      "a cert that is not a string",
      { cert: new Uint8Array(), key: "-----BEGIN PRIVATE KEY-----" },
      "TypeError",
      `${action} as 'cert' must be a string, in PEM: current value is a Uint8Array`,
    ],
    [
      "a negative port",
      { port: -1 },
      "RangeError",
      `${action} as 'port' must be an integer >= 0: current value is -1`,
    ],
    [
      "a fractional port",
      { port: 80.5 },
      "RangeError",
      `${action} as 'port' must be an integer >= 0: current value is 80.5`,
    ],
    [
      "a tcpBacklog of zero",
      { tcpBacklog: 0 },
      "RangeError",
      `${action} as 'tcpBacklog' must be an integer >= 1: current value is 0`,
    ],
    [
      "a signal name that is a number",
      { shutdownSignals: ["SIGTERM", 15] },
      "TypeError",
      `${action} as 'shutdownSignals[1]' must be a signal name Deno can listen to, such as "SIGTERM": current value is 15`,
    ],
  ];
  for (const [name, options, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(() => serveConfig(options, handler, action), {
        name: errorName,
        message,
      });
    });
  }
});

Deno.test("serve() rejects options of the wrong type before it listens", async (t) => {
  const table: [string, ServeOptions, string, string][] = [
    [
      "shutdownTimeout",
      { shutdownTimeout: -1 },
      "RangeError",
      "Cannot serve as 'shutdownTimeout' must be a number >= 0 or Infinity: current value is -1",
    ],
    [
      "shutdownTimeout of the wrong type",
      { shutdownTimeout: "5000" as unknown as number },
      "TypeError",
      `Cannot serve as 'shutdownTimeout' must be a number: current value is "5000"`,
    ],
    [
      "shutdownSignals",
      { shutdownSignals: "SIGTERM" as unknown as Deno.Signal[] },
      "TypeError",
      `Cannot serve as 'shutdownSignals' must be an array: current value is "SIGTERM"`,
    ],
    [
      "onShutdown",
      { onShutdown: 1 as unknown as () => void },
      "TypeError",
      "Cannot serve as 'onShutdown' must be a function: current value is 1",
    ],
    [
      "signal",
      { signal: {} as AbortSignal },
      "TypeError",
      "Cannot serve as 'signal' must be an AbortSignal: current value is an object",
    ],
    [
      "a task option",
      { concurrency: 0 },
      "RangeError",
      "Cannot serve as 'concurrency' must be an integer >= 1 or Infinity: current value is 0",
    ],
    [
      "an unknown signal",
      { shutdownSignals: ["SIGFOO" as Deno.Signal] },
      "TypeError",
      `Cannot serve as 'shutdownSignals[0]' must be a signal name Deno can listen to, such as "SIGTERM": current value is "SIGFOO"`,
    ],
    [
      "a misspelt option",
      { shutdownTimout: 5000 } as ServeOptions,
      "TypeError",
      "Cannot serve as 'shutdownTimout' is not one of its options: did you mean 'shutdownTimeout'?",
    ],
    [
      "a misspelt task option",
      { timout: 100 } as ServeOptions,
      "TypeError",
      "Cannot serve as 'timout' is not one of its options: did you mean 'timeout'?",
    ],
    [
      "a port that is not a number",
      { port: "0" as unknown as number },
      "TypeError",
      `Cannot serve as 'port' must be a number: current value is "0"`,
    ],
    [
      "a port out of range",
      { port: 70_000 },
      "RangeError",
      "Cannot serve as 'port' must be at most 65535: current value is 70000",
    ],
    [
      "a hostname that is not a string",
      { hostname: 1 as unknown as string },
      "TypeError",
      "Cannot serve as 'hostname' must be a string: current value is 1",
    ],
    [
      "onError that is not a function",
      { onError: "x" as unknown as () => Response },
      "TypeError",
      `Cannot serve as 'onError' must be a function: current value is "x"`,
    ],
    [
      "onListen that is not a function",
      { onListen: "x" as unknown as () => void },
      "TypeError",
      `Cannot serve as 'onListen' must be a function: current value is "x"`,
    ],
    [
      "reusePort that is not a boolean",
      { reusePort: "yes" as unknown as boolean },
      "TypeError",
      `Cannot serve as 'reusePort' must be a boolean: current value is "yes"`,
    ],
    [
      "automaticCompression that is not a boolean",
      { automaticCompression: "no" as unknown as boolean },
      "TypeError",
      `Cannot serve as 'automaticCompression' must be a boolean: current value is "no"`,
    ],
    [
      "tcpBacklog that is not a number",
      { tcpBacklog: "1" as unknown as number },
      "TypeError",
      `Cannot serve as 'tcpBacklog' must be a number: current value is "1"`,
    ],
    [
      "a cert without its key",
      { cert: "-----BEGIN CERTIFICATE-----" },
      "TypeError",
      "Cannot serve as 'cert' and 'key' go together: only 'cert' was given",
    ],
    [
      "a transport other than TCP",
      { transport: "unix" } as unknown as ServeOptions,
      "TypeError",
      `Cannot serve as 'transport' must be "tcp": for a Unix socket, give Deno.serve a handler made by withBackgroundTasks(); current value is "unix"`,
    ],
  ];
  for (const [name, options, errorName, message] of table) {
    await t.step(name, () => {
      assert.throws(
        () => serve({ ...local, ...options }, () => new Response()),
        { name: errorName, message },
      );
    });
  }
});

Deno.test("serve() serves with an option of a later Deno's, which it passes on", async () => {
  const server = serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      onListen() {},
      shutdownSignals: [],
      onShutdown() {},
      someOptionOfALaterDeno: 1,
    } as ServeOptions,
    () => new Response("ok"),
  );
  const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
  assert.equal(await response.text(), "ok");
  await server.shutdown();
});
