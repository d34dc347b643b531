// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One request's tasks as the runner sees them: a queue of tasks, and a life
// cycle whose states are named here, with the moves allowed between them in
// one table. Every guard elsewhere reads a state, never a set of flags.

import type { Settled } from "./_call.ts";
import type { ExecutionConfig } from "./_config.ts";
import type { RequestSummary, TaskResult } from "../api/task_info.ts";
import type { OtelContext } from "./_telemetry.ts";
import { nameOf, type Task } from "./_task.ts";

/**
 * Where a chain is in its life:
 *
 * - `open`: its handler runs, and tasks join it;
 * - `returned`: its handler returned without adding a task; the first task
 *   added later (while the response is sent, or after) schedules it;
 * - `waiting`: live, waiting for its response to be sent (a keyed task's
 *   chain, also for its turn in its key's lane and for its delay);
 * - `queued`: live, its response sent, waiting for the timer shared by the
 *   chains that became ready in the same turn, then for a free slot under
 *   `concurrency`;
 * - `running`: live, its tasks run one after another;
 * - `storing`: live, a backend is storing it;
 * - and the end states: `finished` (every task ran, or left for its key's
 *   lane, or a backend failed to store it after its response), `handedOver`
 *   (a backend stored it), `discarded` (its handler failed, or it could not
 *   be stored before its response), `skipped` (its response was not
 *   delivered), `deduplicated` (a keyed task's chain whose place a
 *   duplicate took) and `abandoned` (given up at a deadline).
 */
export type ChainState =
  | "open"
  | "returned"
  | "waiting"
  | "queued"
  | "running"
  | "storing"
  | "finished"
  | "handedOver"
  | "discarded"
  | "skipped"
  | "deduplicated"
  | "abandoned";

/**
 * The states a chain ends in. Only the runner moves a chain to one (its
 * `#close()`), except `finished` for a chain of `new BackgroundTasks()`,
 * which has no runner.
 */
export type EndState = Extract<
  ChainState,
  | "finished"
  | "handedOver"
  | "discarded"
  | "skipped"
  | "deduplicated"
  | "abandoned"
>;

/** The moves a chain may make from each state; any other is a bug of ours. */
const MOVES: { readonly [S in ChainState]: readonly ChainState[] } = {
  // A chain of `new BackgroundTasks()` runs straight from open with run().
  open: ["returned", "waiting", "storing", "running", "discarded", "abandoned"],
  returned: ["waiting"],
  waiting: ["queued", "finished", "skipped", "deduplicated", "abandoned"],
  queued: ["running", "storing", "deduplicated", "abandoned"],
  running: ["finished", "abandoned"],
  storing: ["handedOver", "finished", "discarded", "abandoned"],
  finished: [],
  handedOver: [],
  discarded: [],
  skipped: [],
  deduplicated: [],
  abandoned: [],
};

/** The same table, as lookups: a move is checked on every step of a chain. */
const ALLOWED = Object.fromEntries(
  Object.entries(MOVES).map(([from, to]) => [
    from,
    Object.fromEntries(to.map((state) => [state, true])),
  ]),
) as { readonly [S in ChainState]: { readonly [T in ChainState]?: true } };

/**
 * The runner that owns a chain, told about every step so that it can count,
 * refuse and report work.
 */
export interface ChainOwner {
  /** How its chains' tasks run and are reported. */
  readonly config: ExecutionConfig;
  /**
   * Called before a task joins: throws to refuse it to the caller, or
   * returns `false` when it refused it and reported why (past the handler,
   * where nobody may catch an error).
   */
  accept(chain: Chain, task: Task): boolean;
  /** The first task of a chain whose handler had returned is in it. */
  scheduleReturned(chain: Chain): void;
  /** A failed attempt will be retried. */
  retried(chain: Chain): void;
  /** A task is over, after its last attempt. */
  taskSettled(
    chain: Chain,
    outcome: Settled,
  ): void;
  /** The chain has run its last task: the owner moves it to `finished`. */
  finished(chain: Chain): void;
  /**
   * Makes the chain that a task added to an ended chain starts: a chain of
   * its own for the same request, which runs as soon as it can.
   */
  successor(ended: Chain): Chain;
  /**
   * The public face of the request's in-process chain (`tasks.inProcess`),
   * made on first use, for a chain whose tasks go to a backend; `undefined`
   * for any other chain, whose tasks run in this process already.
   */
  inProcess(chain: Chain): object | undefined;
}

/**
 * The runner's view of one request's tasks. {@linkcode BackgroundTasks} is
 * its public face.
 */
export class Chain {
  state: ChainState = "open";
  /**
   * The first task not yet over: the one running, or the next to run. Tasks
   * form a linked list, so a chain of one task costs no array, and a task is
   * released as soon as it is over.
   */
  head: Task | undefined = undefined;
  #tail: Task | undefined = undefined;
  /** How many tasks have been added (for a successor, since the request began). */
  added = 0;
  /** How many are over: the index of `head`. */
  position = 0;
  /** The runner, set by a wrapper before its handler runs. */
  owner: ChainOwner | undefined = undefined;
  /** The order in which the runner made it live, from 1; drains compare it. */
  sequence = 0;
  /** Neighbours in the runner's open list, then in its live list. */
  previous: Chain | undefined = undefined;
  next: Chain | undefined = undefined;
  /** Method and URL of the request, captured while its handler ran. */
  method: string | undefined = undefined;
  url: string | undefined = undefined;
  /** Whether the response reached the client; `undefined` when nobody said. */
  delivered: boolean | undefined = undefined;
  /**
   * While a plain task's promise is awaited: how many tasks the chain ran in
   * a row before it, which the event loop's turn counts on.
   */
  runInTurn = 0;
  /**
   * What few chains need, in an object of its own made on first use, so
   * that thousands of chains waiting on long tasks hold less memory.
   */
  #rare: ChainExtras | undefined = undefined;
  /**
   * On a keyed task's chain (_lanes.ts), its lane: the chains of its
   * duplicates not over, in the order they were added. Absent from any
   * other chain, which holds no field for it.
   */
  declare readonly lane?: readonly Chain[];

  /**
   * Sets a rare field; clearing one of a chain without any makes nothing.
   * Static: an instance's private method costs every chain a slot (its
   * brand; measured in bench/heap_by_constructor.ts).
   */
  static #write<K extends keyof ChainExtras>(
    chain: Chain,
    key: K,
    value: ChainExtras[K],
  ): void {
    if (value === undefined && chain.#rare === undefined) return;
    (chain.#rare ??= new ChainExtras())[key] = value;
  }

  /** The request of a `returned` chain, until its first task. */
  get pendingRequest(): Request | undefined {
    return this.#rare?.pendingRequest;
  }
  set pendingRequest(request: Request | undefined) {
    Chain.#write(this, "pendingRequest", request);
  }

  /** The info of a `returned` chain, until its first task. */
  get serveInfo(): Deno.ServeHandlerInfo | undefined {
    return this.#rare?.serveInfo;
  }
  set serveInfo(info: Deno.ServeHandlerInfo | undefined) {
    Chain.#write(this, "serveInfo", info);
  }

  /** Made on first use: with a task's index, the task's stable id. */
  get id(): string | undefined {
    return this.#rare?.id;
  }
  set id(id: string | undefined) {
    Chain.#write(this, "id", id);
  }

  /** Each task's result, when someone asked for them (`run()`, tests). */
  get results(): TaskResult[] | undefined {
    return this.#rare?.results;
  }
  set results(results: TaskResult[] | undefined) {
    Chain.#write(this, "results", results);
  }

  /**
   * Aborted when the runner gives up on the chain: running attempts, their
   * timeouts, retry delays and a backend's attempts to store it all end.
   */
  get signal(): AbortSignal {
    return ((this.#rare ??= new ChainExtras()).controller ??=
      new AbortController())
      .signal;
  }

  /**
   * With telemetry on, the context active when the chain's first task was
   * added: its request's, which its tasks' spans are children of.
   */
  get trace(): OtelContext | undefined {
    return this.#rare?.trace;
  }
  set trace(context: OtelContext | undefined) {
    Chain.#write(this, "trace", context);
  }

  /**
   * With a backend: the request's in-process chain, once `tasks.inProcess`
   * made it (on a successor, its request's).
   */
  get inProcessChain(): Chain | undefined {
    return this.#rare?.inProcess;
  }
  set inProcessChain(chain: Chain | undefined) {
    Chain.#write(this, "inProcess", chain);
  }

  /**
   * The `BackgroundTasks` its handler was given, for ambient access while
   * it runs: the chain itself, but for a chain a late task started, whose
   * request's first chain it is.
   */
  get facade(): Chain {
    return this.#rare?.facade ?? this;
  }
  set facade(chain: Chain) {
    Chain.#write(this, "facade", chain === this ? undefined : chain);
  }

  /**
   * The chain a task added to this one now joins: itself, or, once it has
   * ended, the chain the latest late task started.
   */
  get current(): Chain {
    return this.#rare?.current ?? this;
  }
  set current(chain: Chain) {
    Chain.#write(this, "current", chain);
  }

  /**
   * With keyed tasks (_lanes.ts): on the chain they were added to, those
   * that wait for it to be handed over and sent; on the request's
   * `facade`, how many were added.
   */
  get keyed(): KeyedTasks | undefined {
    return this.#rare?.keyed;
  }
  set keyed(keyed: KeyedTasks | undefined) {
    Chain.#write(this, "keyed", keyed);
  }

  /** The promise of `run()`, which runs the tasks once. */
  get running(): Promise<TaskResult[]> | undefined {
    return this.#rare?.running;
  }
  set running(promise: Promise<TaskResult[]> | undefined) {
    Chain.#write(this, "running", promise);
  }

  /**
   * With a backend: whether this chain runs in this process (it is a
   * request's `tasks.inProcess`) rather than going to the backend.
   */
  get runsHere(): boolean {
    return this.#rare?.runsHere ?? false;
  }
  set runsHere(here: boolean) {
    Chain.#write(this, "runsHere", here || undefined);
  }

  /** The controller behind `signal`, if anyone asked for it. */
  get controller(): AbortController | undefined {
    return this.#rare?.controller;
  }

  /** Whether tasks can still join: not ended, and not being stored. */
  get accepting(): boolean {
    return MOVES[this.state].length > 0 && this.state !== "storing";
  }

  /** The request as reports show it. */
  get request(): RequestSummary | undefined {
    if (this.url === undefined) return undefined;
    return { method: this.method!, url: this.url };
  }

  /** How many tasks are not over, the running one included. */
  get remaining(): number {
    return this.added - this.position;
  }

  /** Moves to `state`; throws if the table above does not allow it. */
  moveTo(state: ChainState): void {
    if (ALLOWED[this.state][state] !== true) {
      throw new Error(
        `Cannot move a chain from "${this.state}" to "${state}"`,
      );
    }
    this.state = state;
  }

  add(task: Task): void {
    if (!this.accepting) {
      throw new Error(
        "Cannot add task as the request's tasks have already run",
      );
    }
    if (this.owner !== undefined && !this.owner.accept(this, task)) return;
    if (this.#tail === undefined) this.head = task;
    else this.#tail.next = task;
    this.#tail = task;
    this.added++;
    if (this.state === "returned") this.owner!.scheduleReturned(this);
  }

  /** Lets go of the head once its task is over; the next task becomes the head. */
  advance(): void {
    this.head = this.head!.next;
    if (this.head === undefined) this.#tail = undefined;
    this.position++;
  }

  /** Lets go of every task, as a backend that took them over does. */
  release(): void {
    this.head = this.#tail = undefined;
    this.position = this.added;
  }

  /** The names of the tasks that are not over, the running one included. */
  unfinished(): string[] {
    const names: string[] = [];
    for (let task = this.head; task !== undefined; task = task.next) {
      names.push(nameOf(task));
    }
    return names;
  }
}

/** A chain's fields that few chains use (see `Chain`). */
class ChainExtras {
  pendingRequest: Request | undefined = undefined;
  serveInfo: Deno.ServeHandlerInfo | undefined = undefined;
  id: string | undefined = undefined;
  results: TaskResult[] | undefined = undefined;
  controller: AbortController | undefined = undefined;
  trace: OtelContext | undefined = undefined;
  inProcess: Chain | undefined = undefined;
  runsHere: true | undefined = undefined;
  facade: Chain | undefined = undefined;
  current: Chain | undefined = undefined;
  running: Promise<TaskResult[]> | undefined = undefined;
  keyed: KeyedTasks | undefined = undefined;
}

/** A request's keyed tasks, as a chain holds them (see `Chain.keyed`). */
export class KeyedTasks {
  /** How many were added to the request, on its `facade`. */
  added = 0;
  /** The chains of those that wait for this chain to be handed over and sent. */
  waiting: Chain[] = [];
}

/** Hooks into the making of chains. */
export const internals = {} as {
  /**
   * Told about each chain a wrapper creates, while set: how the testing
   * helper finds the chain of the request it makes.
   */
  created?: ((chain: Chain) => void) | undefined;
};
