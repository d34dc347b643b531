// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// fire100 of ../shared/bench/server.ts, reading `info.completed` first, as
// the wrapper must (and mech100 does): what Deno's making that promise
// costs the collector, for bench/gc_trace.sh. Same arguments as server.ts:
//   deno run -A bench/completed_server.ts fire100-completed PORT

let sink = 0;
async function sleep(ms: number) {
  await new Promise((resolve) => setTimeout(resolve, ms));
  sink += 1;
}
const [variant, port] = Deno.args;
if (variant !== "fire100-completed") {
  throw new Error(`unknown variant ${variant}; one of fire100-completed`);
}
Deno.serve(
  { port: Number(port), hostname: "127.0.0.1", onListen() {} },
  (_request, info) => {
    info.completed.catch(() => {});
    queueMicrotask(() => void sleep(100));
    return new Response("ok");
  },
);
addEventListener("unload", () => console.log(sink));
