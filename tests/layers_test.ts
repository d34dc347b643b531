// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The modules of src/ form layers: each imports only from below, type-only
// imports included, so that every file can be read bottom up and no value
// import can ever close a cycle. denoland/std checks its packages the same
// way (_tools/check_circular_package_dependencies.ts).

import assert from "node:assert/strict";

const src = new URL("../src/", import.meta.url);

/** The files of src/ each file imports, type-only imports and re-exports included. */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for await (const entry of Deno.readDir(src)) {
    if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
    const text = await Deno.readTextFile(new URL(entry.name, src));
    const imported = new Set<string>();
    // `import ... from "./x.ts"`, `import type ...`, `export ... from`, and
    // `import("./x.ts")`, on one line or many.
    for (
      const [, specifier] of text.matchAll(
        /(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*"(\.\/[\w.]+\.ts)"/g,
      )
    ) imported.add(specifier!.slice(2));
    for (
      const [, specifier] of text.matchAll(/import\(\s*"(\.\/[\w.]+\.ts)"/g)
    ) {
      imported.add(specifier!.slice(2));
    }
    graph.set(entry.name, [...imported].sort());
  }
  return graph;
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

Deno.test("src/ has no import cycle, type-only imports included", async () => {
  const graph = await importGraph();
  assert.ok(graph.size > 10, "the graph was read");
  assert.deepEqual(cycles(graph), []);
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
