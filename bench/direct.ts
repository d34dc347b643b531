// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * The wrapper's cost per request without HTTP, so without most of a noisy
 * machine's noise: 20,000 direct calls of a wrapped handler with no task,
 * one and three (`completed` already resolved), then a drain, in alternated
 * rounds; with `--compare DIR`, the same for the checkout in `DIR` (an older
 * commit in a git worktree), imported side by side. Prints the medians in µs
 * per request. `this, 1 defined task` adds one task made by `defineTask()`
 * per request instead, and `this, 1 keyed task` one defined with a `key`
 * (a key of its own each, so a lane each): what a key costs.
 *
 *   deno task bench:direct
 *   deno run --allow-read bench/direct.ts --compare ../old-checkout --rounds 9
 *
 * @module
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { defineTask, withBackgroundTasks } from "../mod.ts";
import { median, microsPerCall } from "./_harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    compare: { type: "string" },
    requests: { type: "string", default: "20000" },
    rounds: { type: "string", default: "9" },
  },
});
const requests = Number(values.requests);
const rounds = Number(values.rounds);

type Wrap = typeof withBackgroundTasks;
const versions: [string, Wrap][] = [["this", withBackgroundTasks]];
if (values.compare !== undefined) {
  const url = pathToFileURL(resolve(values.compare, "mod.ts")).href;
  const old = await import(url) as { withBackgroundTasks: Wrap };
  versions.push(["old", old.withBackgroundTasks]);
}

let sink = 0;
function trivialTask(n: number): void {
  sink += n;
}

const definedTask = defineTask((_context, n: number) => trivialTask(n), {
  name: "defined",
});
const keyedTask = defineTask((_context, n: number) => trivialTask(n), {
  name: "keyed",
  key: (n) => `${n}`,
});
let keys = 0;

type Kind = "" | "defined" | "keyed";

/** Microseconds per request of `requests` calls with `count` tasks each. */
async function perRequest(
  wrap: Wrap,
  count: number,
  kind: Kind = "",
): Promise<number> {
  const handler = wrap((_request, _info, tasks) => {
    if (kind === "keyed") tasks.addTask(keyedTask, keys++);
    else if (kind === "defined") tasks.addTask(definedTask, 1);
    else for (let i = 0; i < count; i++) tasks.addTask(trivialTask, i);
    return new Response(null);
  });
  return await microsPerCall(handler, requests);
}

const cases = [
  ...[0, 1, 3].flatMap((count) =>
    versions.map(([version, wrap]) => ({
      version,
      wrap,
      count,
      kind: "" as Kind,
    }))
  ),
  ...(["defined", "keyed"] as const).map((kind) => ({
    version: "this",
    wrap: withBackgroundTasks,
    count: 1,
    kind,
  })),
];
// A warm-up round, not counted.
for (const { wrap, count, kind } of cases) {
  await perRequest(wrap, count, kind);
}
const samples = new Map<string, number[]>();
for (let round = 0; round < rounds; round++) {
  for (const { version, wrap, count, kind } of cases) {
    const key = `${version}, ${count}${kind && ` ${kind}`} task${
      count === 1 ? "" : "s"
    }`;
    samples.set(key, [
      ...samples.get(key) ?? [],
      await perRequest(wrap, count, kind),
    ]);
  }
}
console.log(`${requests} direct calls, ${rounds} rounds, medians`);
console.log("| Code, tasks per request | µs per request |");
console.log("| --- | ---: |");
for (const [key, values] of samples) {
  console.log(`| ${key} | ${median(values).toFixed(3)} |`);
}
globalThis.addEventListener("unload", () => void sink);
