// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What a chain's id costs: a UUID of version 7 (src/util/_uuid_v7.ts)
// against `crypto.randomUUID()`, which chain ids were before issue 23.
//
//   deno bench bench/uuid_v7_bench.ts

import { uuidV7 } from "../src/util/_uuid_v7.ts";

Deno.bench("crypto.randomUUID()", { baseline: true }, () => {
  crypto.randomUUID();
});

Deno.bench("uuidV7()", () => {
  uuidV7();
});
