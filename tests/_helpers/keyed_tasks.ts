// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Keyed tasks for the tests of keyed tasks on a durable backend, one per
 * mode, which the test's web side adds and its worker processes run
 * (tests/_helpers/keyed_worker.ts). Each prints a JSON line when it starts
 * and when it ends, with its key, its sequence number and the time (epoch
 * milliseconds, comparable across processes), for the test to check order
 * and overlap from outside.
 *
 * @module
 */

import { type DefinedTask, defineTask } from "../../mod.ts";

/** A line a task prints. */
export interface LaneEvent {
  readonly event: "start" | "end";
  readonly name: string;
  readonly id: string;
  readonly key: string;
  readonly seq: number;
  readonly attempt: number;
  readonly at: number;
  readonly pid: number;
}

/** A task's arguments: its key, its sequence number, how long it works. */
type Args = [key: string, seq: number, work?: number];

/** The `delay` of `laneReplace`, in milliseconds. */
export const REPLACE_DELAY = 1_500;

/**
 * The tasks, whose attempts take `work` milliseconds, or the milliseconds
 * of their third argument; with `hang`, an attempt of `laneQueue` with
 * sequence number 0 never ends (until the process is killed).
 */
export function keyedTasks(
  { work = 0, hang = false }: { work?: number; hang?: boolean } = {},
): {
  laneQueue: DefinedTask<Args>;
  laneSkip: DefinedTask<Args>;
  laneReplace: DefinedTask<Args>;
  laneReplaceNow: DefinedTask<Args>;
} {
  const body = (name: string) =>
  async (
    { id, attempt }: { id?: string; attempt: number },
    key: string,
    seq: number,
    ms = work,
  ): Promise<void> => {
    const line = (event: "start" | "end") =>
      console.log(JSON.stringify({
        event,
        name,
        id,
        key,
        seq,
        attempt,
        at: performance.timeOrigin + performance.now(),
        pid: Deno.pid,
      }));
    line("start");
    if (hang && name === "laneQueue" && seq === 0) {
      await new Promise(() => {});
    }
    if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
    line("end");
  };
  const key = (key: string) => key;
  return {
    laneQueue: defineTask(body("laneQueue"), { name: "laneQueue", key }),
    laneSkip: defineTask(body("laneSkip"), {
      name: "laneSkip",
      key,
      onDuplicate: "skip",
    }),
    laneReplace: defineTask(body("laneReplace"), {
      name: "laneReplace",
      key,
      onDuplicate: "replace",
      delay: REPLACE_DELAY,
    }),
    laneReplaceNow: defineTask(body("laneReplaceNow"), {
      name: "laneReplaceNow",
      key,
      onDuplicate: "replace",
    }),
  };
}
