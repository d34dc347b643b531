// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What the BullMQ backend (web side) and its workers share: the shape of a
// job, the name of the backoff strategy, and the checks of the options both
// take.

import { describe } from "./_util.ts";
import type { RequestSummary } from "./task_info.ts";

/** What a job carries. */
export interface JobData {
  chain: string;
  index: number;
  args: unknown[];
  request?: RequestSummary;
  delivered?: boolean;
}

/** The backoff strategy whose delays the task's retry policy computes. */
export const BACKOFF = "background-tasks";

/** Throws a `TypeError` unless `name` is a non-empty string. */
export function assertQueueName(name: unknown, action: string): void {
  if (typeof name !== "string" || name === "") {
    throw new TypeError(
      `${action} as 'queue' must be a non-empty string: current value is ${
        describe(name)
      }`,
    );
  }
}

/** Throws a `TypeError` unless `connection` is an object. */
export function assertConnection(connection: unknown, action: string): void {
  if (typeof connection !== "object" || connection === null) {
    throw new TypeError(
      `${action} as 'connection' must be an object: current value is ${
        describe(connection)
      }`,
    );
  }
}
