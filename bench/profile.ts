// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Profiles one variant of `bench/http_server.ts` under `wrk` load: starts it
 * with `--inspect`, samples its CPU through V8's inspector protocol (a
 * window of the load alone, which `deno run --cpu-prof` does not give), and
 * prints the functions with the most self time.
 * With `--save`, also writes the `.cpuprofile` for Chrome's DevTools.
 *
 *   deno run --allow-run --allow-net=127.0.0.1 --allow-read --allow-write=bench/results bench/profile.ts "wrapped, 1 task"
 *
 * @module
 */

import { parseArgs } from "node:util";
import { freePort } from "./_harness.ts";
import { serverFlags } from "./http_server.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: {
    duration: { type: "string", default: "5" },
    top: { type: "string", default: "30" },
    save: { type: "string" },
  },
  allowPositionals: true,
});
const variant = positionals[0] ?? "wrapped, 1 task";

const port = freePort();
const inspectorPort = freePort();
const server = new Deno.Command("taskset", {
  args: [
    "-c",
    "0",
    Deno.execPath(),
    "run",
    `--inspect=127.0.0.1:${inspectorPort}`,
    ...serverFlags,
    new URL("./http_server.ts", import.meta.url).pathname,
    variant,
    String(port),
  ],
  stdout: "null",
  stderr: "null",
}).spawn();

async function until<T>(attempt: () => Promise<T>): Promise<T> {
  for (let tries = 0;; tries++) {
    try {
      return await attempt();
    } catch (error) {
      if (tries > 300) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

interface ProfileNode {
  id: number;
  callFrame: {
    functionName: string;
    url: string;
    lineNumber: number;
  };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

try {
  const [target] = await until(async () => {
    const response = await fetch(`http://127.0.0.1:${inspectorPort}/json/list`);
    const targets = await response.json();
    if (targets.length === 0) throw new Error("no inspector target yet");
    return targets;
  });
  await until(() =>
    Deno.connect({ hostname: "127.0.0.1", port }).then((c) => c.close())
  );
  const socket = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve) => socket.addEventListener("open", resolve));
  let nextId = 1;
  const pending = new Map<number, (result: unknown) => void>();
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    pending.get(message.id)?.(message.result);
  });
  const send = (method: string, params = {}) =>
    new Promise<unknown>((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      socket.send(JSON.stringify({ id, method, params }));
    });
  await send("Profiler.enable");
  await send("Profiler.setSamplingInterval", { interval: 100 });

  const wrk = (seconds: number) =>
    new Deno.Command("taskset", {
      args: [
        "-c",
        "1",
        "wrk",
        "-t1",
        "-c64",
        `-d${seconds}s`,
        `http://127.0.0.1:${port}/`,
      ],
      stdout: "piped",
    }).output();
  await wrk(1);
  await send("Profiler.start");
  const load = await wrk(Number(values.duration));
  const { profile } = await send("Profiler.stop") as { profile: Profile };
  socket.close();
  console.log(
    new TextDecoder().decode(load.stdout).match(/Requests\/sec:.*/)?.[0],
  );

  const self = new Map<string, number>();
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  let total = 0;
  profile.samples.forEach((id, i) => {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const file = url.replace(/^.*\//, "");
    const key = `${functionName || "(anonymous)"} ${file}:${lineNumber + 1}`;
    const delta = profile.timeDeltas[i] ?? 0;
    self.set(key, (self.get(key) ?? 0) + delta);
    total += delta;
  });
  console.log(`self time of ${variant}, top ${values.top}:`);
  for (
    const [key, time] of [...self].sort((a, b) => b[1] - a[1]).slice(
      0,
      Number(values.top),
    )
  ) {
    console.log(`${(100 * time / total).toFixed(1).padStart(5)} %  ${key}`);
  }
  if (values.save) {
    await Deno.writeTextFile(values.save, JSON.stringify(profile));
  }
} finally {
  server.kill("SIGKILL");
  await server.status;
}
