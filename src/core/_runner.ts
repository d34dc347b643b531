// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The runner of one wrapped handler or Hono middleware. It admits tasks
// under `maxPending`, follows each chain from its handler to its end (the
// moves of its state), keeps the lists a shutdown needs (chains whose
// handler runs, chains live), and counts. Admission and counting are one
// invariant (pending = queued + running + storing), so they stay together; when a
// chain starts is the scheduler's business, drains are the drains', and a
// backend's hand-over is the hand-over's.

import {
  Chain,
  type ChainOwner,
  nameOf,
  type Task,
  waitUntil,
} from "./_chain.ts";
import { ChainList } from "./_chain_list.ts";
import { Drains } from "./_drain.ts";
import { startChain } from "./_execute.ts";
import { backendTask, handOver, type HandOverBooks } from "./_hand_over.ts";
import type { RunnerConfig } from "./_config.ts";
import { giveUpLive, giveUpOpen } from "./_give_up.ts";
import { escapeControls } from "../api/_describe_task.ts";
import { report } from "./_report.ts";
import { Scheduler } from "./_scheduler.ts";
import { Tally } from "./_tally.ts";
import { isThenable } from "../util/_promise.ts";
import { QueueFullError } from "../api/queue_full_error.ts";
import type {
  DrainOptions,
  DrainResult,
  TaskStats,
} from "../api/task_controls.ts";
import type { BackendChain, TaskBackend } from "../api/task_backend.ts";

/**
 * Whether a task's argument stops working once the response is sent: Deno
 * closes the request then (its URL, headers and body throw "Request
 * closed" unless read before), and a request's body stream can no longer be
 * read past what had arrived. Headers once read, and what was read from the
 * body (a Blob, FormData, JSON), stay readable, as a Response does. Any
 * ReadableStream counts: that of a request cannot be told from others, and
 * a task that needs another can open it itself.
 */
function closesAfter(argument: unknown): boolean {
  return argument instanceof Request || argument instanceof ReadableStream;
}

function requestArgumentError(task: Task, index: number): TypeError {
  const argument = task.args[index];
  return new TypeError(
    `Cannot add task "${escapeControls(nameOf(task))}" as argument ${index} ${
      argument instanceof Request
        ? "is a Request, which Deno closes once the response is sent: read what the task needs in the handler and pass that instead"
        : "is a ReadableStream, which a request's body is and which cannot be read once the response is sent: read it in the handler (await request.arrayBuffer(), say) and pass that instead"
    }`,
  );
}

/** Executes the chains of one wrapped handler, and counts their tasks. */
export class Runner implements ChainOwner {
  readonly #config: RunnerConfig;
  readonly #scheduler: Scheduler;
  readonly #drains: Drains;
  /** Chains with tasks whose handler runs: a shutdown deadline abandons them. */
  readonly #open = new ChainList();
  /** Chains scheduled and not over, in `sequence` order: what drains wait for. */
  readonly #live = new ChainList();
  #sequence = 0;
  readonly #tally = new Tally();
  readonly #books: HandOverBooks;

  constructor(config: RunnerConfig) {
    this.#config = config;
    config.telemetry?.watch(this);
    this.#drains = new Drains(config.backend);
    this.#scheduler = new Scheduler(
      config.concurrency,
      (chain) => this.#start(chain),
    );
    this.#books = {
      tally: this.#tally,
      drains: this.#drains,
      onTaskError: config.onTaskError,
      telemetry: config.telemetry,
      end: (chain) => this.#end(chain, true),
    };
  }

  get stats(): TaskStats {
    return this.#tally.snapshot(this.#config.backend?.status);
  }

  /** Where chains go instead of running here, if anywhere: serve() closes it. */
  get backend(): TaskBackend | undefined {
    return this.#config.backend;
  }

  /**
   * Reads a new chain's request at once when a backend will weigh it as
   * tasks are added (the message carries the URL); otherwise only chains
   * with tasks pay for reading it, when their handler returns.
   */
  opened(chain: Chain, request: Request): void {
    if (this.#config.backend === undefined) return;
    chain.method = request.method;
    chain.url = request.url;
  }

  accept(chain: Chain, task: Task): boolean {
    const { backend, maxPending } = this.#config;
    const closing = task.fn === waitUntil ? -1 : task.findArgument(closesAfter);
    if (closing !== -1) {
      return this.#refuse(chain, task, requestArgumentError(task, closing));
    }
    if (backend !== undefined) {
      if (task.fn === waitUntil) {
        throw new TypeError(
          "Cannot wait until as the handler's backend runs tasks in other processes, which cannot wait for a promise of this one: await it in the handler, or make the work a task with defineTask",
        );
      }
      if (task.defined === undefined) {
        throw new TypeError(
          `Cannot add task "${
            escapeControls(nameOf(task))
          }" as the handler's backend runs only tasks made by defineTask`,
        );
      }
    }
    // waitUntil() adds no work, only a wait for a promise already running.
    if (this.#tally.pending >= maxPending && task.fn !== waitUntil) {
      this.#tally.dropped("refused", 1);
      return this.#refuse(
        chain,
        task,
        new QueueFullError(nameOf(task), maxPending),
      );
    }
    if (backend !== undefined) {
      // Made at the chain's first task: the id its hand-over carries.
      chain.id ??= crypto.randomUUID();
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
    this.#tally.pending++;
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
      index: chain.size,
      attempt: 0,
      request: chain.request,
      delivered: chain.delivered,
    });
    return false;
  }

  successor(ended: Chain): Chain {
    const chain = new Chain();
    chain.owner = this;
    chain.facade = ended.facade;
    chain.method = ended.method;
    chain.url = ended.url;
    chain.delivered = ended.delivered;
    if (ended.trace !== undefined) chain.trace = ended.trace;
    // Its tasks are numbered after the request's earlier ones.
    chain.size = chain.position = ended.size;
    chain.moveTo("returned");
    return chain;
  }

  scheduleReturned(chain: Chain): void {
    const { source, serveInfo } = chain;
    chain.source = chain.serveInfo = undefined;
    if (chain.url === undefined && source !== undefined) {
      try {
        chain.method = source.method;
        chain.url = source.url;
      } catch {
        // Closed: its response has completed. Reports go without the request.
      }
    }
    // Deno never settles an info.completed first asked for after its
    // response completed: a chain whose request is closed by then goes on
    // without waiting for it.
    this.#takeOver(chain, isClosed(serveInfo) ? undefined : serveInfo);
  }

  retried(): void {
    this.#tally.retried();
  }

  taskSettled(chain: Chain, outcome: "succeeded" | "failed" | "timedOut") {
    this.#tally.settled(outcome);
    this.#drains.count(
      chain.sequence,
      outcome === "succeeded" ? "succeeded" : "failed",
      1,
    );
  }

  finished(chain: Chain): void {
    this.#tally.running--;
    this.#end(chain, true);
  }

  /** Drops the tasks of a handler that failed: none of them will run. */
  discard(chain: Chain): void {
    // Abandoned at a deadline while the handler ran: counted already.
    if (chain.state !== "open") return;
    if (chain.remaining > 0) this.#open.remove(chain);
    this.#tally.dropped("discarded", chain.remaining);
    chain.moveTo("discarded");
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
    if (chain.remaining === 0) {
      // No task yet: one added while the response is sent, or after, will
      // schedule the chain then.
      chain.moveTo("returned");
      chain.source = request;
      chain.serveInfo = info;
      return;
    }
    this.#open.remove(chain);
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
    chain.moveTo("storing");
    this.#makeLive(chain);
    this.#scheduler.occupy();
    return handOver(chain, this.#config.backend!, true, this.#books);
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
          ? giveUpOpen(this.#open, this.#tally, result)
          : result
      )
      : drained;
  }

  #capture(chain: Chain, request: Request): void {
    if (chain.url !== undefined) return;
    chain.method = request.method;
    chain.url = request.url;
  }

  #makeLive(chain: Chain): void {
    chain.sequence = ++this.#sequence;
    this.#live.push(chain);
  }

  /** Makes a chain live, and ready once its response has been sent. */
  #takeOver(chain: Chain, info: Deno.ServeHandlerInfo | undefined): void {
    chain.moveTo("waiting");
    this.#makeLive(chain);
    // `completed` is created lazily by Deno, so it is only touched for
    // requests that have tasks. Both outcomes are handled at once: a
    // rejection (HTTP/2 client gone) left unhandled would end the process.
    const completed: unknown = info?.completed;
    if (isThenable(completed)) {
      try {
        completed.then(
          () => this.#sent(chain, true),
          () => this.#sent(chain, false),
        );
        return;
      } catch {
        // A `then` that cannot be read or called (not Deno's): no signal.
      }
    }
    this.#sent(chain, chain.delivered);
  }

  #sent(chain: Chain, delivered: boolean | undefined): void {
    // Given up on at a deadline meanwhile.
    if (chain.state !== "waiting") return;
    chain.delivered = delivered;
    if (delivered === false && this.#config.skipUndelivered) {
      this.#tally.dropped("skipped", chain.remaining);
      chain.moveTo("skipped");
      this.#end(chain, false);
      return;
    }
    this.#scheduler.ready(chain);
  }

  /** Starts a chain in the slot the scheduler gave it. */
  #start(chain: Chain): void {
    const { backend, storage } = this.#config;
    if (backend !== undefined) {
      chain.moveTo("storing");
      handOver(chain, backend, false, this.#books);
      return;
    }
    chain.moveTo("running");
    this.#tally.running++;
    if (storage === undefined) startChain(chain, this.#config);
    else storage.run(chain.facade!, () => startChain(chain, this.#config));
  }

  /** Gives up on the live chains up to `last`, at a drain's deadline. */
  #giveUp = (last: number, reason: unknown): void => {
    const slots = giveUpLive(
      this.#live,
      last,
      reason,
      this.#tally,
      this.#drains,
    );
    for (let slot = 0; slot < slots; slot++) this.#scheduler.freed();
  };

  /** Forgets a chain that has ended; `active` if it held a slot. */
  #end(chain: Chain, active: boolean): void {
    this.#live.remove(chain);
    this.#drains.ended(chain.sequence);
    if (active) this.#scheduler.freed();
  }
}

/**
 * Whether Deno has closed the request `info` came with, its response
 * completed: its `remoteAddr` then throws, read before or not (Deno 2.9).
 * Another `info` (a test's, an adapter's) is taken as open.
 */
function isClosed(info: Deno.ServeHandlerInfo | undefined): boolean {
  try {
    void info?.remoteAddr;
    return false;
  } catch {
    return true;
  }
}
