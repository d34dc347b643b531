// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What the KV backend's tests share: a backend on an in-memory database.

import { kvBackend, type KvBackendOptions } from "../../kv.ts";

/** A backend on an in-memory database, closed with the test. */
export async function openBackend(
  options: Omit<KvBackendOptions, "kv">,
): Promise<
  {
    kv: Deno.Kv;
    backend: ReturnType<typeof kvBackend>;
    [Symbol.asyncDispose](): Promise<void>;
  }
> {
  const kv = await Deno.openKv(":memory:");
  const backend = kvBackend({ kv, ...options });
  return {
    kv,
    backend,
    [Symbol.asyncDispose]() {
      backend.close();
      kv.close();
      return Promise.resolve();
    },
  };
}
