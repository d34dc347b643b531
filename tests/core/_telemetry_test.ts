// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";

/**
 * Observes the outcomes counter of a Telemetry made on fake providers,
 * before and after the handler it watched is collected: in a process of its
 * own, started with --expose-gc.
 */
const program = `
import { Telemetry } from ${
  JSON.stringify(new URL("../../src/core/_telemetry.ts", import.meta.url).href)
};

const callbacks = new Map();
const instrument = (name) => ({
  record() {},
  addCallback(callback) { callbacks.set(name, callback); },
});
const telemetry = new Telemetry({
  tracerProvider: { getTracer: () => ({ startSpan() {} }) },
  contextManager: { active: () => ({}), with: (_context, fn) => fn() },
  meterProvider: {
    getMeter: () => ({
      createHistogram: instrument,
      createObservableGauge: instrument,
      createObservableCounter: instrument,
    }),
  },
});
function observe() {
  const seen = {};
  callbacks.get("background_task.outcomes")({
    observe(value, attributes) {
      seen[attributes["background_task.outcome"]] = value;
    },
  });
  return seen.succeeded;
}
const stats = (succeeded) => ({
  succeeded, failed: 0, timedOut: 0, refused: 0, discarded: 0, skipped: 0,
  deduplicated: 0, abandoned: 0, handedOver: 0, queued: 0, running: 0, storing: 0,
});
const kept = { stats: stats(2) };
telemetry.watch(kept);
let gone;
(() => {
  const runner = { stats: stats(3) };
  gone = new WeakRef(runner);
  telemetry.watch(runner);
})();
const before = observe();
// A WeakRef's target lives to the end of the job that saw it.
await new Promise((resolve) => setTimeout(resolve, 0));
globalThis.gc();
await new Promise((resolve) => setTimeout(resolve, 0));
globalThis.gc();
const after = observe();
console.log(JSON.stringify({
  before, after, kept: kept.stats.succeeded, collected: gone.deref() === undefined,
}));
`;

Deno.test("Telemetry's outcomes counter keeps the counts of a handler that was collected", async () => {
  const path = await Deno.makeTempFile({ suffix: ".js" });
  try {
    await Deno.writeTextFile(path, program);
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--v8-flags=--expose-gc", "--allow-read", path],
    }).output();
    assert.equal(new TextDecoder().decode(stderr), "");
    assert.equal(code, 0);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(stdout)), {
      before: 5,
      after: 5,
      kept: 2,
      // Else the counter was never asked about a collected handler.
      collected: true,
    });
  } finally {
    await Deno.remove(path);
  }
});
