// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * One variant of the HTTP benchmark, served on 127.0.0.1 until killed. Every
 * variant answers `GET /` with the same small text body; they differ only in
 * what happens to background work. Prints `listening <port>` once ready.
 *
 *   deno run --allow-net=127.0.0.1 bench/http_server.ts <variant> [port]
 *
 * @module
 */

import {
  defineTask,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../mod.ts";
import { getBackgroundTasks } from "../ambient.ts";

/**
 * The permissions a variant's server runs with: the backend ones open a
 * Deno KV file and read `REDIS_PORT`.
 */
export const serverFlags: readonly string[] = [
  "--unstable-kv",
  "--allow-net=127.0.0.1",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
];

let sink = 0;
/** The trivial task: enough work that it cannot be optimised away. */
function trivialTask(n: number): void {
  sink += n;
}

async function sleepTask(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

const bare = (): Response => new Response("ok");

const options: WithBackgroundTasksOptions = {
  concurrency: 1_000,
  maxPending: 1_000_000,
  timeout: 10_000,
  onTaskStart() {},
  onTaskEnd() {},
};

/** The variants, by name; each is a `Deno.serve` handler. */
export const variants: Record<string, Deno.ServeHandler> = {
  "bare": bare,
  "wrapped, no task": withBackgroundTasks(bare),
  "wrapped, 1 task": withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(trivialTask, 1);
    return bare();
  }),
  "wrapped, 3 tasks": withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(trivialTask, 1);
    tasks.addTask(trivialTask, 2);
    tasks.addTask(trivialTask, 3);
    return bare();
  }),
  "wrapped, 1 task, hooks and limits": withBackgroundTasks(
    (_request, _info, tasks) => {
      tasks.addTask(trivialTask, 1);
      return bare();
    },
    options,
  ),
  "wrapped, 1 task, ambient": withBackgroundTasks(() => {
    getBackgroundTasks().addTask(trivialTask, 1);
    return bare();
  }, { ambient: true }),
  "naive queueMicrotask, 1 task": () => {
    queueMicrotask(() => trivialTask(1));
    return bare();
  },
  "wrapped, 1 task of 100 ms": withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(sleepTask, 100);
    return bare();
  }),
  "naive queueMicrotask, 1 task of 100 ms": () => {
    queueMicrotask(() => void sleepTask(100));
    return bare();
  },
  // Diagnostics: what each ingredient of the wrapper costs on its own.
  "diag: read url": (request) => {
    void request.url;
    return bare();
  },
  "diag: completed.then": (_request, info) => {
    info.completed.then(() => trivialTask(1), () => {});
    return bare();
  },
  "diag: setTimeout per request": () => {
    setTimeout(() => trivialTask(1), 0);
    return bare();
  },
  "diag: completed + shared timer": (_request, info) => {
    info.completed.then(() => {
      ready.push(1);
      timer ??= setTimeout(flush, 0);
    }, () => {});
    return bare();
  },
  "diag: completed + shared timer of 1 ms": (_request, info) => {
    info.completed.then(() => {
      ready.push(1);
      timer ??= setTimeout(flush, 1);
    }, () => {});
    return bare();
  },
  "diag: completed + shared timer of 5 ms": (_request, info) => {
    info.completed.then(() => {
      ready.push(1);
      timer ??= setTimeout(flush, 5);
    }, () => {});
    return bare();
  },
  "diag: completed + shared timer, 100 ms task": (_request, info) => {
    info.completed.then(() => {
      sleepy.push(100);
      sleepyTimer ??= setTimeout(flushSleepy, 0);
    }, () => {});
    return bare();
  },
  "diag: completed, task run at once": (_request, info) => {
    info.completed.then(() => trivialTask(1), () => {});
    return bare();
  },
  "diag: completed + shared setImmediate": (_request, info) => {
    info.completed.then(() => {
      ready.push(1);
      if (!immediate) {
        immediate = true;
        setImmediate(flushImmediate);
      }
    }, () => {});
    return bare();
  },
};

let sleepy: number[] = [];
let sleepyTimer: ReturnType<typeof setTimeout> | undefined;
function flushSleepy(): void {
  sleepyTimer = undefined;
  const batch = sleepy;
  sleepy = [];
  for (const ms of batch) void sleepTask(ms);
}

let immediate = false;
function flushImmediate(): void {
  immediate = false;
  flush();
}
let ready: number[] = [];
let timer: ReturnType<typeof setTimeout> | undefined;
function flush(): void {
  timer = undefined;
  const batch = ready;
  ready = [];
  for (const n of batch) trivialTask(n);
}

/**
 * Variants that hand the task to a backend, made only when asked for: the
 * KV one opens a database in a temporary file, the BullMQ one connects to
 * the Redis at `REDIS_PORT`. Nothing consumes their queues during the run,
 * so what they measure is the enqueueing.
 */
export const backendVariants: Record<
  string,
  () => Promise<Deno.ServeHandler>
> = {
  "kv backend, 1 task": () => kvVariant("before-response"),
  "kv backend, 1 task, after response": () => kvVariant("after-response"),
  "awaited kv.enqueue(), 1 task": awaitedKvEnqueue,
  "awaited queue.add(), 1 task": awaitedQueueAdd,
  "bullmq backend, 1 task": () => bullmqVariant("before-response"),
  "bullmq backend, 1 task, after response": () =>
    bullmqVariant("after-response"),
  "bullmq backend, 3 tasks": () => bullmqVariant("before-response", 3),
  "wrapped, 1 defined task": () =>
    Promise.resolve(withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(trivialDefined, 1);
      return bare();
    })),
};

async function kvVariant(
  handOver: "before-response" | "after-response",
): Promise<Deno.ServeHandler> {
  const { kvBackend } = await import("../kv.ts");
  const path = await Deno.makeTempFile({ suffix: ".sqlite3" });
  const kv = await Deno.openKv(path);
  const backend = kvBackend({ kv, tasks: [trivialDefined], listen: false });
  return withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(trivialDefined, 1);
    return bare();
  }, { backend, handOver });
}

async function bullmqVariant(
  handOver: "before-response" | "after-response",
  count = 1,
): Promise<Deno.ServeHandler> {
  const { bullmqBackend } = await import("../bullmq.ts");
  const backend = bullmqBackend({
    connection: {
      host: "127.0.0.1",
      port: Number(Deno.env.get("REDIS_PORT")),
    },
    queue: `bench-${crypto.randomUUID()}`,
    tasks: [trivialDefined],
  });
  return withBackgroundTasks((_request, _info, tasks) => {
    for (let n = 1; n <= count; n++) tasks.addTask(trivialDefined, n);
    return bare();
  }, { backend, handOver });
}

/**
 * What a user writes instead of a backend: the handler awaits its own
 * `kv.enqueue()` of the task's message before it answers.
 */
async function awaitedKvEnqueue(): Promise<Deno.ServeHandler> {
  const path = await Deno.makeTempFile({ suffix: ".sqlite3" });
  const kv = await Deno.openKv(path);
  return async (request) => {
    await kv.enqueue({ task: "trivial", args: [1], url: request.url });
    return bare();
  };
}

/** The same with BullMQ: the handler awaits `queue.add()` of one job. */
async function awaitedQueueAdd(): Promise<Deno.ServeHandler> {
  const { Queue } = await import("npm:bullmq@^6");
  const queue = new Queue(`bench-${crypto.randomUUID()}`, {
    connection: {
      host: "127.0.0.1",
      port: Number(Deno.env.get("REDIS_PORT")),
    },
  });
  return async (request) => {
    await queue.add("trivial", { args: [1], url: request.url });
    return bare();
  };
}

const trivialDefined = defineTask((_context, n: number) => trivialTask(n), {
  name: "trivial",
});

if (import.meta.main) {
  const [name = "bare", port = "0", controlPort] = Deno.args;
  const handler = variants[name] ?? await backendVariants[name]?.();
  if (handler === undefined) {
    console.error(
      `Unknown variant "${name}": ${
        [...Object.keys(variants), ...Object.keys(backendVariants)].join(", ")
      }`,
    );
    Deno.exit(2);
  }
  Deno.serve({
    hostname: "127.0.0.1",
    port: Number(port),
    onListen: ({ port }) => console.log(`listening ${port}`),
  }, handler);
  if (controlPort !== undefined) {
    // On a port of its own, so the measured handler stays as it is: waits
    // for the background work accepted so far and answers how long it took.
    const drain = (handler as { drain?: () => Promise<unknown> }).drain;
    Deno.serve({
      hostname: "127.0.0.1",
      port: Number(controlPort),
      onListen: () => {},
    }, async () => {
      const startedAt = performance.now();
      await drain?.();
      return new Response(String(performance.now() - startedAt));
    });
  }
  // Keeps the sink observable so the task's work is not dead code.
  globalThis.addEventListener("unload", () => void sink);
}
