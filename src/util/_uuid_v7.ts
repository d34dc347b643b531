// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/** The millisecond of the last id made, and the text its ids begin with. */
let lastTime = -1;
let timePrefix = "";

/**
 * A UUID of version 7 (RFC 9562): the milliseconds since the epoch in its
 * first 48 bits, then version, variant and random bits, so that ids sort by
 * the millisecond they were made in (within one, in no order: nothing relies
 * on it). A chain's id is one: a durable backend keys a chain's
 * state by it (Deno KV's progress), and ids made together then land side by
 * side in the database's pages, where random ones land on a page each
 * (measured on Deno KV: 4.9 KB written per stored chain rather than 16.3 to
 * 16.9). The random bits are those of `crypto.randomUUID()` (74 of them),
 * whose time fields it replaces; the time's text is made once per
 * millisecond (`bench/uuid_v7_bench.ts`: 108 to 166 ns an id, against 506 to
 * 561 ns when made for each, and 50 to 64 ns for `crypto.randomUUID()`).
 */
export function uuidV7(): string {
  const now = Date.now();
  if (now !== lastTime) {
    lastTime = now;
    const time = now.toString(16).padStart(12, "0");
    // Then the version digit, where a random UUID has a 4.
    timePrefix = `${time.slice(0, 8)}-${time.slice(8)}-7`;
  }
  return timePrefix + crypto.randomUUID().slice(15);
}
