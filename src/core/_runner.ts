// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The runner of one wrapped handler or Hono middleware. It admits tasks
// under `maxPending`, follows each chain from its handler to its end (the
// moves of its state), keeps the lists a shutdown needs (chains whose
// handler runs, chains live), and counts. Admission and counting are one
// invariant (pending = queued + running + storing), so they stay together:
// every chain ends in `#close()`, and the counts are written here only. When
// a chain starts is the scheduler's business, drains are the drains', a
// backend's hand-over is the hand-over's, giving up is the give-up's, and
// keyed tasks are the lanes' (each in a chain of its own): each tells the
// runner how a chain ended.

import type { Settled } from "./_call.ts";
import { Chain, type ChainOwner, type EndState, internals } from "./_chain.ts";
import { nameOf, type Task, waitUntil } from "./_task.ts";
import { ChainList } from "./_chain_list.ts";
import {
  closesAfter,
  requestArgumentError,
  takeReturned,
} from "./_closed_request.ts";
import { Drains } from "./_drain.ts";
import { startChain } from "./_execute.ts";
import { backendTask, handOver, type HandOverRunner } from "./_hand_over.ts";
import type { RunnerConfig } from "./_config.ts";
import { giveUpLive, giveUpOpen } from "./_give_up.ts";
import { checkKey, isKeyed } from "./_keyed_task.ts";
import { openInProcess, successorOf } from "./_in_process.ts";
import { Lanes } from "./_lanes.ts";
import { escapeControls } from "../api/_describe_task.ts";
import { report } from "./_report.ts";
import { Scheduler } from "./_scheduler.ts";
import { Tally } from "./_tally.ts";
import { isThenable } from "../util/_promise.ts";
import { QueueFullError } from "../api/queue_full_error.ts";
// What makes a chain a BackgroundTasks, for the handler it is given to.
import "./background_tasks.ts";
import type { DrainResult, TaskStats } from "../api/task_controls.ts";
import type { DrainOptions } from "../api/options.ts";
import type { BackendChain } from "../api/task_backend.ts";
import { uuidV7 } from "../util/_uuid_v7.ts";

/** Executes the chains of one wrapped handler, and counts their tasks. */
export class Runner implements ChainOwner {
  readonly #config: RunnerConfig;
  readonly #scheduler: Scheduler;
  readonly #drains: Drains;
  /** Chains with tasks whose handler runs: a shutdown deadline abandons them. */
  readonly #open = new ChainList();
  /**
   * Chains scheduled and not over: what drains wait for. In the order they
   * were made live, which is `sequence` order but for keyed tasks' chains,
   * which take their request's.
   */
  readonly #live = new ChainList();
  #sequence = 0;
  readonly #tally = new Tally();
  readonly #handOver: HandOverRunner;
  readonly #lanes: Lanes;

  constructor(config: RunnerConfig) {
    this.#config = config;
    config.telemetry?.watch(this);
    this.#drains = new Drains(config.backend);
    this.#scheduler = new Scheduler(
      config.concurrency,
      (chain) => this.#start(chain),
    );
    this.#handOver = {
      onTaskError: config.onTaskError,
      onTaskEnd: config.onTaskEnd,
      telemetry: config.telemetry,
      ended: (chain, to) => this.#close(chain, to),
      // Keyed tasks the store found a duplicate of: they leave a chain
      // being stored, not stored.
      deduplicated: (n) => this.#tally.closed("storing", "deduplicated", n),
    };
    this.#lanes = new Lanes({
      ...config,
      open: this.#open,
      live: (chain) => this.#makeLive(chain, chain.facade),
      ready: (chain, place) => this.#scheduler.ready(chain, place),
      close: (chain, to) => this.#close(chain, to),
      scheduleReturned: (chain) => this.scheduleReturned(chain),
    });
  }

  get config(): RunnerConfig {
    return this.#config;
  }

  get stats(): TaskStats {
    return this.#tally.snapshot(this.#config.backend?.status);
  }

  /**
   * Opens the chain of a request whose handler is about to run: its
   * `facade` is the request's `BackgroundTasks`. Its request is read at
   * once when a backend will weigh it as tasks are added (the message
   * carries the URL); otherwise only chains with tasks pay for reading it,
   * when their handler returns.
   */
  open(request: Request): Chain {
    const chain = new Chain();
    chain.owner = this;
    if (this.#config.backend !== undefined) this.#capture(chain, request);
    internals.created?.(chain);
    return chain;
  }

  accept(chain: Chain, task: Task): boolean {
    const { backend, maxPending } = this.#config;
    const closing = task.fn === waitUntil ? -1 : task.findArgument(closesAfter);
    if (closing !== -1) {
      return this.#refuse(chain, task, requestArgumentError(task, closing));
    }
    const keyed = isKeyed(task);
    const keyError = keyed ? checkKey(task) : undefined;
    if (keyError !== undefined) return this.#refuse(chain, task, keyError);
    // Never a fallback: a task the backend cannot take is refused, and only
    // the request's in-process chain (tasks.inProcess) runs here.
    const durable = backend !== undefined && !chain.runsHere;
    if (durable && task.defined === undefined) {
      throw new TypeError(
        `Cannot add task "${
          escapeControls(nameOf(task))
        }" as the handler's backend runs only tasks made by defineTask: make it one and list it in the backend's 'tasks', or add it to tasks.inProcess to run it in this process`,
      );
    }
    // waitUntil() adds no work, only a wait for a promise already running.
    if (this.#tally.pending >= maxPending && task.fn !== waitUntil) {
      this.#tally.refused();
      return this.#refuse(
        chain,
        task,
        new QueueFullError(nameOf(task), maxPending),
      );
    }
    if (durable) {
      // Made at the chain's first task: the id its hand-over carries.
      chain.id ??= uuidV7();
      backend.accept(
        backendTask(task),
        chain as Pick<BackendChain, "id" | "request">,
      );
    }
    // The request's context, while its handler (or a timer it set) runs.
    const { telemetry } = this.#config;
    if (telemetry !== undefined && chain.trace === undefined) {
      chain.trace = telemetry.active();
    }
    this.#tally.added();
    // In this process, a keyed task joins its key's lane, not the chain.
    if (!durable && keyed) return this.#lanes.join(chain, task);
    // The open list holds the chains with tasks only.
    if (chain.state === "open" && chain.remaining === 0) this.#open.push(chain);
    return true;
  }

  /**
   * Refuses a task: the handler can catch the error (and answer 503); past
   * it, nobody may be there to (a timer the handler left behind), so it is
   * reported.
   */
  #refuse(chain: Chain, task: Task, error: Error): false {
    if (chain.state === "open") throw error;
    report(this.#config.onTaskError, error, {
      name: nameOf(task),
      index: chain.added,
      attempt: 0,
      request: chain.request,
      delivered: chain.delivered,
    });
    return false;
  }

  successor(ended: Chain): Chain {
    return successorOf(ended, this);
  }

  scheduleReturned(chain: Chain): void {
    this.#takeOver(chain, takeReturned(chain));
  }

  inProcess(chain: Chain): object | undefined {
    if (this.#config.backend === undefined || chain.runsHere) return undefined;
    return (chain.inProcessChain ??= openInProcess(chain, this)).facade;
  }

  retried(): void {
    this.#tally.retried();
  }

  /** A task is over: it leaves the pending count (the rest, in `#close()`). */
  taskSettled(chain: Chain, outcome: Settled) {
    this.#tally.settled(outcome);
    this.#drains.count(
      chain.sequence,
      outcome === "succeeded" ? "succeeded" : "failed",
      1,
    );
  }

  finished(chain: Chain): void {
    this.#close(chain, "finished");
  }

  /**
   * Drops the tasks of a handler that failed: none of them will run, those
   * of its request's in-process chain included.
   */
  discard(chain: Chain): void {
    // Abandoned at a deadline while the handler ran: counted already.
    if (chain.state === "open") this.#close(chain, "discarded");
    if (this.#config.backend === undefined) return;
    const inProcess = chain.inProcessChain;
    if (inProcess?.state === "open") this.#close(inProcess, "discarded");
  }

  /**
   * Takes over a chain whose handler has returned its response. The request
   * is read now, while it is still open: once the response completes, Deno
   * closes it and its URL can no longer be read.
   */
  schedule(
    chain: Chain,
    request: Request,
    info: Deno.ServeHandlerInfo | undefined,
  ): void {
    if (chain.state !== "open") return;
    if (chain.remaining === 0 && chain.keyed === undefined) {
      // No task yet: one added while the response is sent, or after, will
      // schedule the chain then.
      chain.moveTo("returned");
      chain.pendingRequest = request;
      chain.serveInfo = info;
      return;
    }
    if (chain.remaining > 0) this.#open.remove(chain);
    this.#capture(chain, request);
    this.#takeOver(chain, info);
  }

  /**
   * Hands a chain to the backend before its response goes out, so that the
   * response promises only what is stored. Resolves once it is stored;
   * rejects with why it could not be (its tasks are then discarded, as a
   * failed handler's are), or with the deadline's reason when a drain gave
   * up on it.
   */
  store(chain: Chain, request: Request): Promise<void> {
    if (chain.state !== "open") {
      return Promise.reject(
        new DOMException(
          "Background task abandoned at a shutdown deadline",
          "AbortError",
        ),
      );
    }
    this.#open.remove(chain);
    this.#capture(chain, request);
    this.#storing(chain);
    this.#makeLive(chain);
    this.#scheduler.occupy();
    return handOver(chain, this.#config.backend!, true, this.#handOver);
  }

  /**
   * Waits for the chains live now, as `drain()` does; with `open`, a
   * deadline also abandons the chains whose handler still runs (at a
   * shutdown, their responses will not go out).
   */
  drain(
    options: DrainOptions & { open?: boolean } = {},
  ): Promise<DrainResult> {
    const drained = this.#drains.begin(
      this.#sequence,
      this.#live.size,
      options,
      this.#giveUp,
    );
    return options.open
      ? drained.then((result) =>
        options.signal?.aborted
          ? giveUpOpen(this.#open, result, this.#abandon)
          : result
      )
      : drained;
  }

  #capture(chain: Chain, request: Request): void {
    if (chain.url !== undefined) return;
    chain.method = request.method;
    chain.url = request.url;
  }

  /**
   * Makes a chain live. A keyed task's chain takes the sequence of its
   * request's first chain, once that has been live: a drain under way that
   * waits for the request waits for the keyed tasks its tasks add, as it
   * waits for the plain tasks they add to their chain.
   */
  #makeLive(chain: Chain, request?: Chain): void {
    const sequence = request?.sequence ?? 0;
    if (sequence === 0) chain.sequence = ++this.#sequence;
    else {
      chain.sequence = sequence;
      this.#drains.joined(sequence);
    }
    this.#live.push(chain);
  }

  /** Makes a chain live, and ready once its response has been sent. */
  #takeOver(chain: Chain, info: Deno.ServeHandlerInfo | undefined): void {
    chain.moveTo("waiting");
    this.#makeLive(chain);
    if (chain.keyed !== undefined) this.#lanes.takeOver(chain);
    // `completed` is created lazily by Deno, so it is only touched for
    // requests that have tasks. Both outcomes are handled at once: a
    // rejection (HTTP/2 client gone) left unhandled would end the process.
    const completed: unknown = info?.completed;
    if (isThenable(completed)) {
      try {
        // Bound functions, not closures: a pending request holds 56 bytes
        // less (measured in bench/memory.ts).
        completed.then(delivered.bind(chain), undelivered.bind(chain));
        return;
      } catch {
        // A `then` that cannot be read or called (not Deno's): no signal.
      }
    }
    this.sent(chain, chain.delivered);
  }

  /** A chain's response has been sent, or not: it may start. */
  sent(chain: Chain, delivered: boolean | undefined): void {
    // Given up on at a deadline meanwhile.
    if (chain.state !== "waiting") return;
    chain.delivered = delivered;
    if (chain.keyed !== undefined) this.#lanes.sent(chain);
    if (delivered === false && this.#config.skipUndelivered) {
      this.#close(chain, "skipped");
    } else if (chain.remaining === 0) {
      // Its tasks all left for their keys' lanes.
      this.#close(chain, "finished");
    } else this.#scheduler.ready(chain);
  }

  /** Starts a chain in the slot the scheduler gave it. */
  #start(chain: Chain): void {
    const { backend, ambient } = this.#config;
    if (backend !== undefined && !chain.runsHere) {
      this.#storing(chain);
      handOver(chain, backend, false, this.#handOver);
      return;
    }
    chain.moveTo("running");
    this.#tally.started("running", 1);
    if (ambient === undefined) startChain(chain, this.#config);
    else ambient.run(chain.facade!, () => startChain(chain, this.#config));
  }

  #storing(chain: Chain): void {
    chain.moveTo("storing");
    this.#tally.started("storing", chain.remaining);
  }

  /** Gives up on the live chains up to `last`, at a drain's deadline. */
  #giveUp = (last: number, reason: unknown): void => {
    this.#scheduler.holding(() =>
      giveUpLive(this.#live, last, reason, this.#abandon)
    );
  };

  #abandon = (chain: Chain): void => this.#close(chain, "abandoned");

  /**
   * Ends a chain: every move to an end state is made here. Its tasks not
   * over leave the pending count (each task that is over left it as it
   * settled, in `taskSettled()`), counted as the tally's table says; the
   * drains waiting for it count them and, if it was live, stop waiting for
   * it; it leaves its list; and the slot it held, if any, is freed.
   */
  #close(chain: Chain, to: EndState): void {
    const from = chain.state;
    const n = chain.remaining;
    chain.moveTo(to);
    this.#tally.closed(from, to, n);
    if (chain.lane !== undefined || chain.keyed !== undefined) {
      this.#lanes.closed(chain, to);
    }
    if (from === "open") {
      if (n > 0) this.#open.remove(chain);
      return;
    }
    const { sequence } = chain;
    if (to === "abandoned") {
      this.#drains.abandoned(sequence, chain.unfinished(), from === "storing");
    } else if (to === "handedOver") {
      this.#drains.count(sequence, "handedOver", n);
    } else if (to === "finished") this.#drains.count(sequence, "failed", n);
    this.#live.remove(chain);
    this.#drains.ended(sequence);
    if (from === "running" || from === "storing") this.#scheduler.freed();
  }
}

/** `completed` resolved: the chain (`this`) may start, its response delivered. */
function delivered(this: Chain): void {
  (this.owner as Runner).sent(this, true);
}

/** `completed` rejected (an HTTP/2 client gone): the chain (`this`) may start. */
function undelivered(this: Chain): void {
  (this.owner as Runner).sent(this, false);
}
