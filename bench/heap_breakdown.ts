// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * What each byte of a pending request is: heap snapshots before and after
 * 10,000 requests whose responses are still being sent (one task each, as
 * `bench/memory.ts` makes them), and the objects only the second holds,
 * grouped by constructor (or by V8's node type for closures, arrays and
 * internals), largest first, per request.
 *
 *   deno task bench:heap
 *   deno run --v8-flags=--expose-gc --allow-write=/tmp bench/heap_breakdown.ts --tasks 1
 *
 * `--module PATH` measures another checkout's `mod.ts` (an older commit in a
 * `git worktree`) with this same script.
 *
 * @module
 */

import v8 from "node:v8";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "10000" },
    tasks: { type: "string", default: "1" },
    top: { type: "string", default: "20" },
    module: { type: "string" },
  },
});
const { withBackgroundTasks } = (await import(
  values.module === undefined
    ? "../mod.ts"
    : pathToFileURL(resolve(values.module)).href
)) as typeof import("../mod.ts");
const requests = Number(values.requests);
const tasksPerRequest = Number(values.tasks);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error("Run with --v8-flags=--expose-gc");
  Deno.exit(2);
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
  nodes: number[];
  strings: string[];
}

/** Writes a heap snapshot, after a full collection. */
function write(path: string): void {
  for (let i = 0; i < 3; i++) gc!();
  v8.writeHeapSnapshot(path);
}

/** A snapshot's nodes by id: [group, self size]. */
async function read(path: string): Promise<Map<number, [string, number]>> {
  const data = JSON.parse(await Deno.readTextFile(path)) as Snapshot;
  const fields = data.snapshot.meta.node_fields;
  const types = data.snapshot.meta.node_types[0];
  const width = fields.length;
  const [type, name, id, size] = ["type", "name", "id", "self_size"].map(
    (field) => fields.indexOf(field),
  ) as [number, number, number, number];
  const nodes = new Map<number, [string, number]>();
  for (let i = 0; i < data.nodes.length; i += width) {
    const kind = types[data.nodes[i + type]!]!;
    const label = data.strings[data.nodes[i + name]!]!;
    const group = kind === "object"
      ? label
      : `(${kind}) ${
        kind === "closure" || kind === "native" || kind === "array" ? label : ""
      }`.trim();
    nodes.set(data.nodes[i + id]!, [group, data.nodes[i + size]!]);
  }
  return nodes;
}

/**
 * A request whose handler has read its URL, as one that routes does. Deno
 * keeps that string with the request until its response is sent, and the
 * wrapper shares it. Were the URL never read, the wrapper's reading it would
 * add Deno's copy (measured: 155 bytes for these URLs).
 */
function routed(request: Request): Request {
  void request.url;
  return request;
}

let sink = 0;
function trivialTask(n: number): void {
  sink += n;
}

const release = Promise.withResolvers<void>();
const handler = withBackgroundTasks((_request, _info, tasks) => {
  for (let i = 0; i < tasksPerRequest; i++) tasks.addTask(trivialTask, i);
  return new Response(null);
});
const calls = Array.from({ length: requests }, (_, i) => ({
  request: routed(new Request(`http://localhost/orders/${i}?page=1`)),
  info: {
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40_000 },
    get completed() {
      return release.promise.then(() => {});
    },
  } as unknown as Deno.ServeHandlerInfo,
}));
// One request first, so that what is made once (code, shapes) is in both.
handler(new Request("http://localhost/warmup"), calls[0]!.info);
// Both snapshots are written before either is read, so that nothing but
// the requests is made between them.
const paths = [await Deno.makeTempFile(), await Deno.makeTempFile()];
write(paths[0]!);
for (const { request, info } of calls) handler(request, info);
write(paths[1]!);
const before = await read(paths[0]!);
const after = await read(paths[1]!);
await Promise.all(paths.map((path) => Deno.remove(path)));

const groups = new Map<string, { count: number; bytes: number }>();
let total = 0;
for (const [id, [group, size]] of after) {
  if (before.has(id)) continue;
  const entry = groups.get(group) ?? { count: 0, bytes: 0 };
  entry.count++;
  entry.bytes += size;
  groups.set(group, entry);
  total += size;
}
console.log(
  `${requests} pending requests, ${tasksPerRequest} task(s) each: ${
    (total / requests).toFixed(0)
  } bytes per request in objects made after the first snapshot`,
);
console.log("| Objects | per request | bytes per request |");
console.log("| --- | ---: | ---: |");
for (
  const [group, { count, bytes }] of [...groups].sort((a, b) =>
    b[1].bytes - a[1].bytes
  ).slice(0, Number(values.top))
) {
  console.log(
    `| ${group || "(unnamed)"} | ${(count / requests).toFixed(2)} | ${
      (bytes / requests).toFixed(1)
    } |`,
  );
}
release.resolve();
await handler.drain();
if (sink < 0) console.log(sink);
