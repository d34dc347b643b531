// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Worker processes for the tests of keyed tasks on BullMQ
// (tests/_helpers/keyed_worker.ts), the lines their tasks print, and the
// checks made of them: per key, one attempt at a time, in order.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { LaneEvent } from "./keyed_tasks.ts";

/** A worker process, and the events its tasks printed. */
export interface KeyedWorker extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly events: LaneEvent[];
  /** Resolves once it said it is ready. */
  readonly ready: Promise<void>;
  /** Resolves once `test` holds of the events printed so far. */
  until(test: (events: readonly LaneEvent[]) => boolean): Promise<void>;
}

/** Starts a worker process on `url` and `queue`, with `env` added. */
export function spawnKeyedWorker(
  url: string,
  queue: string,
  env: Record<string, string> = {},
): KeyedWorker {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-sys",
      fileURLToPath(new URL("./keyed_worker.ts", import.meta.url)),
    ],
    env: {
      BULLMQ_URL: url,
      QUEUE: queue,
      CONCURRENCY: "8",
      WORK_MS: "20",
      NO_COLOR: "1",
      ...env,
    },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const events: LaneEvent[] = [];
  const ready = Promise.withResolvers<void>();
  const waiters = new Set<() => void>();
  const reading = (async () => {
    let buffer = "";
    for await (
      const chunk of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buffer += chunk;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) {
        const event = JSON.parse(line);
        if (event.event === "ready") ready.resolve();
        else events.push(event);
      }
      for (const waiter of [...waiters]) waiter();
    }
    ready.reject(new Error("The worker exited before it was ready"));
    for (const waiter of [...waiters]) waiter();
  })();
  let exited = false;
  void child.status.then(() => exited = true);
  return {
    child,
    events,
    ready: ready.promise,
    until(test) {
      const { promise, resolve, reject } = Promise.withResolvers<void>();
      const check = () => {
        if (test(events)) {
          waiters.delete(check);
          resolve();
        } else if (exited) {
          waiters.delete(check);
          reject(new Error("The worker exited"));
        }
      };
      waiters.add(check);
      check();
      return promise;
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Gone already.
      }
      await child.status;
      await reading;
    },
  };
}

/** Resolves once `test` holds of the events of all `workers` together. */
export function untilAll(
  workers: readonly KeyedWorker[],
  test: (events: readonly LaneEvent[]) => boolean,
): Promise<void> {
  const all = () => workers.flatMap((worker) => worker.events);
  return new Promise((resolve, reject) => {
    for (const worker of workers) {
      worker.until(() => test(all())).then(resolve, reject);
    }
  });
}

/** One attempt: its start and end events. */
export interface Run {
  readonly seq: number;
  readonly id: string;
  readonly pid: number;
  readonly start: number;
  readonly end: number | undefined;
}

/** The attempts of task `name` for `key`, in the order they started. */
export function runsOf(
  events: readonly LaneEvent[],
  name: string,
  key: string,
): Run[] {
  const runs: Run[] = [];
  for (const event of events) {
    if (event.name !== name || event.key !== key) continue;
    if (event.event === "start") {
      runs.push({
        seq: event.seq,
        id: event.id,
        pid: event.pid,
        start: event.at,
        end: undefined,
      });
      continue;
    }
    const run = runs.findLast((run) =>
      run.id === event.id && run.pid === event.pid && run.end === undefined
    );
    if (run !== undefined) {
      runs[runs.indexOf(run)] = { ...run, end: event.at };
    }
  }
  return runs.sort((a, b) => a.start - b.start);
}

/** The ends of task `name` across `events`. */
export function ends(events: readonly LaneEvent[], name: string): number {
  return events.filter((event) => event.name === name && event.event === "end")
    .length;
}

/**
 * Asserts that the attempts `runs` of one key never overlapped: each
 * started after the one before it ended, whichever process ran them.
 */
export function assertOneAtATime(runs: readonly Run[], what: string): void {
  for (let i = 1; i < runs.length; i++) {
    const before = runs[i - 1]!;
    const run = runs[i]!;
    assert.ok(
      before.end !== undefined && run.start >= before.end,
      `${what}: seq ${run.seq} (pid ${run.pid}) started at ${run.start}, before seq ${before.seq} (pid ${before.pid}) ended at ${before.end}`,
    );
  }
}
