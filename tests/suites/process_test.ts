// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Claims only a process of its own can show: nothing a task or a leaked
// `tasks` does ends the process or freezes its server, and a shutdown signal
// always ends it. Each program prints what happened; the test reads it.

import assert from "node:assert/strict";
import { startOtlpReceiver } from "../_helpers/otlp.ts";
import { startScript } from "../_helpers/process.ts";

const local =
  `{ hostname: "127.0.0.1", port: 0, shutdownSignals: [], onListen() {}, onShutdown() {} }`;

Deno.test("a late addTask() or waitUntil() on a leaked tasks never ends the process", async () => {
  await using script = await startScript(
    `
    import { serve } from "@afterward/background-tasks";
    let leaked;
    const server = serve(${local}, (_request, _info, tasks) => {
      leaked = tasks;
      tasks.addTask(() => {});
      return new Response("ok");
    });
    await (await fetch("http://127.0.0.1:" + server.addr.port)).text();
    await server.handler.drain();
    const added = Promise.withResolvers();
    setTimeout(() => {
      leaked.addTask((line) => console.log(line), "late task ran");
      leaked.waitUntil(Promise.resolve().then(() => console.log("late promise ran")));
      added.resolve();
    }, 0);
    await added.promise;
    const result = await server.shutdown();
    console.log(JSON.stringify(result.abandoned));
    `,
    ["--allow-net=127.0.0.1"],
  );
  const { code, stdout, stderr } = await script.exit();
  assert.equal(code, 0, stderr);
  assert.deepEqual(stdout, ["late promise ran", "late task ran", "0"]);
});

Deno.test("an abort listener that throws when the library aborts a task's signal never ends the process", async () => {
  await using script = await startScript(
    `
    import { BackgroundTasks, defineTask } from "@afterward/background-tasks";
    const hostile = defineTask(({ signal }) => {
      signal.addEventListener("abort", () => {
        throw new Error("listener failed");
      });
      return new Promise(() => {});
    }, { name: "hostile", timeout: 10 });
    const tasks = new BackgroundTasks();
    tasks.addTask(hostile);
    tasks.addTask(() => console.log("next task ran"));
    const results = await tasks.run({ onTaskError: (error) => console.log(error.name) });
    console.log(results.map((result) => result.status).join(" "));
    `,
  );
  const { code, stdout, stderr } = await script.exit();
  assert.equal(code, 0, stderr);
  assert.deepEqual(stdout, [
    "TaskTimeoutError",
    "next task ran",
    "rejected fulfilled",
  ]);
  assert.match(stderr, /abort listener .*"hostile".*threw/s);
  assert.match(stderr, /listener failed/);
});

Deno.test("an abort listener that throws at a drain deadline never ends the process", async () => {
  await using script = await startScript(
    `
    import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
    const hostile = defineTask(({ signal }) => {
      signal.addEventListener("abort", () => {
        throw new Error("listener failed");
      });
      return new Promise(() => {});
    }, { name: "hostile" });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(hostile);
      return new Response("ok");
    });
    await (await handler(new Request("http://localhost/"), {})).text();
    const result = await handler.drain({ timeout: 10 });
    console.log(JSON.stringify(result.abandonedTasks));
    `,
  );
  const { code, stdout, stderr } = await script.exit();
  assert.equal(code, 0, stderr);
  assert.deepEqual(stdout, ['{"hostile":1}']);
  assert.match(stderr, /listener failed/);
});

Deno.test("a task whose name cannot be read never ends the process at a drain deadline", async () => {
  await using script = await startScript(
    `
    import { withBackgroundTasks } from "@afterward/background-tasks";
    const throwing = () => new Promise(() => {});
    Object.defineProperty(throwing, "name", { get() { throw new Error("no name"); } });
    const symbol = () => new Promise(() => {});
    Object.defineProperty(symbol, "name", { value: Symbol("task") });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(throwing);
      tasks.addTask(symbol);
      return new Response("ok");
    });
    await (await handler(new Request("http://localhost/"), {})).text();
    const result = await handler.drain({ timeout: 10 });
    console.log(JSON.stringify(result.abandonedTasks));
    `,
  );
  const { code, stdout, stderr } = await script.exit();
  assert.equal(code, 0, stderr);
  assert.deepEqual(stdout, ['{"anonymous":2}']);
});

for (
  const [kind, body] of [
    ["synchronously", "tasks.addTask(again);"],
    ["after microtasks only", "await null; await null; tasks.addTask(again);"],
  ]
) {
  Deno.test(`a chain whose task re-adds itself ${kind} never freezes the server`, async () => {
    await using script = await startScript(
      `
      import { serve } from "@afterward/background-tasks";
      let runs = 0;
      const server = serve({
        hostname: "127.0.0.1", port: 0, onListen() {}, shutdownTimeout: 50,
        onShutdown: (result) => console.log("abandoned", JSON.stringify(result.abandonedTasks)),
      }, (request, _info, tasks) => {
        if (new URL(request.url).pathname === "/runaway") {
          tasks.addTask(async function again() {
            if (++runs === 1) console.log("runaway started");
            ${body}
          });
        }
        return new Response(String(runs));
      });
      console.log(server.addr.port);
      `,
      ["--allow-net=127.0.0.1"],
    );
    const url = `http://127.0.0.1:${await script.nextLine()}`;
    const signal = AbortSignal.timeout(20_000);
    await (await fetch(`${url}/runaway`, { signal })).text();
    assert.equal(await script.nextLine(), "runaway started");
    // Before the runaway chain yielded, this request was never answered.
    const runs = Number(await (await fetch(`${url}/ping`, { signal })).text());
    assert.ok(runs > 0, "the runaway task ran before the next request");
    script.child.kill("SIGTERM");
    const { code, stdout } = await script.exit();
    assert.deepEqual(stdout.slice(1), [
      "runaway started",
      'abandoned {"again":1}',
    ]);
    assert.equal(code, 1);
  });
}

Deno.test("a shutdown signal ends the process during a shutdown started by serve()'s own signal", async () => {
  await using script = await startScript(
    `
    import { serve } from "@afterward/background-tasks";
    const controller = new AbortController();
    const server = serve({
      hostname: "127.0.0.1", port: 0, onListen() {}, signal: controller.signal,
      shutdownTimeout: 60_000,
      onShutdown: (result) => console.log("abandoned", result.abandoned),
    }, (_request, _info, tasks) => {
      tasks.addTask(function forever() { return new Promise(() => {}); });
      return new Response("ok");
    });
    // A timer of the program's own, which keeps the event loop alive.
    setInterval(() => {}, 1_000);
    await (await fetch("http://127.0.0.1:" + server.addr.port)).text();
    controller.abort();
    console.log("shutting down");
    `,
    ["--allow-net=127.0.0.1"],
  );
  assert.equal(await script.nextLine(), "shutting down");
  script.child.kill("SIGTERM");
  const { code, stdout } = await script.exit();
  assert.deepEqual(stdout, ["shutting down", "abandoned 1"]);
  assert.equal(code, 1);
});

Deno.test("a serve() that could not listen leaves no signal listener behind to fail at the next signal", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await using script = await startScript(
      `
      import { serve } from "@afterward/background-tasks";
      try {
        serve({ hostname: "127.0.0.1", port: ${busy.addr.port}, onListen() {} }, () => new Response("ok"));
      } catch (error) {
        console.log(error.name);
      }
      const server = serve({
        hostname: "127.0.0.1", port: 0, onListen() {},
        onShutdown: (result) => console.log("succeeded", result.succeeded),
      }, (_request, _info, tasks) => {
        tasks.addTask(async () => {
          await new Promise((resolve) => setTimeout(resolve, 200));
          console.log("task ran");
        });
        return new Response("ok");
      });
      await (await fetch("http://127.0.0.1:" + server.addr.port)).text();
      console.log("ready");
      `,
      ["--allow-net=127.0.0.1"],
    );
    assert.equal(await script.nextLine(), "AddrInUse");
    assert.equal(await script.nextLine(), "ready");
    script.child.kill("SIGINT");
    const { code, stdout, stderr } = await script.exit();
    assert.deepEqual(stdout, ["AddrInUse", "ready", "task ran", "succeeded 1"]);
    assert.equal(code, 0, stderr);
  } finally {
    busy.close();
  }
});

/** A collector that accepts connections and never answers. */
function silentCollector(): AsyncDisposable & { url: string } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const connection of listener) connections.push(connection);
    } catch {
      // Closed.
    }
  })();
  return {
    url: `http://127.0.0.1:${listener.addr.port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const connection of connections) connection.close();
    },
  };
}

/** A server whose one route adds a task, telling its port on stdout. */
const tracedServe = (shutdownTimeout: number) => `
  import { serve } from "@afterward/background-tasks";
  const server = serve({
    hostname: "127.0.0.1", port: 0, shutdownTimeout: ${shutdownTimeout},
    onListen: ({ port }) => console.log(port),
  }, (_request, _info, tasks) => {
    tasks.addTask(function saveOrder() {});
    return new Response("accepted", { status: 202 });
  });
`;

Deno.test("a shutdown signal ends the process within shutdownTimeout while Deno's telemetry export at exit waits on a collector that never answers", async () => {
  await using collector = silentCollector();
  const shutdownTimeout = 1_000;
  // Deno gives each export 10 s at exit (OTEL_EXPORTER_OTLP_TIMEOUT), one
  // for the spans, one for the logs, one for the metrics.
  await using script = await startScript(
    tracedServe(shutdownTimeout),
    ["--allow-net=127.0.0.1"],
    40_000,
    { OTEL_DENO: "true", OTEL_EXPORTER_OTLP_ENDPOINT: collector.url },
  );
  const port = await script.nextLine();
  const response = await fetch(`http://127.0.0.1:${port}/orders`);
  await response.body?.cancel();
  const signalled = performance.now();
  script.child.kill("SIGTERM");
  const { code, stderr } = await script.exit();
  const took = performance.now() - signalled;
  assert.ok(
    took < shutdownTimeout + 3_000,
    `the process ended ${Math.round(took)} ms after the signal (${stderr})`,
  );
  assert.match(stderr, /Shutdown drained every background task/);
  assert.match(
    stderr,
    /The shutdown deadline \(1000 ms\) passed while Deno was still exporting telemetry at exit: ending the process without it \(SIGKILL\)/,
  );
  assert.equal(code, 137);
});

Deno.test("a shutdown signal still exits with code 0 when Deno's telemetry export at exit succeeds", async () => {
  await using receiver = await startOtlpReceiver();
  // A deadline no loaded machine reaches: the claim is the exit code.
  await using script = await startScript(
    tracedServe(20_000),
    ["--allow-net=127.0.0.1"],
    40_000,
    receiver.env,
  );
  const port = await script.nextLine();
  const response = await fetch(`http://127.0.0.1:${port}/orders`);
  await response.body?.cancel();
  script.child.kill("SIGTERM");
  const { code, stderr } = await script.exit();
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /deadline/);
  await receiver.waitForSpans((spans) =>
    spans.some((span) => span.name === "task saveOrder")
  );
});

/** A server whose one route adds a task that never ends, saying when it starts. */
const abandoningServe = `
  import { serve } from "@afterward/background-tasks";
  serve({
    hostname: "127.0.0.1", port: 0, shutdownTimeout: 300,
    onListen: ({ port }) => console.log(port),
  }, (_request, _info, tasks) => {
    tasks.addTask(function chargeCard() {
      console.log("started");
      return new Promise(() => {});
    });
    return new Response("accepted", { status: 202 });
  });
`;

Deno.test("a shutdown that abandons a task at its deadline exits with code 1 when Deno's telemetry export at exit succeeds", async () => {
  await using receiver = await startOtlpReceiver();
  await using script = await startScript(
    abandoningServe,
    ["--allow-net=127.0.0.1"],
    20_000,
    receiver.env,
  );
  const port = await script.nextLine();
  const response = await fetch(`http://127.0.0.1:${port}/orders`);
  await response.body?.cancel();
  assert.equal(await script.nextLine(), "started");
  script.child.kill("SIGTERM");
  const { code, stderr } = await script.exit();
  assert.match(
    stderr,
    /Shutdown abandoned 1 background task \(chargeCard: 1\)/,
  );
  assert.doesNotMatch(stderr, /still exporting/);
  assert.equal(code, 1, stderr);
  await receiver.waitForSpans((spans) =>
    spans.some((span) => span.name === "task chargeCard")
  );
});

Deno.test("a shutdown that abandons a task at its deadline gives the export at exit 1 s more, then ends the process, saying so", async () => {
  await using collector = silentCollector();
  await using script = await startScript(
    abandoningServe,
    ["--allow-net=127.0.0.1"],
    40_000,
    { OTEL_DENO: "true", OTEL_EXPORTER_OTLP_ENDPOINT: collector.url },
  );
  const port = await script.nextLine();
  const response = await fetch(`http://127.0.0.1:${port}/orders`);
  await response.body?.cancel();
  assert.equal(await script.nextLine(), "started");
  const signalled = performance.now();
  script.child.kill("SIGTERM");
  const { code, stderr } = await script.exit();
  const took = performance.now() - signalled;
  assert.ok(took < 300 + 1_000 + 3_000, `it ended after ${took} ms`);
  assert.match(
    stderr,
    /Shutdown abandoned 1 background task \(chargeCard: 1\)/,
  );
  assert.match(
    stderr,
    /The shutdown deadline \(300 ms\) had passed, and Deno was still exporting telemetry at exit 1000 ms later: ending the process without it \(SIGKILL\)/,
  );
  assert.equal(code, 137);
});

Deno.test("on Deno Deploy (DENO_DEPLOY set), a SIGINT ends the process within Deploy's 5 s even when a task never ends and Deno's telemetry export at exit never does: 3 s to drain, 1 s for the export", async () => {
  await using collector = silentCollector();
  await using script = await startScript(
    `
    import { serve } from "@afterward/background-tasks";
    serve({
      hostname: "127.0.0.1", port: 0,
      onListen: ({ port }) => console.log(port),
    }, (_request, _info, tasks) => {
      tasks.addTask(function chargeCard() {
        console.log("started");
        return new Promise(() => {});
      });
      return new Response("accepted", { status: 202 });
    });
    `,
    ["--allow-net=127.0.0.1", "--allow-env"],
    40_000,
    {
      DENO_DEPLOY: "true",
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
    },
  );
  const port = await script.nextLine();
  const response = await fetch(`http://127.0.0.1:${port}/orders`);
  await response.body?.cancel();
  assert.equal(await script.nextLine(), "started");
  // What Deploy sends, 5 s before its SIGKILL.
  script.child.kill("SIGINT");
  const { code, stderr } = await script.exit();
  assert.match(
    stderr,
    /Shutdown abandoned 1 background task \(chargeCard: 1\)/,
  );
  assert.match(
    stderr,
    /The shutdown deadline \(3000 ms\) had passed, and Deno was still exporting telemetry at exit 1000 ms later: ending the process without it \(SIGKILL\)/,
  );
  assert.equal(code, 137);
});

Deno.test("a serve() with a Deno KV backend whose shutdown deadline cuts off /signup's in-process task and /orders' Deno KV task counts both in one line, and exits with code 1", async () => {
  await using script = await startScript(
    `
    import { defineTask, serve } from "@afterward/background-tasks";
    import { kvBackend } from "@afterward/background-tasks/kv";
    const started = (name) => console.log("started " + name);
    const chargeCard = defineTask(function chargeCard() {
      started("chargeCard");
      return new Promise(() => {});
    }, { name: "chargeCard" });
    const kv = await Deno.openKv(":memory:");
    serve({
      hostname: "127.0.0.1", port: 0, shutdownTimeout: 300,
      onListen: ({ port }) => console.log(port),
      backend: kvBackend({ kv, tasks: [chargeCard] }),
    }, (request, _info, tasks) => {
      if (new URL(request.url).pathname === "/signup") {
        tasks.inProcess.addTask(function sendWelcome() {
          started("sendWelcome");
          return new Promise(() => {});
        });
      } else {
        tasks.addTask(chargeCard);
      }
      return new Response("accepted", { status: 202 });
    });
    `,
    ["--unstable-kv", "--allow-net=127.0.0.1"],
  );
  const port = await script.nextLine();
  for (const path of ["/signup", "/orders"]) {
    const response = await fetch(`http://127.0.0.1:${port}${path}`);
    assert.equal(response.status, 202);
    await response.body?.cancel();
  }
  const started = [await script.nextLine(), await script.nextLine()];
  assert.deepEqual(started.sort(), [
    "started chargeCard",
    "started sendWelcome",
  ]);
  script.child.kill("SIGTERM");
  const { code, stderr } = await script.exit();
  assert.match(
    stderr,
    /^Shutdown abandoned 2 background tasks \((sendWelcome: 1, chargeCard: 1|chargeCard: 1, sendWelcome: 1)\), 1 of them handed back to the store; 0 succeeded and 0 failed while draining$/m,
  );
  assert.equal(code, 1, stderr);
});
