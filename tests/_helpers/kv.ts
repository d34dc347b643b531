// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What the Deno KV tests share: an in-memory database, and a backend on one.

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

/** A Deno KV database for one test. */
export async function openKv(): Promise<Deno.Kv & AsyncDisposable> {
  const kv = await Deno.openKv(":memory:");
  return Object.assign(kv, {
    [Symbol.asyncDispose]() {
      kv.close();
      return Promise.resolve();
    },
  });
}
