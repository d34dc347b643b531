// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

Deno.test("memory: a pending request holds at most 560 bytes, a further pending task of one argument at most 96", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--v8-flags=--expose-gc",
      fileURLToPath(new URL("../../bench/memory.ts", import.meta.url)),
      "--json",
    ],
  }).output();
  assert.equal(new TextDecoder().decode(stderr), "");
  assert.equal(code, 0);
  const result = JSON.parse(new TextDecoder().decode(stdout));
  assert.ok(
    result.bytesPerPendingRequest <= 560,
    `${result.bytesPerPendingRequest} bytes per pending request`,
  );
  assert.ok(
    result.bytesPerPendingTask <= 96,
    `${result.bytesPerPendingTask} bytes per pending task`,
  );
  // A measurement that found nothing would pass the bounds above.
  assert.ok(result.bytesPerPendingRequest > 100);
  assert.ok(result.bytesPerPendingTask > 16);
});
