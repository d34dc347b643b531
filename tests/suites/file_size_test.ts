// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// No file of src/ holds more than 300 lines of code (issue 21): past that, a
// file holds more than one concept, and is split along a seam (std keeps
// one concept per file). JSDoc, comments and blank lines do not count, so
// that documenting a file never pushes it over.

import assert from "node:assert/strict";

const src = new URL("../../src/", import.meta.url);

/** The most lines of code a file of src/ may hold. */
const MAX_CODE_LINES = 300;

/**
 * The lines of `text` that hold code: a line that is blank, or holds only a
 * comment (`//`, or part of a `/* … *\/` block, JSDoc included), is not
 * counted. Strings and template literals are skipped over, so that a `//`
 * or `/*` inside one is not taken for a comment.
 */
function codeLines(text: string): number {
  let count = 0;
  let inBlock = false;
  let inTemplate = false;
  for (const line of text.split("\n")) {
    let hasCode = false;
    let i = 0;
    while (i < line.length) {
      if (inBlock) {
        const end = line.indexOf("*/", i);
        if (end === -1) break;
        inBlock = false;
        i = end + 2;
        continue;
      }
      const char = line[i]!;
      if (inTemplate) {
        hasCode = true;
        if (char === "`") inTemplate = false;
        i += char === "\\" ? 2 : 1;
        continue;
      }
      if (char === " " || char === "\t") {
        i++;
        continue;
      }
      if (char === "/" && line[i + 1] === "/") break;
      if (char === "/" && line[i + 1] === "*") {
        inBlock = true;
        i += 2;
        continue;
      }
      hasCode = true;
      if (char === '"' || char === "'") {
        i++;
        while (i < line.length && line[i] !== char) {
          i += line[i] === "\\" ? 2 : 1;
        }
        i++;
        continue;
      }
      if (char === "`") inTemplate = true;
      i++;
    }
    if (hasCode) count++;
  }
  return count;
}

/** Every `.ts` file under src/, with its lines of code. */
async function codeLinesOfSrc(): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  async function read(folder: string): Promise<void> {
    for await (const entry of Deno.readDir(new URL(folder, src))) {
      const path = folder + entry.name;
      if (entry.isDirectory) await read(`${path}/`);
      if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
      counts.set(path, codeLines(await Deno.readTextFile(new URL(path, src))));
    }
  }
  await read("");
  return counts;
}

Deno.test("src/ has no file over 300 lines of code, JSDoc, comments and blank lines aside", async () => {
  const counts = await codeLinesOfSrc();
  assert.ok(counts.size > 10, "the files were read");
  const over = [...counts].filter(([, lines]) => lines > MAX_CODE_LINES)
    .map(([path, lines]) => `${path}: ${lines}`);
  assert.deepEqual(over, []);
});

Deno.test("the line counter counts code only", () => {
  const text = [
    "// Copyright",
    "",
    "/**",
    " * A doc // with a comment marker",
    " */",
    "export function f(): string {",
    '  const url = "http://example.com/*not a comment*/";',
    "  /* a block */ const x = `",
    "    // inside a template",
    "  `; /* a block",
    "  that goes on */",
    "  return url + x; // a trailing comment",
    "}",
  ].join("\n");
  // The function's lines, the template's, and `return` and `}`.
  assert.equal(codeLines(text), 7);
});
