// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// When chains whose response has been sent start. `info.completed` resolves
// before a static body reaches the socket, so a chain waits one macrotask
// more; one timer serves every chain that becomes ready in the same turn
// (a timer per request cost a quarter of the CPU). Then at most
// `concurrency` chains hold a slot at once, the others wait in order of
// arrival, in a first-in first-out queue.

import type { Chain } from "./_chain.ts";

/** Starts chains under a concurrency limit, one shared timer after they are ready. */
export class Scheduler {
  readonly #concurrency: number;
  readonly #start: (chain: Chain) => void;
  /** Chains whose response has been sent, waiting for the shared timer. */
  #ready: Chain[] = [];
  /** Of those, keyed tasks' that take the place in line of a duplicate they replaced. */
  #places: Map<Chain, Chain> | undefined = undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Chains past the timer, waiting for a slot; `#head` is the next. */
  #queue: (Chain | undefined)[] = [];
  #head = 0;
  #starting = false;
  /** Chains holding a slot. */
  #active = 0;

  /**
   * @param concurrency How many chains may hold a slot at once.
   * @param start Starts a chain in its slot; a chain given up on while it
   * waited (no longer `queued`) is not given one.
   */
  constructor(concurrency: number, start: (chain: Chain) => void) {
    this.#concurrency = concurrency;
    this.#start = start;
  }

  /**
   * A chain's response has been sent: it is queued, and starts on the next
   * shared timer, or once a slot is free; in the place in line of `place`
   * (a keyed task's duplicate it replaced), if that still waits there.
   */
  ready(chain: Chain, place?: Chain): void {
    chain.moveTo("queued");
    this.#ready.push(chain);
    if (place !== undefined) (this.#places ??= new Map()).set(chain, place);
    this.#timer ??= setTimeout(this.#startReady, 0);
  }

  /** Counts a chain that takes a slot without waiting for one (stored before its response). */
  occupy(): void {
    this.#active++;
  }

  /** A chain that held a slot has ended: the next one in the queue takes it. */
  freed(): void {
    this.#active--;
    this.#startQueued();
  }

  /**
   * Runs `fn`, and gives the slots it freed to the chains queued only once
   * it has returned: a deadline frees the slots of every chain it gives up
   * on before any could go to a queued chain it is about to give up on too.
   */
  holding(fn: () => void): void {
    // Inside #startQueued() already, whose loop picks the slots up after.
    if (this.#starting) return fn();
    this.#starting = true;
    try {
      fn();
    } finally {
      this.#starting = false;
    }
    this.#startQueued();
  }

  #startReady = (): void => {
    this.#timer = undefined;
    const ready = this.#ready;
    const places = this.#places;
    this.#ready = [];
    this.#places = undefined;
    let index = 0;
    // Nothing is waiting for a slot: skip the queue while slots are free.
    if (this.#head === this.#queue.length) {
      while (index < ready.length && this.#active < this.#concurrency) {
        this.#take(ready[index++]!);
      }
    }
    for (; index < ready.length; index++) {
      const chain = ready[index]!;
      this.#wait(chain, places?.get(chain));
    }
    this.#startQueued();
  };

  #startQueued(): void {
    // A chain whose tasks are all synchronous ends inside #take() and frees
    // its slot at once; the loop below picks the slot up, instead of
    // recursing once per queued chain.
    if (this.#starting) return;
    this.#starting = true;
    try {
      while (
        this.#head < this.#queue.length && this.#active < this.#concurrency
      ) {
        const chain = this.#queue[this.#head]!;
        this.#queue[this.#head++] = undefined;
        this.#take(chain);
      }
    } finally {
      this.#starting = false;
    }
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Puts a ready chain in the queue for a slot, or in `place`'s. */
  #wait(chain: Chain, place: Chain | undefined): void {
    // Given up on at a deadline since it became ready: it waits for nothing.
    if (chain.state !== "queued") return;
    // Ended (replaced), `place` is passed over when its turn comes.
    const at = place === undefined
      ? -1
      : this.#queue.indexOf(place, this.#head);
    if (at === -1) this.#queue.push(chain);
    else this.#queue[at] = chain;
  }

  #take(chain: Chain): void {
    // Given up on while it waited (abandoned): no slot for it.
    if (chain.state !== "queued") return;
    this.#active++;
    this.#start(chain);
  }
}
