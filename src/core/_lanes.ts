// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Keyed tasks in this process. A keyed task leaves its request's chain for
// its key's lane (its duplicates: the same name and the same key), where it
// runs as a chain of its own, in the order the lane's tasks were added,
// one at a time: the request's other tasks neither wait for it nor it for
// them. It is handed over with its request (the handler returned), and
// starts once its request's response has been sent, its lane's earlier
// tasks are over, and its `delay` has passed; from then on it is scheduled
// like any chain (the shared timer, a slot under `concurrency`), and ends
// like any chain, in the runner's `#close()`, which tells the lanes. A
// `"skip"` or `"replace"` decision is taken as a task is handed over, so
// that a task whose handler fails never took the place of one whose
// handler answered. Delays share one timer of the lanes' own (the
// scheduler's shared timer fires on the next turn; a delay is due later):
// tasks of one delay are due in the order they were added, so that the
// timer finds the next due at the head of each delay's list. A chain that
// ends before it is due (replaced, say) stays in its list until the lists
// are swept, once they hold more such chains than others: a burst of
// replacements under a long delay holds the one waiting, not the burst.

import { Chain, type EndState, internals, KeyedTasks } from "./_chain.ts";
import { nameOf } from "./_task.ts";
import type { ChainList } from "./_chain_list.ts";
import type { KeyedTask } from "./_keyed_task.ts";
import { tellDeduplicated } from "./_report.ts";
import type { OnDuplicate } from "../api/define_task.ts";
import type { TaskEndEvent } from "../api/task_info.ts";

/** What the lanes need of their runner. */
export interface LaneRunner {
  readonly skipUndelivered: boolean;
  readonly onTaskEnd: ((event: TaskEndEvent) => unknown) | undefined;
  /** The chains whose handler runs: a shutdown deadline abandons them. */
  readonly open: ChainList;
  /** Makes a chain live: drains wait for it. */
  live(chain: Chain): void;
  /**
   * Gives a chain to the scheduler, which starts it in a slot: in the place
   * in line of `place`, a duplicate it replaced, if that still waits there.
   */
  ready(chain: Chain, place: Chain | undefined): void;
  /** Ends a chain. */
  close(chain: Chain, to: EndState): void;
  /** Schedules a request's chain whose handler returned without a task. */
  scheduleReturned(chain: Chain): void;
}

/** A keyed task's chain: the one task it holds, and its place in its lane. */
class KeyedChain extends Chain {
  override readonly lane: KeyedChain[];
  /** Its lane's key in the lanes' map. */
  readonly laneKey: string;
  readonly mode: OnDuplicate;
  /** When it may start, by `performance.now()`; 0 without a delay. */
  readonly due: number;
  /** Its request's response has been sent: it waits for its turn only. */
  released = false;
  /** Among the delayed chains the timer wakes. */
  timed = false;
  /**
   * Under "replace", without a delay: the duplicate it replaced while that
   * waited in line for a slot, whose place it takes once it may start.
   */
  place: KeyedChain | undefined = undefined;

  constructor(lane: KeyedChain[], laneKey: string, task: KeyedTask) {
    super();
    this.lane = lane;
    this.laneKey = laneKey;
    this.mode = task.defined.onDuplicate!;
    const delay = task.defined.delay!;
    this.due = delay === 0 ? 0 : performance.now() + delay;
  }
}

/** The lanes of one runner's keyed tasks. */
export class Lanes {
  readonly #runner: LaneRunner;
  /** Each key's lane: its chains not over, in the order they were added. */
  readonly #lanes = new Map<string, KeyedChain[]>();
  /** Chains with a delay, by delay: in each list, in the order they are due. */
  readonly #delayed = new Map<number, KeyedChain[]>();
  /** How many of those are neither over nor woken. */
  #timed = 0;
  /** How many of those are over: swept out once they outnumber the others. */
  #over = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #wakeAt = Infinity;

  constructor(runner: LaneRunner) {
    this.#runner = runner;
  }

  /**
   * Takes a keyed task that `chain`, its request's, accepted: it joins its
   * lane, in a chain of its own. Returns `false`: it joins no chain.
   */
  join(chain: Chain, task: KeyedTask): false {
    const { name } = task.defined;
    // Its name's length first: no name and key can make another's map key.
    const laneKey = `${name.length}:${name}${task.key}`;
    let lane = this.#lanes.get(laneKey);
    if (lane === undefined) this.#lanes.set(laneKey, lane = []);
    const keyed = new KeyedChain(lane, laneKey, task);
    internals.created?.(keyed);
    keyed.add(task);
    keyed.owner = chain.owner;
    keyed.facade = chain.facade;
    keyed.runsHere = chain.runsHere;
    keyed.delivered = chain.delivered;
    keyed.trace = chain.trace;
    // callHandler() asked for the request's results: its keyed tasks' too,
    // those added to a successor (by a keyed task, say) included.
    keyed.results = chain.results ?? chain.facade.results;
    lane.push(keyed);
    if (keyed.due !== 0) this.#time(keyed, task.defined.delay!);
    (chain.facade.keyed ??= new KeyedTasks()).added++;
    const { state } = chain;
    if (state === "waiting") {
      // It waits for its request's response.
      (chain.keyed ??= new KeyedTasks()).waiting.push(keyed);
      this.#handOver(keyed, chain);
    } else if (state === "open" || state === "returned") {
      // It waits for its request's hand-over (now, for a chain whose handler
      // returned), held in the open list until then.
      (chain.keyed ??= new KeyedTasks()).waiting.push(keyed);
      this.#runner.open.push(keyed);
      if (state === "returned") this.#runner.scheduleReturned(chain);
    } else {
      // Its request's response has been sent: it is handed over at once.
      this.#handOver(keyed, chain);
      this.#release(keyed);
    }
    return false;
  }

  /** `chain`, a request's, is handed over (live): so are its keyed tasks. */
  takeOver(chain: Chain): void {
    for (const keyed of chain.keyed!.waiting as KeyedChain[]) {
      if (keyed.state !== "open") continue;
      this.#runner.open.remove(keyed);
      this.#handOver(keyed, chain);
    }
  }

  /** `chain`'s response has been sent, or not: its keyed tasks may start. */
  sent(chain: Chain): void {
    const { waiting } = chain.keyed!;
    chain.keyed!.waiting = [];
    const { delivered } = chain;
    for (const keyed of waiting as KeyedChain[]) {
      // Deduplicated, or given up on, meanwhile.
      if (keyed.state !== "waiting") continue;
      keyed.delivered = delivered;
      if (delivered === false && this.#runner.skipUndelivered) {
        this.#runner.close(keyed, "skipped");
      } else this.#release(keyed);
    }
  }

  /**
   * `chain` has ended, as `to`: a keyed task's leaves its lane, whose next
   * may start; a request's that ended before it was sent (its handler
   * failed, its response was not delivered, a deadline gave up on it) ends
   * its keyed tasks that waited for it the same way.
   */
  closed(chain: Chain, to: EndState): void {
    if (chain.lane !== undefined) return this.#left(chain as KeyedChain);
    const waiting = chain.keyed?.waiting;
    if (waiting === undefined || waiting.length === 0) return;
    chain.keyed!.waiting = [];
    for (const keyed of waiting) {
      const { state } = keyed;
      // Abandoned while its handler ran: each gets its own turn, and name.
      if (state === "open" && to === "abandoned") continue;
      if (state === "open" || state === "waiting" || state === "queued") {
        this.#runner.close(keyed, to);
      }
    }
  }

  /** A keyed task's chain goes live: its mode decides whether it stays. */
  #handOver(keyed: KeyedChain, chain: Chain): void {
    keyed.method = chain.method;
    keyed.url = chain.url;
    keyed.moveTo("waiting");
    this.#runner.live(keyed);
    if (keyed.mode === "queue") return;
    // It and its duplicates handed over and not started, in the order they
    // were added: under "skip", the one that waited stays; under
    // "replace", the one added last.
    const waiting = keyed.lane.filter((other) =>
      other.state === "waiting" || other.state === "queued"
    );
    if (waiting.length === 1) return;
    if (keyed.mode === "skip") return this.#deduplicate(keyed);
    for (const other of waiting.slice(0, -1)) {
      // A delay starts the wait again: no place in line to keep.
      if (keyed.due === 0) {
        keyed.place = other.state === "queued" ? other : other.place;
      }
      this.#deduplicate(other);
    }
  }

  /** Its response has been sent: it may start in its turn. */
  #release(keyed: KeyedChain): void {
    keyed.released = true;
    this.#pump(keyed.lane);
  }

  /** Starts a lane's first chain, if it may. */
  #pump(lane: KeyedChain[]): void {
    const first = lane[0];
    // Queued or running already, or its response not yet sent.
    if (first?.state !== "waiting" || !first.released) return;
    // Its delay's timer wakes the lane.
    if (first.due !== 0 && first.due > performance.now()) return;
    const { place } = first;
    first.place = undefined;
    this.#runner.ready(first, place);
  }

  #deduplicate(keyed: KeyedChain): void {
    // Ended first: the hook may add tasks, which must not find it waiting.
    this.#runner.close(keyed, "deduplicated");
    tellDeduplicated(this.#runner.onTaskEnd, {
      name: nameOf(keyed.head!),
      index: 0,
      attempt: 0,
      request: keyed.request,
      delivered: keyed.delivered,
    });
  }

  /** A keyed task's chain has ended: it leaves its lane. */
  #left(keyed: KeyedChain): void {
    const { lane } = keyed;
    const index = lane.indexOf(keyed);
    if (index === 0) lane.shift();
    else lane.splice(index, 1);
    if (keyed.timed) {
      keyed.timed = false;
      if (--this.#timed === 0) this.#stopTimer();
      else if (++this.#over > this.#timed) this.#sweep();
    }
    if (lane.length === 0) this.#lanes.delete(keyed.laneKey);
    else if (index === 0) this.#pump(lane);
  }

  /** Counts a delayed chain in, and wakes its lane when it is due. */
  #time(keyed: KeyedChain, delay: number): void {
    let due = this.#delayed.get(delay);
    if (due === undefined) this.#delayed.set(delay, due = []);
    due.push(keyed);
    keyed.timed = true;
    this.#timed++;
    if (keyed.due < this.#wakeAt) this.#setTimer(keyed.due);
  }

  #setTimer(at: number): void {
    clearTimeout(this.#timer);
    this.#wakeAt = at;
    // Rounded up: a timer fires no earlier than its whole milliseconds.
    this.#timer = setTimeout(
      this.#wake,
      Math.max(0, Math.ceil(at - performance.now())),
    );
  }

  #stopTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#wakeAt = Infinity;
    this.#delayed.clear();
    this.#over = 0;
  }

  /** Takes the chains that are over out of the delays' lists, in order. */
  #sweep(): void {
    this.#over = 0;
    for (const [delay, due] of this.#delayed) {
      const left = due.filter((keyed) => keyed.timed);
      if (left.length === 0) this.#delayed.delete(delay);
      else this.#delayed.set(delay, left);
    }
  }

  /** The timer: the chains due now may start; it is set again for the next. */
  #wake = (): void => {
    this.#timer = undefined;
    this.#wakeAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const [delay, due] of this.#delayed) {
      let woken = 0;
      while (woken < due.length && due[woken]!.due <= now) woken++;
      const ready = due.splice(0, woken);
      if (due.length === 0) this.#delayed.delete(delay);
      else next = Math.min(next, due[0]!.due);
      for (const keyed of ready) {
        if (!keyed.timed) {
          this.#over--;
          continue;
        }
        keyed.timed = false;
        this.#timed--;
        this.#pump(keyed.lane);
      }
    }
    // What is left may be only chains that ended: no timer for them.
    if (this.#timed === 0) this.#stopTimer();
    else if (next !== Infinity) this.#setTimer(next);
  };
}
