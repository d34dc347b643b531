// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV backend's failed tasks, as its failed() and retry() see them: the
// ones its consumer wrote, and the messages Deno KV gave up delivering,
// filed among them when found; and a retry, a chain of its own that keeps
// the task's id and index.

import {
  commitRetrying,
  enqueueStep,
  firstStep,
  identity,
  isStepGroup,
  type Progress,
  type Step,
  type StepGroup,
  type StepQueue,
} from "./_step.ts";
import { describe } from "../util/_assert.ts";
import type { Lanes } from "./_keyed.ts";
import { uuidV7 } from "../util/_uuid_v7.ts";
import type { KvFailedTask } from "./kv_failed_task.ts";

/**
 * The failed tasks, newest first, each with where it is kept; those Deno KV
 * gave up delivering are filed among them first. Deno KV keeps such a
 * message under its `keysIfUndelivered` key and says nothing, not even
 * when: each is filed in one atomic operation checked against it (so that
 * two processes file it once), dated when it was found. Of a message of
 * several steps, only those still where their chain stands are filed: a
 * delivery may have run some before the others failed it.
 */
export async function listFailed(
  store: StepQueue,
): Promise<Deno.KvEntry<KvFailedTask>[]> {
  const { kv, keys } = store;
  for await (
    const entry of kv.list<Step | StepGroup>({ prefix: keys.undelivered() })
  ) {
    let operation = kv.atomic().check(entry).delete(entry.key);
    const at = new Date();
    if (isStepGroup(entry.value)) {
      for (const step of entry.value.steps) {
        const { value } = await kv.get<Progress>(keys.progress(step.chain));
        if (value?.index !== step.index || value.attempt !== step.attempt) {
          continue;
        }
        operation = operation.set(
          keys.failed(step.chain, step.index),
          undelivered(step, at),
        );
      }
    } else {
      const step = entry.value;
      operation = operation.set(
        keys.failed(step.chain, step.index),
        undelivered(step, at),
      );
    }
    await commitRetrying(operation);
  }
  const entries: Deno.KvEntry<KvFailedTask>[] = [];
  for await (const entry of kv.list<KvFailedTask>({ prefix: keys.failed() })) {
    entries.push(entry);
  }
  // By when, then by commit: a commit can wait on another process's lock.
  return entries.sort((a, b) =>
    b.value.at.getTime() - a.value.at.getTime() ||
    (a.versionstamp < b.versionstamp
      ? 1
      : a.versionstamp > b.versionstamp
      ? -1
      : 0)
  );
}

/** The failed task of a step Deno KV gave up delivering, found `at`. */
function undelivered(step: Step, at: Date): KvFailedTask {
  const { name, args } = step.tasks[step.index]!;
  return {
    ...identity(step),
    reason: "undelivered",
    name,
    args,
    attempts: step.attempt,
    error: "Deno KV gave up delivering the task",
    request: step.request,
    at,
    ...(step.key === undefined ? {} : { key: step.key }),
  };
}

/**
 * Puts the failed task `id` back on the queue, as a chain of its own under
 * the same id and index, with a fresh attempt count, and removes it, in one
 * operation checked against it: of two retries at once, the second finds
 * it gone.
 *
 * @returns Whether it was a failed task, and this call retried it.
 * @throws {TypeError} If `id` is not a string.
 */
export async function retryFailed(
  store: StepQueue,
  id: unknown,
  lanes: Lanes,
): Promise<boolean> {
  if (typeof id !== "string") {
    throw new TypeError(
      `Cannot retry task as 'id' must be a string: current value is ${
        describe(id)
      }`,
    );
  }
  const entry = (await listFailed(store)).find(({ value }) => value.id === id);
  if (entry === undefined) return false;
  const { name, args, index, request, key } = entry.value;
  const step = firstStep(uuidV7(), [{ name, args: [...args], id, index }], {
    ...(request === undefined ? {} : { request }),
  });
  // A keyed task goes back in its lane: never beside a duplicate running.
  if (key !== undefined) {
    return lanes.retry(entry, { ...step, key });
  }
  const operation = enqueueStep(store.kv.atomic().check(entry), store, step)
    .delete(entry.key);
  return (await commitRetrying(operation)).ok;
}
