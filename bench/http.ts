// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * The HTTP benchmark: serves each variant of `bench/http_server.ts` as its own
 * process on 127.0.0.1 and drives it with `wrk`, round after round with the
 * variants interleaved, so that a noisy machine slows every variant of a
 * round alike. With two cores or more, the server runs on core 0 and `wrk`
 * on core 1. Each measurement records requests per second, p50 and p99
 * latency, and the server's CPU time per request (from `/proc/<pid>/stat`),
 * each also as a ratio to the bare handler of the same round. After each run
 * it asks the server (on a control port of its own) to drain: the CPU time
 * includes the background work finished then, and "done/s" counts requests
 * per second of run and drain, which is what a server sustains when its
 * tasks must keep up (a durable backend may answer faster than it stores).
 * It prints the medians as a Markdown table, checks them against the
 * targets, and writes every measurement to `bench/results/latest.json`.
 *
 * When Debian's `python3-fastapi` and `python3-uvicorn` are installed, the
 * seed's FastAPI route runs under the same load in the same rounds, with no
 * task, a sync task and an async task, for FastAPI's own loss ratios.
 *
 *   deno task bench:http
 *    deno run --allow-run --allow-read --allow-net=127.0.0.1 --allow-write=bench/results bench/http.ts --rounds 5 --duration 10
 *
 * `--traced` also runs bare, no task and 1 task with Deno's telemetry on
 * (`OTEL_DENO=true`, exporting to a sink here), as `traced: <variant>`.
 *
 * `--compare DIR` also runs each Deno variant from the checkout in `DIR` (an
 * older commit in a git worktree), in the same rounds, as `old: <variant>`.
 *
 * `wrk` is installed with apt-get when it is missing and we are root.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  connectable,
  ensureCommand,
  freePort,
  median,
  pinning,
  run,
} from "./_harness.ts";
import {
  backendVariants,
  serverFlags,
  variants as serverVariants,
} from "./http_server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    duration: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    connections: { type: "string", default: "64" },
    variants: { type: "string" },
    fastapi: { type: "boolean", default: true },
    backends: { type: "boolean", default: false },
    traced: { type: "boolean", default: false },
    compare: { type: "string" },
    out: { type: "string", default: "bench/results/latest.json" },
  },
  allowNegative: true,
});
const rounds = Number(values.rounds);
const duration = Number(values.duration);
const warmup = Number(values.warmup);
const connections = Number(values.connections);

interface Variant {
  name: string;
  /** The variant whose measurement of the same round it is compared with. */
  baseline: string;
  command: string[];
  /** Whether the server answers on a control port when its tasks are done. */
  control: boolean;
  /** Environment variables of the server, besides this process's. */
  env?: Record<string, string>;
}

const serverScript = new URL("./http_server.ts", import.meta.url).pathname;
const deno = (name: string): Variant => ({
  name,
  baseline: "bare",
  command: [
    Deno.execPath(),
    "run",
    ...serverFlags,
    serverScript,
    name,
  ],
  control: true,
});
// The diagnostic variants run only when named in --variants, the backend
// ones with --backends.
const denoVariants = [
  ...Object.keys(serverVariants),
  ...(values.backends ? Object.keys(backendVariants) : []),
];

// With --traced, some variants run again with Deno's telemetry on, as
// "traced: ...", exporting over OTLP/HTTP JSON to a sink in this process
// that answers and drops what it gets. Compared with "traced: bare", which
// pays for Deno's own server spans too, they give the library's cost.
const tracedVariants = ["bare", "wrapped, no task", "wrapped, 1 task"];
let sink: Deno.HttpServer<Deno.NetAddr> | undefined;
if (values.traced) {
  sink = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      await request.body?.cancel();
      return Response.json({});
    },
  );
}
const traced = (name: string): Variant => ({
  ...deno(name),
  name: `traced: ${name}`,
  baseline: "traced: bare",
  env: {
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sink!.addr.port}`,
  },
});

const fastapi: Variant[] = [];
if (values.fastapi) {
  const probe = await run([
    "/usr/bin/python3",
    "-c",
    "import fastapi, uvicorn",
  ]);
  if (probe.code === 0) {
    const bench = new URL(".", import.meta.url).pathname;
    for (
      const [name, app] of [
        ["FastAPI, no task", "plain"],
        ["FastAPI, sync task", "sync_task"],
        ["FastAPI, async task", "async_task"],
      ]
    ) {
      fastapi.push({
        name: name!,
        baseline: "FastAPI, no task",
        command: [
          "/usr/bin/python3",
          "-m",
          "uvicorn",
          "--app-dir",
          bench,
          `fastapi_app:${app}`,
          "--host",
          "127.0.0.1",
          "--log-level",
          "warning",
          "--no-access-log",
          "--port",
        ],
        control: false,
      });
    }
  }
}

// With --compare, each Deno variant runs from another checkout too (an
// older commit in a worktree, say), in the same rounds, named "old: ...".
const compareDir = values.compare;
const old = (variant: Variant): Variant => ({
  ...variant,
  name: `old: ${variant.name}`,
  baseline: `old: ${variant.baseline}`,
  command: variant.command.map((part) =>
    part === serverScript ? `${compareDir}/bench/http_server.ts` : part
  ),
});
const selected = values.variants?.split(";");
const chosen = [
  ...denoVariants.map(deno),
  ...(values.traced ? tracedVariants.map(traced) : []),
  ...fastapi,
].filter((variant) =>
  selected === undefined
    ? !variant.name.startsWith("diag:")
    : selected.includes(variant.name) || variant.name === variant.baseline
);
const variants = compareDir === undefined ? chosen : [
  ...chosen,
  ...chosen.filter((variant) => variant.control).map(old),
];

const { pinned, pin } = await pinning();
const clockTicks = Number((await run(["getconf", "CLK_TCK"])).stdout) || 100;

async function cpuSeconds(pid: number): Promise<number> {
  // Deno reads /proc/<pid> only with every permission; cat needs none.
  const stat = (await run(["cat", `/proc/${pid}/stat`])).stdout;
  // The command name may hold spaces; the fields after it do not.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

async function startServer(
  variant: Variant,
): Promise<
  { child: Deno.ChildProcess; port: number; controlPort: number | undefined }
> {
  const port = freePort();
  const controlPort = variant.control ? freePort() : undefined;
  const command = pin(0, [
    ...variant.command,
    String(port),
    ...(controlPort === undefined ? [] : [String(controlPort)]),
  ]);
  const child = new Deno.Command(command[0]!, {
    args: command.slice(1),
    env: variant.env ?? {},
    stdout: "null",
    stderr: "null",
  }).spawn();
  await connectable(port);
  if (controlPort !== undefined) await connectable(controlPort);
  return { child, port, controlPort };
}

interface Sample {
  round: number;
  variant: string;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU time per request, the background work finished after the run included. */
  cpuMicrosPerRequest: number;
  /** How long the background work accepted during the run took to finish after it. */
  drainMs: number;
  /** Requests whose background work was done, per second of run and drain. */
  donePerSecond: number;
}

function milliseconds(text: string): number {
  const match = /([\d.]+)(us|ms|s)/.exec(text);
  if (!match) return NaN;
  const value = Number(match[1]);
  return match[2] === "us"
    ? value / 1000
    : match[2] === "s"
    ? value * 1000
    : value;
}

async function measure(variant: Variant, round: number): Promise<Sample> {
  const { child, port, controlPort } = await startServer(variant);
  try {
    const url = `http://127.0.0.1:${port}/`;
    const wrk = (seconds: number, latency: boolean) =>
      run(pin(1, [
        "wrk",
        "-t1",
        `-c${connections}`,
        `-d${seconds}s`,
        ...(latency ? ["--latency"] : []),
        url,
      ]));
    await wrk(warmup, false);
    const cpuBefore = await cpuSeconds(child.pid);
    const { stdout } = await wrk(duration, true);
    const drainMs = controlPort === undefined ? 0 : Number(
      await (await fetch(`http://127.0.0.1:${controlPort}/`)).text(),
    );
    const cpu = await cpuSeconds(child.pid) - cpuBefore;
    const requests = Number(/(\d+) requests in/.exec(stdout)?.[1]);
    const runSeconds = Number(/requests in ([\d.]+)s/.exec(stdout)?.[1]);
    return {
      round,
      variant: variant.name,
      requestsPerSecond: Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]),
      p50Ms: milliseconds(/ 50%\s+(\S+)/.exec(stdout)?.[1] ?? ""),
      p99Ms: milliseconds(/ 99%\s+(\S+)/.exec(stdout)?.[1] ?? ""),
      cpuMicrosPerRequest: cpu * 1e6 / requests,
      drainMs,
      donePerSecond: requests / (runSeconds + drainMs / 1000),
    };
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
}

/** Rejects if `promise` has not settled within `ms`, so a stuck server cannot stall the run. */
async function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  message: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

await ensureCommand("wrk", "wrk");
let redis: Deno.ChildProcess | undefined;
if (values.backends && Deno.env.get("REDIS_PORT") === undefined) {
  // A private Redis for the BullMQ variant; the server processes inherit
  // REDIS_PORT.
  const port = freePort();
  redis = new Deno.Command("redis-server", {
    args: ["--port", String(port), "--bind", "127.0.0.1", "--save", ""],
    stdout: "null",
    stderr: "null",
  }).spawn();
  Deno.env.set("REDIS_PORT", String(port));
  await connectable(port);
}
console.error(
  `${variants.length} variants, ${rounds} rounds of ${duration} s with ${connections} connections; ${
    pinned ? "server on core 0, wrk on core 1" : "not pinned"
  }`,
);
const samples: Sample[] = [];
for (let round = 1; round <= rounds; round++) {
  // Each round starts one variant further, so no variant always runs first.
  const order = variants.map((_, i) =>
    variants[(i + round - 1) % variants.length]!
  );
  for (const variant of order) {
    const sample = await withDeadline(
      measure(variant, round),
      (warmup + duration) * 1000 + 30_000,
      `${variant.name} did not finish its measurement`,
    );
    samples.push(sample);
    console.error(
      `round ${round}  ${variant.name.padEnd(36)} ${
        sample.requestsPerSecond.toFixed(0).padStart(7)
      } req/s  p99 ${sample.p99Ms.toFixed(2)} ms  ${
        sample.cpuMicrosPerRequest.toFixed(2)
      } µs CPU/req`,
    );
  }
}

function inRound(round: number, name: string): Sample | undefined {
  return samples.find((s) => s.round === round && s.variant === name);
}

const summary = variants.map((variant) => {
  const own = samples.filter((s) => s.variant === variant.name);
  const perRound = (field: keyof Sample, baseline = variant.baseline) =>
    own.map((s) =>
      (s[field] as number) /
      ((inRound(s.round, baseline)?.[field] as number | undefined) ?? NaN)
    );
  const ratios = (field: keyof Sample, baseline = variant.baseline) =>
    median(perRound(field, baseline));
  const throughputRatios = perRound("requestsPerSecond");
  return {
    variant: variant.name,
    baseline: variant.baseline,
    requestsPerSecond: median(own.map((s) => s.requestsPerSecond)),
    p50Ms: median(own.map((s) => s.p50Ms)),
    p99Ms: median(own.map((s) => s.p99Ms)),
    cpuMicrosPerRequest: median(own.map((s) => s.cpuMicrosPerRequest)),
    drainMs: median(own.map((s) => s.drainMs)),
    donePerSecond: median(own.map((s) => s.donePerSecond)),
    throughputRatio: ratios("requestsPerSecond"),
    throughputRatioRange: [
      Math.min(...throughputRatios),
      Math.max(...throughputRatios),
    ],
    cpuRatio: ratios("cpuMicrosPerRequest"),
    p99RatioToWrappedNoTask: variant.baseline === "bare"
      ? ratios("p99Ms", "wrapped, no task")
      : NaN,
  };
});

const row = (name: string) => summary.find((s) => s.variant === name);
const targets = [
  [
    "wrapped, no task: req/s ≥ 0.98× bare",
    row("wrapped, no task")?.throughputRatio,
    0.98,
    "≥",
  ],
  [
    "wrapped, 1 task: req/s ≥ 0.95× bare",
    row("wrapped, 1 task")?.throughputRatio,
    0.95,
    "≥",
  ],
  [
    "wrapped, 3 tasks: req/s ≥ 0.92× bare",
    row("wrapped, 3 tasks")?.throughputRatio,
    0.92,
    "≥",
  ],
  [
    "wrapped, 1 task: CPU/request ≤ 1.05× bare",
    row("wrapped, 1 task")?.cpuRatio,
    1.05,
    "≤",
  ],
  [
    "wrapped, 1 task of 100 ms: p99 ≤ 1.2× wrapped, no task",
    row("wrapped, 1 task of 100 ms")?.p99RatioToWrappedNoTask,
    1.2,
    "≤",
  ],
] as const;

const fixed = (value: number, digits: number) =>
  Number.isNaN(value) ? "" : value.toFixed(digits);
console.log(
  `\n| Variant | req/s | × baseline | rounds' range | p50 ms | p99 ms | CPU µs/req | CPU × baseline | drain ms | done/s |`,
);
console.log(
  `| --- | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: |`,
);
for (const s of summary) {
  const [low, high] = s.throughputRatioRange;
  console.log(
    `| ${s.variant} | ${fixed(s.requestsPerSecond, 0)} | ${
      fixed(s.throughputRatio, 3)
    } | ${fixed(low!, 2)}–${fixed(high!, 2)} | ${fixed(s.p50Ms, 2)} | ${
      fixed(s.p99Ms, 2)
    } | ${fixed(s.cpuMicrosPerRequest, 2)} | ${fixed(s.cpuRatio, 3)} | ${
      fixed(s.drainMs, 0)
    } | ${fixed(s.donePerSecond, 0)} |`,
  );
}
console.log(`\nTargets (medians of per-round ratios):`);
for (const [label, value, bound, sense] of targets) {
  if (value === undefined || Number.isNaN(value)) continue;
  const met = sense === "≥" ? value >= bound : value <= bound;
  console.log(`- ${met ? "met " : "MISSED"} ${label}: ${value.toFixed(3)}`);
}

const cpuModel = /model name\s*:\s*(.*)/.exec(
  (await run(["cat", "/proc/cpuinfo"])).stdout,
)?.[1];
await Deno.mkdir(values.out.replace(/\/[^/]*$/, ""), { recursive: true });
await Deno.writeTextFile(
  values.out,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      machine: { cpu: cpuModel, cores: navigator.hardwareConcurrency, pinned },
      deno: Deno.version.deno,
      wrk: { connections, threads: 1, duration, warmup },
      rounds,
      summary,
      samples,
    },
    null,
    2,
  ) + "\n",
);
console.error(`\nWrote ${values.out}`);
if (redis !== undefined) {
  redis.kill("SIGKILL");
  await redis.status;
}
await sink?.shutdown();
