// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * What tracing costs per task: with Deno's telemetry on (`OTEL_DENO=true`,
 * exporting over OTLP/HTTP JSON to a sink this program serves), the same
 * wrapped handler with one task, `telemetry: true` against
 * `telemetry: false`, called directly (no HTTP, so that only the library's
 * work differs), in alternating rounds; the difference of the medians is the
 * cost of a task's span, its context and its two metric recordings. Run
 * without Deno's telemetry, it measures the wrapper alone for comparison.
 *
 *   deno task bench:telemetry
 *   deno run --allow-net=127.0.0.1 --allow-run --allow-read --allow-env bench/telemetry.ts --requests 20000 --rounds 7
 *
 * @module
 */

import { parseArgs } from "node:util";
import { withBackgroundTasks } from "../mod.ts";
import { median, microsPerCall } from "./_harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "20000" },
    rounds: { type: "string", default: "7" },
    child: { type: "boolean", default: false },
  },
});
const requests = Number(values.requests);
const rounds = Number(values.rounds);

let sink = 0;
function trivialTask(n: number): void {
  sink += n;
}

/** Microseconds per request of `requests` calls of a handler with one task. */
async function perRequest(telemetry: boolean): Promise<number> {
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(trivialTask, 1);
    return new Response(null);
  }, { telemetry });
  return await microsPerCall(handler, requests);
}

if (values.child) {
  const on: number[] = [];
  const off: number[] = [];
  // A warm-up round of each, not counted.
  await perRequest(true);
  await perRequest(false);
  for (let round = 0; round < rounds; round++) {
    on.push(await perRequest(true));
    off.push(await perRequest(false));
  }
  console.log(JSON.stringify({ on: median(on), off: median(off) }));
  globalThis.addEventListener("unload", () => void sink);
} else {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      await request.body?.cancel();
      return Response.json({});
    },
  );
  const run = async (env: Record<string, string>) => {
    const { stdout, success } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        "--allow-env",
        import.meta.filename!,
        "--child",
        "--requests",
        String(requests),
        "--rounds",
        String(rounds),
      ],
      env,
      stderr: "inherit",
    }).output();
    if (!success) throw new Error("the measuring process failed");
    return JSON.parse(new TextDecoder().decode(stdout)) as {
      on: number;
      off: number;
    };
  };
  const traced = await run({
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${server.addr.port}`,
  });
  const untraced = await run({ OTEL_DENO: "false" });
  await server.shutdown();
  console.log(
    `${requests} requests of 1 task, ${rounds} rounds, medians of µs per request`,
  );
  console.log(
    "| Deno's telemetry | telemetry: true | telemetry: false | cost of tracing a task |",
  );
  console.log("| --- | ---: | ---: | ---: |");
  for (
    const [label, { on, off }] of [["on", traced], ["off", untraced]] as const
  ) {
    console.log(
      `| ${label} | ${on.toFixed(2)} | ${off.toFixed(2)} | ${
        (on - off).toFixed(2)
      } µs |`,
    );
  }
}
