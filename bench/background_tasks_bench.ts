// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The JavaScript side of the cost, without HTTP: `deno bench bench/`.
// Handler benchmarks make 10,000 calls per iteration and then drain, so the
// figure per request is the time shown divided by 10,000; the one timer a
// batch shares is amortised as it is under load.

import {
  BackgroundTasks,
  defineTask,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../mod.ts";

let sink = 0;
function trivialTask(n: number): void {
  sink += n;
}
async function trivialAsyncTask(n: number): Promise<void> {
  await undefined;
  sink += n;
}
const trivialDefinedTask = defineTask((_context, n: number) => {
  sink += n;
}, { name: "trivial", timeout: 10_000 });
const asyncDefinedTask = defineTask(async (_context, n: number) => {
  await undefined;
  sink += n;
}, { name: "async" });
const asyncDefinedTaskWithTimeout = defineTask(async (_context, n: number) => {
  await undefined;
  sink += n;
}, { name: "asyncWithTimeout", timeout: 10_000 });

Deno.bench(
  "new BackgroundTasks()",
  { group: "addTask", baseline: true },
  () => {
    new BackgroundTasks();
  },
);
Deno.bench(
  "new BackgroundTasks() and 1 addTask()",
  { group: "addTask" },
  () => {
    new BackgroundTasks().addTask(trivialTask, 1);
  },
);
Deno.bench(
  "new BackgroundTasks() and 3 addTask()",
  { group: "addTask" },
  () => {
    const tasks = new BackgroundTasks();
    tasks.addTask(trivialTask, 1);
    tasks.addTask(trivialTask, 2);
    tasks.addTask(trivialTask, 3);
  },
);

for (
  const [name, task] of [
    ["sync", trivialTask],
    ["async", trivialAsyncTask],
    ["defined, with a timeout", trivialDefinedTask],
  ] as const
) {
  Deno.bench(`run() 100 ${name} tasks`, {
    group: "chain of 100 tasks",
    baseline: name === "sync",
  }, async () => {
    const tasks = new BackgroundTasks();
    for (let i = 0; i < 100; i++) {
      tasks.addTask(task as (n: number) => unknown, i);
    }
    await tasks.run();
  });
}

// Why an attempt follows its holder with a listener of its own rather than
// AbortSignal.any(): the cost of each, per attempt.
const holder = new AbortController();
Deno.bench("AbortSignal.any() of the holder's signal and a timer's", {
  group: "an attempt's signal",
}, () => {
  AbortSignal.any([holder.signal, new AbortController().signal]);
});
Deno.bench("a controller of its own, following the holder's signal", {
  group: "an attempt's signal",
  baseline: true,
}, () => {
  const own = new AbortController();
  const follow = () => own.abort(holder.signal.reason);
  holder.signal.addEventListener("abort", follow, { once: true });
  holder.signal.removeEventListener("abort", follow);
});

const request = new Request("http://localhost/orders/42");
// A delivered response, as Deno.serve reports it.
const info = {
  remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 4000 },
  completed: Promise.resolve(),
} as Deno.ServeHandlerInfo;
const bare = () => new Response("ok");
const hooksAndLimits: WithBackgroundTasksOptions = {
  concurrency: 1_000,
  maxPending: 1_000_000,
  timeout: 10_000,
  onTaskStart() {},
  onTaskEnd() {},
};

const handlers = [
  ["bare handler", bare],
  ["wrapped, no task", withBackgroundTasks(bare)],
  [
    "wrapped, 1 task",
    withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(trivialTask, 1);
      return bare();
    }),
  ],
  [
    "wrapped, 3 tasks",
    withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(trivialTask, 1);
      tasks.addTask(trivialTask, 2);
      tasks.addTask(trivialTask, 3);
      return bare();
    }),
  ],
  [
    "wrapped, 1 async task with a timeout",
    withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(trivialAsyncTask, 1);
      return bare();
    }, { timeout: 10_000 }),
  ],
  [
    "wrapped, 1 async defined task",
    withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(asyncDefinedTask, 1);
      return bare();
    }),
  ],
  [
    "wrapped, 1 async defined task with a timeout",
    withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(asyncDefinedTaskWithTimeout, 1);
      return bare();
    }),
  ],
  [
    "wrapped, 1 task, hooks and limits",
    withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(trivialTask, 1);
      return bare();
    }, hooksAndLimits),
  ],
] as const;

for (const [name, handler] of handlers) {
  Deno.bench(`${name}, 10,000 requests`, {
    group: "handler called directly",
    baseline: name === "bare handler",
  }, async () => {
    for (let i = 0; i < 10_000; i++) handler(request, info);
    if ("drain" in handler) await handler.drain();
  });
}

globalThis.addEventListener("unload", () => void sink);
