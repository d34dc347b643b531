// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Latency at a steady rate, not at saturation: `h2load --h1 --rps` sends a
 * fixed number of requests per second per client (by default 50 clients ×
 * 800 = 40,000 req/s, about half of what the bare handler can answer here),
 * logs every request's latency, and this program reports p50, p99 and p99.9
 * for each variant of `http_server.ts`, in rounds that alternate the
 * variants, and draws them as an SVG chart next to the JSON.
 *
 *   deno task bench:latency
 *   deno run -A bench/latency.ts --rps 800 --clients 50 --duration 10 --rounds 2
 *
 * `h2load` (Debian's `nghttp2-client`) is installed with apt-get when it is
 * missing and we are root.
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
import { serverFlags } from "./http_server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rps: { type: "string", default: "800" },
    clients: { type: "string", default: "50" },
    duration: { type: "string", default: "10" },
    warmup: { type: "string", default: "2" },
    rounds: { type: "string", default: "2" },
    variants: {
      type: "string",
      default: [
        "bare",
        "wrapped, no task",
        "wrapped, 1 task",
        "naive queueMicrotask, 1 task",
        "wrapped, 1 task of 100 ms",
        "naive queueMicrotask, 1 task of 100 ms",
        "diag: completed + shared timer, 100 ms task",
      ].join(";"),
    },
    out: { type: "string", default: "bench/results/latency.json" },
  },
});
const rps = Number(values.rps);
const clients = Number(values.clients);
const duration = Number(values.duration);
const warmup = Number(values.warmup);
const rounds = Number(values.rounds);
const variants = values.variants!.split(";");
const serverScript = new URL("./http_server.ts", import.meta.url).pathname;

const { pinned, pin } = await pinning();

interface Sample {
  round: number;
  variant: string;
  requests: number;
  /** Requests per second actually sent and answered. */
  rate: number;
  /** Answers other than 200, and requests that got none. */
  errors: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

/** The `q`-quantile of sorted `values`. */
function quantile(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function measure(variant: string, round: number): Promise<Sample> {
  const port = freePort();
  const command = pin(0, [
    Deno.execPath(),
    "run",
    ...serverFlags,
    serverScript,
    variant,
    String(port),
  ]);
  const server = new Deno.Command(command[0]!, {
    args: command.slice(1),
    stdout: "null",
    stderr: "null",
  }).spawn();
  const log = await Deno.makeTempFile({ suffix: ".log" });
  try {
    await connectable(port);
    const { stdout } = await run(pin(1, [
      "h2load",
      "--h1",
      "-t1",
      `-c${clients}`,
      `--rps=${rps}`,
      `-D${duration}`,
      `--warm-up-time=${warmup}`,
      `--log-file=${log}`,
      `http://127.0.0.1:${port}/`,
    ]));
    // Each line: start time (µs since the epoch), status, latency (µs).
    const lines = (await Deno.readTextFile(log)).split("\n").filter(Boolean);
    const latencies = new Float64Array(lines.length);
    let errors = 0;
    lines.forEach((line, i) => {
      const [, status, elapsed] = line.split("\t");
      if (status !== "200") errors++;
      latencies[i] = Number(elapsed) / 1000;
    });
    latencies.sort();
    const failed = Number(/(\d+) failed/.exec(stdout)?.[1] ?? 0);
    return {
      round,
      variant,
      requests: lines.length,
      rate: lines.length / duration,
      errors: errors + failed,
      p50Ms: quantile(latencies, 0.5),
      p99Ms: quantile(latencies, 0.99),
      p999Ms: quantile(latencies, 0.999),
      maxMs: latencies[latencies.length - 1] ?? NaN,
    };
  } finally {
    server.kill("SIGKILL");
    await server.status;
    await Deno.remove(log);
  }
}

/** A bar chart of p50, p99 and p99.9 per variant, on a log scale. */
function svg(
  rows: { variant: string; p50Ms: number; p99Ms: number; p999Ms: number }[],
): string {
  const rowHeight = 54;
  const left = 300;
  const width = 900;
  const plot = width - left - 30;
  const top = 40;
  const height = top + rows.length * rowHeight + 40;
  const max = Math.max(...rows.map((row) => row.p999Ms), 1);
  const low = 0.1;
  const x = (ms: number) =>
    left +
    plot * Math.log10(Math.max(ms, low) / low) / Math.log10(max * 1.5 / low);
  const bars = [
    ["p50", "p50Ms", "#9ecae1"],
    ["p99", "p99Ms", "#3182bd"],
    ["p99.9", "p999Ms", "#08519c"],
  ] as const;
  const escape = (text: string) =>
    text.replaceAll("&", "&amp;").replaceAll("<", "&lt;");
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="20" font-size="14">Latency at ${
      rps * clients
    } req/s (h2load --h1 -c ${clients} --rps ${rps}), ms, log scale</text>`,
  ];
  for (const tick of [0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000]) {
    if (tick > max * 1.5) break;
    parts.push(
      `<line x1="${x(tick)}" x2="${x(tick)}" y1="${top - 6}" y2="${
        height - 30
      }" stroke="#ddd"/>`,
      `<text x="${x(tick)}" y="${
        height - 14
      }" text-anchor="middle">${tick}</text>`,
    );
  }
  rows.forEach((row, i) => {
    const y = top + i * rowHeight;
    parts.push(
      `<text x="${left - 8}" y="${y + 26}" text-anchor="end">${
        escape(row.variant)
      }</text>`,
    );
    bars.forEach(([label, field, color], j) => {
      const value = row[field];
      parts.push(
        `<rect x="${left}" y="${y + j * 15}" width="${
          Math.max(1, x(value) - left)
        }" height="13" fill="${color}"/>`,
        `<text x="${x(value) + 4}" y="${y + j * 15 + 11}">${label} ${
          value.toFixed(2)
        }</text>`,
      );
    });
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

await ensureCommand("h2load", "nghttp2-client");
console.error(
  `${variants.length} variants, ${rounds} rounds of ${duration} s at ${
    rps * clients
  } req/s (${clients} clients × ${rps}); ${
    pinned ? "server on core 0, h2load on core 1" : "not pinned"
  }`,
);
const samples: Sample[] = [];
for (let round = 1; round <= rounds; round++) {
  const order = variants.map((_, i) =>
    variants[(i + round - 1) % variants.length]!
  );
  for (const variant of order) {
    const sample = await measure(variant, round);
    samples.push(sample);
    console.error(
      `round ${round}  ${variant.padEnd(44)} ${
        sample.rate.toFixed(0).padStart(6)
      } req/s  p50 ${sample.p50Ms.toFixed(2)}  p99 ${
        sample.p99Ms.toFixed(2)
      }  p99.9 ${sample.p999Ms.toFixed(2)} ms  errors ${sample.errors}`,
    );
  }
}

const summary = variants.map((variant) => {
  const own = samples.filter((sample) => sample.variant === variant);
  return {
    variant,
    rate: median(own.map((s) => s.rate)),
    errors: own.reduce((sum, s) => sum + s.errors, 0),
    p50Ms: median(own.map((s) => s.p50Ms)),
    p99Ms: median(own.map((s) => s.p99Ms)),
    p999Ms: median(own.map((s) => s.p999Ms)),
    p99Range: [
      Math.min(...own.map((s) => s.p99Ms)),
      Math.max(...own.map((s) => s.p99Ms)),
    ],
  };
});
console.log(
  `\n| Variant | req/s | p50 ms | p99 ms | p99 rounds' range | p99.9 ms | errors |`,
);
console.log(`| --- | ---: | ---: | ---: | :---: | ---: | ---: |`);
for (const s of summary) {
  console.log(
    `| ${s.variant} | ${s.rate.toFixed(0)} | ${s.p50Ms.toFixed(2)} | ${
      s.p99Ms.toFixed(2)
    } | ${s.p99Range[0]!.toFixed(2)}–${s.p99Range[1]!.toFixed(2)} | ${
      s.p999Ms.toFixed(2)
    } | ${s.errors} |`,
  );
}
const p99 = (name: string) =>
  summary.find((s) => s.variant === name)?.p99Ms ?? NaN;
const targets = [
  [
    "wrapped, 1 task of 100 ms: p99 ≤ 1.5× naive queueMicrotask, 1 task of 100 ms",
    p99("wrapped, 1 task of 100 ms") /
    p99("naive queueMicrotask, 1 task of 100 ms"),
    1.5,
  ],
  [
    "wrapped, no task: p99 ≤ 1.1× bare",
    p99("wrapped, no task") / p99("bare"),
    1.1,
  ],
  [
    "wrapped, 1 task: p99 ≤ 1.1× bare",
    p99("wrapped, 1 task") / p99("bare"),
    1.1,
  ],
] as const;
console.log(`\nTargets (medians over the rounds):`);
for (const [label, value, bound] of targets) {
  if (Number.isNaN(value)) continue;
  console.log(
    `- ${value <= bound ? "met " : "MISSED"} ${label}: ${value.toFixed(3)}`,
  );
}
await Deno.writeTextFile(
  values.out!,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      deno: Deno.version.deno,
      rps,
      clients,
      duration,
      rounds,
      summary,
      samples,
    },
    null,
    2,
  ) + "\n",
);
const chart = values.out!.replace(/\.json$/, ".svg");
await Deno.writeTextFile(chart, svg(summary));
console.log(`Wrote ${values.out} and ${chart}`);
