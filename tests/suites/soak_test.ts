// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

Deno.test("soak: 5,000 requests with 3 tasks each run every task once, in order, and leave no heap behind", async () => {
  const requests = 5_000;
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--v8-flags=--expose-gc",
      "--allow-net=127.0.0.1",
      fileURLToPath(new URL("../../bench/soak.ts", import.meta.url)),
      "--requests",
      String(requests),
      "--json",
    ],
  }).output();
  assert.equal(new TextDecoder().decode(stderr), "");
  const result = JSON.parse(new TextDecoder().decode(stdout));
  assert.equal(code, 0, JSON.stringify(result));
  assert.equal(result.executions, requests * 3);
  assert.equal(result.lost, 0);
  assert.equal(result.duplicates, 0);
  assert.equal(result.outOfOrder, 0);
  assert.equal(result.pendingAfter, 0);
  assert.equal(result.gc, true);
  // A chain kept alive after it ran would cost hundreds of bytes a request;
  // the allowance is a fraction of that.
  assert.ok(
    result.heapDelta < requests * 256,
    `the heap grew by ${result.heapDelta} bytes`,
  );
});
