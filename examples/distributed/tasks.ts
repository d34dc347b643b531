// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * The tasks the web process adds and the workers run: one module imported by
 * both, so that names, timeouts and retry policies agree. Each stands in for
 * real work that takes `WORK_MS` milliseconds (20 by default).
 *
 * @module
 */

import { defineTask, type TaskContext } from "../../mod.ts";

const workMs = Number(Deno.env.get("WORK_MS") ?? 20);

function work({ signal }: TaskContext): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, workMs);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}

/** Sends the welcome email; its context's id is the idempotency key. */
export const sendWelcomeEmail = defineTask(
  (context, _email: string) => work(context),
  {
    name: "sendWelcomeEmail",
    timeout: 10_000,
    retry: { maxAttempts: 5, minDelay: 200 },
  },
);

/** Renders the new user's avatar. */
export const createAvatar = defineTask(
  (context, _email: string) => work(context),
  { name: "createAvatar", timeout: 30_000 },
);

/** Tells the team on chat. */
export const notifyTeam = defineTask(
  (context, _email: string) => work(context),
  { name: "notifyTeam", retry: { maxAttempts: 3, minDelay: 500 } },
);

/** Every task, for the backend and the workers. */
export const tasks = [sendWelcomeEmail, createAvatar, notifyTeam];
