// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// fire100 of ../shared/bench/server.ts, for bench/gc_trace.sh, two ways:
// declared with parameters (Deno makes a Request and a ServeHandlerInfo for
// each request only for a handler declared with parameters: `zeroArgCallback`
// in ext/http/00_serve.ts), and reading `info.completed` too, as the wrapper
// must (and mech100 does). Same arguments as server.ts:
//   deno run -A bench/completed_server.ts fire100-parameters PORT

let sink = 0;
async function sleep(ms: number) {
  await new Promise((resolve) => setTimeout(resolve, ms));
  sink += 1;
}
const handlers: Record<string, Deno.ServeHandler> = {
  // Declared with parameters, so that Deno makes the Request and its info,
  // which it skips for a handler declared without (fire100's).
  "fire100-parameters": (_request, _info) => {
    queueMicrotask(() => void sleep(100));
    return new Response("ok");
  },
  "fire100-completed": (_request, info) => {
    info.completed.catch(() => {});
    queueMicrotask(() => void sleep(100));
    return new Response("ok");
  },
};
const [variant, port] = Deno.args;
const handler = handlers[variant ?? ""];
if (handler === undefined) {
  throw new Error(
    `unknown variant ${variant}; one of ${Object.keys(handlers).join(", ")}`,
  );
}
Deno.serve(
  { port: Number(port), hostname: "127.0.0.1", onListen() {} },
  handler,
);
addEventListener("unload", () => console.log(sink));
