// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The modules of src/ form layers: each imports only from below, type-only
// imports included, so that every file can be read bottom up and no value
// import can ever close a cycle. denoland/std checks its packages the same
// way (_tools/check_circular_package_dependencies.ts). The folders are the
// layers (src/README.md): which folder may import which is written here.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const src = new URL("../../src/", import.meta.url);

/** The src/ files each file imports, type-only imports and re-exports included. */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  async function read(folder: string): Promise<void> {
    for await (const entry of Deno.readDir(new URL(folder, src))) {
      const path = folder + entry.name;
      if (entry.isDirectory) await read(`${path}/`);
      if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
      graph.set(
        path,
        importsOf(path, await Deno.readTextFile(new URL(path, src))),
      );
    }
  }
  await read("");
  return graph;
}

/**
 * The src/ paths that `text`, the file at `path`, imports: `import ... from`,
 * `import type ...`, `export ... from`, a side-effect `import "..."`, and
 * `import()`, on one line or many.
 */
function importsOf(path: string, text: string): string[] {
  const imported = new Set<string>();
  const specifiers = [
    ...text.matchAll(
      /(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*"(\.\.?\/[\w./]+\.ts)"/g,
    ),
    ...text.matchAll(/(?:^|\n)\s*import\s*"(\.\.?\/[\w./]+\.ts)"/g),
    ...text.matchAll(/import\(\s*"(\.\.?\/[\w./]+\.ts)"/g),
  ].map(([, specifier]) => specifier!);
  const base = new URL(path, src);
  for (const specifier of specifiers) {
    const target = new URL(specifier, base);
    imported.add(fileURLToPath(target).slice(fileURLToPath(src).length));
  }
  return [...imported].sort();
}

/** The strongly connected components of more than one file (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const lowest = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  function visit(file: string): void {
    indices.set(file, index);
    lowest.set(file, index++);
    stack.push(file);
    onStack.add(file);
    for (const next of graph.get(file) ?? []) {
      if (!indices.has(next)) {
        visit(next);
        lowest.set(file, Math.min(lowest.get(file)!, lowest.get(next)!));
      } else if (onStack.has(next)) {
        lowest.set(file, Math.min(lowest.get(file)!, indices.get(next)!));
      }
    }
    if (lowest.get(file) === indices.get(file)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== file);
      if (component.length > 1 || graph.get(file)?.includes(file)) {
        found.push(component.sort());
      }
    }
  }
  for (const file of graph.keys()) if (!indices.has(file)) visit(file);
  return found;
}

/**
 * The folders of src/, each with the folders it may import besides itself:
 * utilities at the bottom, then the public vocabulary, the engine, and on
 * top the HTTP adapters and the durable backends, which never know each
 * other.
 */
const LAYERS: Readonly<Record<string, readonly string[]>> = {
  util: [],
  api: ["util"],
  core: ["api", "util"],
  http: ["core", "api", "util"],
  durable: ["core", "api", "util"],
  kv: ["durable", "core", "api", "util"],
  bullmq: ["durable", "core", "api", "util"],
};

/** The imports of `graph` that cross the folders' rules, as "from -> to". */
function crossings(graph: Map<string, string[]>): string[] {
  const crossing: string[] = [];
  for (const [file, imports] of graph) {
    const folder = file.split("/")[0]!;
    const allowed = LAYERS[folder];
    for (const target of imports) {
      const to = target.split("/")[0]!;
      if (allowed === undefined || (to !== folder && !allowed.includes(to))) {
        crossing.push(`${file} -> ${target}`);
      }
    }
  }
  return crossing.sort();
}

Deno.test("src/ has no import cycle, type-only imports included", async () => {
  const graph = await importGraph();
  assert.ok(graph.size > 10, "the graph was read");
  assert.deepEqual(cycles(graph), []);
});

Deno.test("src/ keeps its folders' layers: every file is in a folder, and imports only the folders below it", async () => {
  const graph = await importGraph();
  assert.deepEqual(
    [...graph.keys()].filter((file) => !(file.split("/")[0]! in LAYERS)),
    [],
    "a file outside the layers' folders",
  );
  assert.ok([...graph.values()].flat().length > 100, "the imports were read");
  assert.deepEqual(crossings(graph), []);
});

Deno.test("the cycle check finds a cycle, type-only or not", () => {
  const graph = new Map([
    ["a.ts", ["b.ts"]],
    ["b.ts", ["c.ts"]],
    ["c.ts", ["a.ts", "d.ts"]],
    ["d.ts", []],
  ]);
  assert.deepEqual(cycles(graph), [["a.ts", "b.ts", "c.ts"]]);
});

Deno.test("the layer check finds an engine file importing a backend, a backend importing another or an adapter, and the vocabulary importing the engine", () => {
  const graph = new Map([
    ["core/_runner.ts", ["api/task_info.ts", "kv/kv_backend.ts"]],
    ["kv/kv_backend.ts", ["durable/_worker.ts", "bullmq/_shared.ts"]],
    ["bullmq/_shared.ts", ["http/serve.ts", "util/_assert.ts"]],
    ["api/task_info.ts", ["core/_chain.ts", "util/_assert.ts"]],
    ["http/serve.ts", ["core/_runner.ts"]],
  ]);
  assert.deepEqual(crossings(graph), [
    "api/task_info.ts -> core/_chain.ts",
    "bullmq/_shared.ts -> http/serve.ts",
    "core/_runner.ts -> kv/kv_backend.ts",
    "kv/kv_backend.ts -> bullmq/_shared.ts",
  ]);
});

Deno.test("the import reader resolves paths across folders, type-only, multi-line and side-effect imports included", () => {
  assert.deepEqual(
    importsOf(
      "kv/kv_backend.ts",
      `import { a } from "./_consumer.ts";
import type {
  B,
} from "../api/task_backend.ts";
export { c } from "../durable/_worker.ts";
import "../bullmq/_shared.ts";
const d = await import("../util/_assert.ts");`,
    ),
    [
      "api/task_backend.ts",
      "bullmq/_shared.ts",
      "durable/_worker.ts",
      "kv/_consumer.ts",
      "util/_assert.ts",
    ],
  );
});
