// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * What a pending request holds, by constructor: two heap snapshots, before
 * and while 10,000 requests with one task each wait for their responses to
 * be sent (as in bench/memory.ts), and the objects the second has more of,
 * per request. The module measured is `mod.ts` here, or the path given, so
 * that an older checkout can be measured with the same script.
 *
 *   deno run -A --v8-flags=--expose-gc bench/heap_by_constructor.ts [path/to/mod.ts]
 *
 * @module
 */

import v8 from "node:v8";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const requests = 10_000;
const target = Deno.args[0] === undefined
  ? new URL("../mod.ts", import.meta.url).href
  : pathToFileURL(resolve(Deno.args[0])).href;
const { withBackgroundTasks } =
  (await import(target)) as typeof import("../mod.ts");
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error("Run with --v8-flags=--expose-gc");
  Deno.exit(2);
}

interface Group {
  count: number;
  bytes: number;
}

/** The objects of a snapshot, by id: their group ("type name") and size. */
function objects(path: string): Map<number, [string, number]> {
  const snapshot = JSON.parse(Deno.readTextFileSync(path));
  const fields: string[] = snapshot.snapshot.meta.node_fields;
  const types: string[] = snapshot.snapshot.meta.node_types[0];
  const width = fields.length;
  const [typeAt, nameAt, idAt, sizeAt] = ["type", "name", "id", "self_size"]
    .map((field) => fields.indexOf(field)) as [number, number, number, number];
  const nodes: number[] = snapshot.nodes;
  const strings: string[] = snapshot.strings;
  const result = new Map<number, [string, number]>();
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + typeAt]!]!;
    // An object by its constructor, a closure by its function's name.
    const group = type === "object" || type === "closure" || type === "native"
      ? `${type} ${strings[nodes[i + nameAt]!]}`
      : type;
    result.set(nodes[i + idAt]!, [group, nodes[i + sizeAt]!]);
  }
  return result;
}

/** Writes a snapshot, to be read once every snapshot is taken. */
function snapshot(path: string): void {
  for (let i = 0; i < 3; i++) gc!();
  v8.writeHeapSnapshot(path);
}

let sink = 0;
function trivialTask(n: number): void {
  sink += n;
}

const release = Promise.withResolvers<void>();
const handler = withBackgroundTasks(
  (_request, _info, tasks) => {
    tasks.addTask(trivialTask, 1);
    return new Response(null);
  },
);
const calls = Array.from({ length: requests }, (_, i) => {
  const request = new Request(`http://localhost/orders/${i}?page=1`);
  // A handler that routes reads the URL, which Deno then keeps.
  void request.url;
  return {
    request,
    info: {
      remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40_000 },
      get completed() {
        return release.promise.then(() => {});
      },
    } as unknown as Deno.ServeHandlerInfo,
  };
});
// Warm up: compiled code and inline caches are not counted.
for (const { request, info } of calls.slice(0, 100)) handler(request, info);
release.resolve();
await handler.drain();

const pending = Promise.withResolvers<void>();
for (const call of calls) {
  call.info = {
    remoteAddr: call.info.remoteAddr,
    get completed() {
      return pending.promise.then(() => {});
    },
  } as unknown as Deno.ServeHandlerInfo;
}
const dir = Deno.makeTempDirSync();
snapshot(`${dir}/before.heapsnapshot`);
for (const { request, info } of calls) handler(request, info);
snapshot(`${dir}/during.heapsnapshot`);
pending.resolve();
await handler.drain();
const before = objects(`${dir}/before.heapsnapshot`);
const during = objects(`${dir}/during.heapsnapshot`);
Deno.removeSync(dir, { recursive: true });

// V8 keeps an object's id from one snapshot to the next: the objects
// without an id in the first are the ones the pending requests hold.
const held = new Map<string, Group>();
for (const [id, [name, bytes]] of during) {
  if (before.has(id)) continue;
  const group = held.get(name) ?? { count: 0, bytes: 0 };
  group.count++;
  group.bytes += bytes;
  held.set(name, group);
}
const rows = [...held]
  .map(([name, group]) => ({
    name,
    count: group.count / requests,
    bytes: group.bytes / requests,
  }))
  .filter((row) => row.count >= 0.5)
  .sort((a, b) => b.bytes - a.bytes);
let total = 0;
console.log("| held per pending request | objects | bytes |");
console.log("| --- | ---: | ---: |");
for (const row of rows) {
  total += row.bytes;
  console.log(
    `| ${row.name} | ${row.count.toFixed(2)} | ${row.bytes.toFixed(0)} |`,
  );
}
console.log(`| total | | ${total.toFixed(0)} |`);
globalThis.addEventListener("unload", () => void sink);
