// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * What the Deno KV listener does per task: `bench:workers`'s measure (chains
 * stored by a backend that does not listen, then the database reopened and
 * a listening backend timed until it ran them all), with what each task
 * cost: the commits and reads the listener's database made, the bytes the
 * process wrote, and the CPU time of its main thread and of Deno KV's SQLite
 * thread (`sw-0`, which runs every commit, delivery and acknowledgement).
 * It imports the library from the working directory, so that one copy of it
 * measures an older checkout too: run it from that checkout's root.
 *
 *   deno run -A --unstable-kv bench/kv_listener.ts
 *   deno run -A --unstable-kv bench/kv_listener.ts --tasks 2000 --length 3
 *   deno run -A --unstable-kv bench/kv_listener.ts --ids random
 *   (cd ../base && deno run -A --unstable-kv ../project/bench/kv_listener.ts)
 *
 * `--ids random` gives the chains random UUIDs; by default they are time
 * ordered, as the wrapper makes them since issue 23. `--raw plain` times a
 * bare `kv.listenQueue()` that acknowledges each message at once, on as
 * many messages `{ n }`; `--raw step` does the same with messages as the
 * backend queued them before issue 23 (a step, with its redelivery steps
 * and its undelivered key: chain, index and attempt), each delivery of which
 * costs more, since Deno KV reads the whole queue at each.
 *
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    tasks: { type: "string", default: "5000" },
    length: { type: "string", default: "1" },
    ids: { type: "string", default: "ordered" },
    raw: { type: "string" },
  },
});
const chains = Number(values.tasks);
const length = Number(values.length);
const total = chains * length;
const root = new URL(`file://${Deno.cwd()}/`);
const { defineTask } = await import(new URL("mod.ts", root).href);
const { kvBackend } = await import(new URL("kv.ts", root).href);

const trivial = defineTask((_context: unknown, _n: number) => {}, {
  name: "trivial",
});

/** A UUID of version 7, as src/util/_uuid_v7.ts makes it. */
function orderedId(): string {
  const random = crypto.randomUUID();
  const time = Date.now().toString(16).padStart(12, "0");
  return `${time.slice(0, 8)}-${time.slice(8)}-7${random.slice(15)}`;
}

function chain(index: number) {
  return {
    id: values.ids === "random" ? crypto.randomUUID() : orderedId(),
    tasks: Array.from({ length }, () => ({
      name: trivial.name,
      args: [index],
      timeout: undefined,
      retry: undefined,
      task: trivial,
    })),
    request: undefined,
    delivered: undefined,
  };
}

/** CPU ticks (1/100 s) of this process's threads, by name. */
function threadTicks(): Map<string, number> {
  const ticks = new Map<string, number>();
  for (const { name } of Deno.readDirSync("/proc/self/task")) {
    const comm = Deno.readTextFileSync(`/proc/self/task/${name}/comm`).trim();
    const fields = Deno.readTextFileSync(`/proc/self/task/${name}/stat`)
      .split(") ")[1]!.split(" ");
    ticks.set(
      comm,
      (ticks.get(comm) ?? 0) + Number(fields[11]) + Number(fields[12]),
    );
  }
  return ticks;
}

/** Bytes this process wrote so far. */
function written(): number {
  const io = Deno.readTextFileSync("/proc/self/io");
  return Number(/wchar: (\d+)/.exec(io)![1]);
}

/** A message as `--raw` queues it. */
function rawMessage(
  operation: Deno.AtomicOperation,
  n: number,
): Deno.AtomicOperation {
  if (values.raw === "plain") return operation.enqueue({ n });
  const chain = crypto.randomUUID();
  return operation.enqueue({
    afterwardStep: 1,
    chain,
    index: 0,
    attempt: 1,
    tasks: [{ name: "trivial", args: [n] }],
  }, {
    keysIfUndelivered: [["background-tasks", "undelivered", chain, 0, 1]],
    backoffSchedule: [1000, 5000, 10_000, 30_000, 60_000],
  });
}

const path = await Deno.makeTempFile({ suffix: ".sqlite3" });
if (values.raw !== undefined) {
  try {
    const db = await Deno.openKv(path);
    for (let i = 0; i < total; i += 100) {
      let operation = db.atomic();
      for (let n = i; n < Math.min(total, i + 100); n++) {
        operation = rawMessage(operation, n);
      }
      await operation.commit();
    }
    db.close();
    const kv = await Deno.openKv(path);
    const done = Promise.withResolvers<void>();
    let ran = 0;
    const ticks = threadTicks();
    const startedAt = performance.now();
    kv.listenQueue(() => {
      if (++ran === total) done.resolve();
    });
    await done.promise;
    const seconds = (performance.now() - startedAt) / 1000;
    const ticksAfter = threadTicks();
    kv.close();
    const sqlite = ((ticksAfter.get("sw-0") ?? 0) - (ticks.get("sw-0") ?? 0)) *
      1e4 / total;
    console.log(
      `raw listenQueue, ${values.raw} messages | ${
        Math.round(total / seconds)
      } messages/s | CPU µs/message sqlite ${sqlite.toFixed(0)}`,
    );
  } finally {
    await Deno.remove(path);
  }
  Deno.exit(0);
}
try {
  const db = await Deno.openKv(path);
  const enqueuer = kvBackend({ kv: db, tasks: [trivial], listen: false });
  for (let i = 0; i < chains; i += 100) {
    await Promise.all(
      Array.from(
        { length: Math.min(100, chains - i) },
        (_, j) => enqueuer.enqueue(chain(i + j)),
      ),
    );
  }
  await enqueuer.close();
  db.close();

  const kv = await Deno.openKv(path);
  let commits = 0;
  let reads = 0;
  const operation = Object.getPrototypeOf(kv.atomic());
  const commit = operation.commit;
  operation.commit = function (this: Deno.AtomicOperation) {
    commits++;
    return commit.call(this);
  };
  const { get, getMany } = kv;
  kv.get = ((...args: Parameters<Deno.Kv["get"]>) => {
    reads++;
    return get.apply(kv, args);
  }) as Deno.Kv["get"];
  kv.getMany = ((...args: Parameters<Deno.Kv["getMany"]>) => {
    reads++;
    return getMany.apply(kv, args);
  }) as Deno.Kv["getMany"];
  const done = Promise.withResolvers<void>();
  let ran = 0;
  const ticks = threadTicks();
  const bytes = written();
  const startedAt = performance.now();
  const backend = kvBackend({
    kv,
    tasks: [trivial],
    onTaskEnd: () => {
      if (++ran === total) done.resolve();
    },
  });
  await done.promise;
  const seconds = (performance.now() - startedAt) / 1000;
  const ticksAfter = threadTicks();
  const bytesAfter = written();
  await backend.close();
  kv.close();
  const cpu = (thread: string) =>
    ((ticksAfter.get(thread) ?? 0) - (ticks.get(thread) ?? 0)) * 1e4 / total;
  console.log(
    [
      `${Deno.cwd().split("/").pop()}`,
      `${length}-task chains, ${values.ids} ids`,
      `${Math.round(total / seconds)} tasks/s`,
      `commits/task ${(commits / total).toFixed(3)}`,
      `reads/task ${(reads / total).toFixed(3)}`,
      `written B/task ${Math.round((bytesAfter - bytes) / total)}`,
      `CPU µs/task main ${cpu("deno").toFixed(0)}, sqlite ${
        cpu("sw-0").toFixed(0)
      }`,
    ].join(" | "),
  );
} finally {
  await Deno.remove(path);
}
