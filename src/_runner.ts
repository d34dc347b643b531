// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { BackendTask } from "./backend_chain.ts";
import type { TaskBackend } from "./task_backend.ts";
import type { DefinedTask } from "./define_task.ts";
import { Chain, type ChainOwner, nameOf, type Task } from "./_chain.ts";
import { abandonChain, reportFailure, startChain } from "./_execute.ts";
import type { RunnerConfig } from "./_options.ts";
import type { DrainOptions, DrainResult, TaskStats } from "./task_controls.ts";
import { QueueFullError } from "./queue_full_error.ts";
import { isThenable, MAX_TIMER_DELAY, toPromise } from "./_util.ts";

interface DrainWaiter {
  /** The chains it waits for: those taken over up to this sequence number. */
  last: number;
  /** How many of them are still live. */
  remaining: number;
  succeeded: number;
  failed: number;
  enqueued: number;
  abandoned: number;
  abandonedTasks: Record<string, number>;
  resolve: (result: DrainResult) => void;
  cleanup: () => void;
}

/**
 * Executes the chains of one wrapped handler: it waits until each response
 * has been sent, starts the chains on a timer shared by every request of the
 * same event-loop turn, runs at most `concurrency` of them at once (the rest
 * in order of arrival), refuses tasks beyond `maxPending`, and keeps the
 * statistics and the drains.
 */
export class Runner implements ChainOwner {
  readonly #config: RunnerConfig;
  /**
   * Chains handed over and not yet finished, skipped or abandoned: a list
   * linked through the chains, oldest first, so that taking one over or
   * forgetting it allocates nothing.
   */
  #oldest: Chain | undefined;
  #newest: Chain | undefined;
  #liveCount = 0;
  /**
   * Chains with tasks whose handler has not returned yet, linked through
   * their live-list fields (unused until they are scheduled).
   */
  #openHead: Chain | undefined = undefined;
  #sequence = 0;
  /** Chains whose response has been sent, waiting for the shared timer. */
  #ready: Chain[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Chains past the timer, waiting for a free slot. */
  #queue: (Chain | undefined)[] = [];
  #queueHead = 0;
  #startingQueued = false;
  #active = 0;
  readonly #waiters = new Set<DrainWaiter>();
  #pending = 0;
  #running = 0;
  #succeeded = 0;
  #failed = 0;
  #timedOut = 0;
  #retried = 0;
  #refused = 0;
  #discarded = 0;
  #skipped = 0;
  #abandoned = 0;
  #enqueued = 0;

  constructor(config: RunnerConfig) {
    this.#config = config;
  }

  get pending(): number {
    return this.#pending;
  }

  get stats(): TaskStats {
    return {
      pending: this.#pending,
      queued: this.#pending - this.#running,
      running: this.#running,
      succeeded: this.#succeeded,
      failed: this.#failed,
      timedOut: this.#timedOut,
      retried: this.#retried,
      refused: this.#refused,
      discarded: this.#discarded,
      skipped: this.#skipped,
      abandoned: this.#abandoned,
      enqueued: this.#enqueued,
    };
  }

  /**
   * Reads a new chain's request at once when a backend will weigh it as
   * tasks are added (the message carries the URL); otherwise only chains
   * with tasks pay for reading it, in `schedule()`.
   */
  opened(chain: Chain, request: Request): void {
    if (this.#config.backend === undefined) return;
    chain.method = request.method;
    chain.url = request.url;
  }

  accept(chain: Chain, task: Task): void {
    if (this.#pending >= this.#config.maxPending) {
      this.#refused++;
      throw new QueueFullError(nameOf(task), this.#config.maxPending);
    }
    const { backend } = this.#config;
    if (backend !== undefined) {
      if (task.defined === undefined) {
        throw new TypeError(
          `Cannot add task "${
            nameOf(task)
          }" as the handler's backend runs only tasks made by defineTask`,
        );
      }
      backend.accept(backendTask(task, task.defined), chain);
    }
    this.#pending++;
    // Its first task, while its handler runs: the chain waits in the open
    // list until the handler returns. (A chain whose handler has returned is
    // scheduled once the task is in it, by scheduleReturned().)
    if (chain.remaining !== 0 || chain.returned) return;
    chain.nextLive = this.#openHead;
    if (this.#openHead !== undefined) this.#openHead.previousLive = chain;
    this.#openHead = chain;
  }

  successor(closed: Chain): Chain {
    const chain = new Chain();
    chain.owner = this;
    chain.facade = closed.facade;
    chain.method = closed.method;
    chain.url = closed.url;
    chain.delivered = closed.delivered;
    // Its tasks are numbered after the request's earlier ones.
    chain.size = chain.position = closed.size;
    chain.returned = true;
    return chain;
  }

  /** Unlinks a chain whose handler has returned from the open list. */
  #closeOpen(chain: Chain): void {
    const { previousLive, nextLive } = chain;
    if (previousLive === undefined) this.#openHead = nextLive;
    else previousLive.nextLive = nextLive;
    if (nextLive !== undefined) nextLive.previousLive = previousLive;
    chain.previousLive = chain.nextLive = undefined;
  }

  /**
   * Abandons the tasks of handlers still running (at a shutdown deadline,
   * their responses unsent): they will not be scheduled.
   *
   * @returns The abandoned tasks by name.
   */
  abandonOpen(): Record<string, number> {
    const names: Record<string, number> = {};
    for (let chain = this.#openHead; chain !== undefined;) {
      const next = chain.nextLive;
      chain.previousLive = chain.nextLive = undefined;
      chain.abandoned = true;
      chain.close("its tasks were abandoned at a shutdown deadline");
      for (const name of chain.unfinished()) {
        names[name] = (names[name] ?? 0) + 1;
      }
      this.#pending -= chain.remaining;
      this.#abandoned += chain.remaining;
      chain = next;
    }
    this.#openHead = undefined;
    return names;
  }

  taskStarted(chain: Chain): void {
    // An abandoned chain was counted off already; it must not count again.
    if (chain.abandoned) return;
    chain.running = true;
    this.#running++;
  }

  retried(): void {
    this.#retried++;
  }

  taskSettled(chain: Chain, succeeded: boolean, timedOut: boolean): void {
    if (chain.abandoned) return;
    chain.running = false;
    this.#running--;
    this.#pending--;
    if (succeeded) this.#succeeded++;
    else this.#failed++;
    if (timedOut) this.#timedOut++;
    if (this.#waiters.size === 0) return;
    for (const waiter of this.#waiters) {
      if (chain.sequence > waiter.last) continue;
      if (succeeded) waiter.succeeded++;
      else waiter.failed++;
    }
  }

  finished(chain: Chain): void {
    this.#end(chain);
    this.#startQueued();
  }

  /** Drops the tasks of a handler that failed: none of them will run. */
  discard(chain: Chain): void {
    // Abandoned at a deadline: counted, and out of the open list already.
    if (chain.abandoned) return;
    if (chain.remaining > 0) this.#closeOpen(chain);
    chain.close("the handler failed and its tasks were discarded");
    this.#pending -= chain.remaining;
    this.#discarded += chain.remaining;
  }

  /**
   * Takes over a chain whose handler has returned its response. The request is
   * read now, while it is still open: once the response completes, Deno closes
   * it and its URL can no longer be read.
   */
  schedule(
    chain: Chain,
    request: Request,
    info: Deno.ServeHandlerInfo | undefined,
  ): void {
    if (chain.remaining === 0) {
      // No task yet: one added while the response is sent, or after, will
      // schedule the chain then.
      chain.returned = true;
      chain.source = request;
      chain.serveInfo = info;
      return;
    }
    if (chain.abandoned) return;
    this.#closeOpen(chain);
    if (chain.url === undefined) {
      chain.method = request.method;
      chain.url = request.url;
    }
    this.#takeOver(chain, info);
  }

  scheduleReturned(chain: Chain): void {
    const { source, serveInfo } = chain;
    chain.returned = false;
    chain.source = chain.serveInfo = undefined;
    if (chain.url === undefined && source !== undefined) {
      try {
        chain.method = source.method;
        chain.url = source.url;
      } catch {
        // Closed: its response has completed. Reports go without the request.
      }
    }
    this.#takeOver(chain, serveInfo);
  }

  /** Adds a chain to the live ones, which drains wait for. */
  #makeLive(chain: Chain): void {
    chain.sequence = ++this.#sequence;
    this.#liveCount++;
    if (this.#newest === undefined) this.#oldest = chain;
    else {
      this.#newest.nextLive = chain;
      chain.previousLive = this.#newest;
    }
    this.#newest = chain;
  }

  /** Makes a chain live, and ready once its response has been sent. */
  #takeOver(chain: Chain, info: Deno.ServeHandlerInfo | undefined): void {
    this.#makeLive(chain);
    // `completed` is created lazily by Deno, so it is only touched for
    // requests that have tasks. Both outcomes are handled at once: a
    // rejection (HTTP/2 client gone) left unhandled would end the process.
    const completed: unknown = info?.completed;
    if (isThenable(completed)) {
      completed.then(
        () => this.#sent(chain, true),
        () => this.#sent(chain, false),
      );
    } else {
      this.#sent(chain, chain.delivered);
    }
  }

  #sent(chain: Chain, delivered: boolean | undefined): void {
    if (chain.abandoned) return;
    chain.delivered = delivered;
    if (delivered === false && this.#config.skipUndelivered) {
      chain.close("the response was not delivered and its tasks were skipped");
      this.#pending -= chain.remaining;
      this.#skipped += chain.remaining;
      this.#end(chain);
      return;
    }
    this.#ready.push(chain);
    // `completed` resolves before a static body reaches the socket, so tasks
    // wait one macrotask more. One timer serves every chain that becomes
    // ready in the same turn: a timer per request costs a quarter of the CPU.
    this.#timer ??= setTimeout(this.#startReady, 0);
  }

  #startReady = (): void => {
    this.#timer = undefined;
    const ready = this.#ready;
    this.#ready = [];
    if (this.#queueHead === this.#queue.length) {
      // Nothing is waiting for a slot: skip the queue while slots are free.
      let index = 0;
      while (index < ready.length && this.#active < this.#config.concurrency) {
        this.#start(ready[index++]!);
      }
      for (; index < ready.length; index++) this.#queue.push(ready[index]!);
    } else {
      for (const chain of ready) this.#queue.push(chain);
      this.#startQueued();
    }
  };

  #startQueued(): void {
    // A chain whose tasks are all synchronous finishes inside #start() and
    // calls back here; the loop below picks up the slot it freed, instead of
    // recursing once per queued chain.
    if (this.#startingQueued) return;
    this.#startingQueued = true;
    try {
      while (
        this.#queueHead < this.#queue.length &&
        this.#active < this.#config.concurrency
      ) {
        const chain = this.#queue[this.#queueHead]!;
        this.#queue[this.#queueHead++] = undefined;
        this.#start(chain);
      }
    } finally {
      this.#startingQueued = false;
    }
    if (this.#queueHead === this.#queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    } else if (
      this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length
    ) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  #start(chain: Chain): void {
    if (chain.abandoned) return;
    this.#active++;
    if (this.#config.backend !== undefined) {
      this.#handOver(chain, this.#config.backend, false);
      return;
    }
    const { storage } = this.#config;
    if (storage === undefined) startChain(chain, this.#config);
    else storage.run(chain.facade!, () => startChain(chain, this.#config));
  }

  /**
   * Hands a chain to the backend before its response goes out, so that the
   * response promises only what is stored. Resolves once the backend has
   * stored it; rejects with why it could not, its tasks then counted as
   * discarded (the handler fails with it), or with the deadline's reason
   * when a drain gave up on it.
   */
  store(chain: Chain, request: Request): Promise<void> {
    if (chain.abandoned) {
      return Promise.reject(
        new DOMException(
          "Background task abandoned at a shutdown deadline",
          "AbortError",
        ),
      );
    }
    this.#closeOpen(chain);
    if (chain.url === undefined) {
      chain.method = request.method;
      chain.url = request.url;
    }
    this.#makeLive(chain);
    this.#active++;
    return this.#handOver(chain, this.#config.backend!, true);
  }

  /**
   * Gives a chain to the backend. Its tasks stay pending until the backend
   * has stored it. If it cannot, they count as failed and are reported,
   * or, handed over before the response, as discarded, and the returned
   * promise rejects; a drain that gives up on the chain aborts the
   * backend's attempts and rejects it too.
   */
  #handOver(
    chain: Chain,
    backend: TaskBackend,
    beforeResponse: boolean,
  ): Promise<void> {
    chain.started = true;
    // What is handed over is the whole chain: a task added while the
    // backend stores it starts a chain of its own.
    chain.close("the request's tasks have been handed to the backend");
    const tasks: BackendTask[] = [];
    for (let task = chain.head; task !== undefined; task = task.next) {
      tasks.push(backendTask(task, task.defined!));
    }
    const first = chain.position;
    const count = tasks.length;
    const controller = new AbortController();
    const stored = Promise.withResolvers<void>();
    // Nobody awaits it when the response has been sent already.
    stored.promise.catch(() => {});
    chain.interrupt = (reason) => {
      controller.abort(reason);
      stored.reject(reason);
    };
    const settle = (error: unknown, failed: boolean) => {
      chain.interrupt = undefined;
      if (chain.abandoned) return;
      chain.position += count;
      chain.head = undefined;
      this.#pending -= count;
      if (!failed) this.#enqueued += count;
      else if (beforeResponse) this.#discarded += count;
      else {
        this.#failed += count;
        tasks.forEach((task, index) =>
          reportFailure(this.#config.onTaskError, error, {
            name: task.name,
            index: first + index,
            attempt: 0,
            request: chain.request,
            delivered: chain.delivered,
          })
        );
      }
      if (!failed || !beforeResponse) {
        for (const waiter of this.#waiters) {
          if (chain.sequence > waiter.last) continue;
          if (failed) waiter.failed += count;
          else waiter.enqueued += count;
        }
      }
      if (failed) stored.reject(error);
      else stored.resolve();
      this.finished(chain);
    };
    let enqueued: Promise<void>;
    try {
      enqueued = backend.enqueue({
        id: crypto.randomUUID(),
        tasks,
        request: chain.request,
        delivered: chain.delivered,
      }, { signal: controller.signal });
    } catch (error) {
      enqueued = Promise.reject(error);
    }
    toPromise(enqueued).then(
      () => settle(undefined, false),
      (error) => settle(error, true),
    );
    return stored.promise;
  }

  /** Forgets a chain that has finished, was skipped or was abandoned. */
  #end(chain: Chain): void {
    const { sequence, previousLive, nextLive } = chain;
    if (sequence === 0) return;
    if (previousLive === undefined) this.#oldest = nextLive;
    else previousLive.nextLive = nextLive;
    if (nextLive === undefined) this.#newest = previousLive;
    else nextLive.previousLive = previousLive;
    chain.previousLive = chain.nextLive = undefined;
    chain.sequence = 0;
    this.#liveCount--;
    if (chain.started) this.#active--;
    if (this.#waiters.size === 0) return;
    for (const waiter of this.#waiters) {
      if (sequence > waiter.last) continue;
      if (--waiter.remaining === 0) this.#settle(waiter);
    }
  }

  /**
   * Resolves once every chain scheduled so far has finished, or at the
   * deadline, when the chains left are abandoned.
   */
  drain(options: DrainOptions = {}): Promise<DrainResult> {
    const { timeout = Infinity, signal } = options;
    return new Promise((resolve) => {
      const waiter: DrainWaiter = {
        last: this.#sequence,
        remaining: this.#liveCount,
        succeeded: 0,
        failed: 0,
        enqueued: 0,
        abandoned: 0,
        abandonedTasks: {},
        resolve,
        cleanup: () => {},
      };
      if (waiter.remaining === 0) return this.#settle(waiter);
      this.#waiters.add(waiter);
      const giveUp = () => this.#abandon(waiter, signal?.reason);
      if (signal?.aborted) return giveUp();
      const timer = timeout <= MAX_TIMER_DELAY
        ? setTimeout(giveUp, timeout)
        : undefined;
      signal?.addEventListener("abort", giveUp, { once: true });
      waiter.cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", giveUp);
      };
    });
  }

  #settle(waiter: DrainWaiter): void {
    this.#waiters.delete(waiter);
    waiter.cleanup();
    waiter.resolve({
      succeeded: waiter.succeeded,
      failed: waiter.failed,
      enqueued: waiter.enqueued,
      abandoned: waiter.abandoned,
      abandonedTasks: waiter.abandonedTasks,
    });
  }

  /** Gives up on the chains a drain still waits for. */
  #abandon(waiter: DrainWaiter, signalReason: unknown): void {
    const reason = signalReason ?? new DOMException(
      "Background task abandoned at a shutdown deadline",
      "AbortError",
    );
    // Live chains are listed in sequence order: those the drain waits for
    // come first.
    for (
      let chain = this.#oldest;
      chain !== undefined && chain.sequence <= waiter.last;
    ) {
      const next = chain.nextLive;
      // Abandoned already, by a drain its abort listeners ended: counted.
      if (chain.abandoned) {
        chain = next;
        continue;
      }
      const running = chain.running;
      chain.running = false;
      const names = abandonChain(chain, this.#config, reason);
      if (running) this.#running--;
      this.#pending -= names.length;
      this.#abandoned += names.length;
      for (const other of this.#waiters) {
        if (chain.sequence > other.last) continue;
        other.abandoned += names.length;
        for (const name of names) {
          other.abandonedTasks[name] = (other.abandonedTasks[name] ?? 0) + 1;
        }
      }
      this.#end(chain);
      chain = next;
    }
    this.#startQueued();
  }
}

function backendTask(task: Task, defined: DefinedTask): BackendTask {
  return {
    name: defined.name,
    args: task.args,
    timeout: defined.timeout,
    retry: defined.retry,
    task: defined,
  };
}
