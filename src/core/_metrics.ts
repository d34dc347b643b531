// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The tasks' metrics through Deno's built-in OpenTelemetry: how long each
// attempt took, the tasks of every runner alive by state, and how they
// ended, read from each runner's stats when the meter asks. A runner that
// was collected keeps counting with what it was last seen with, so that
// the outcomes counter never goes down. The spans are _telemetry.ts's, which
// makes the one Metrics of the process.

import type { TaskStats } from "../api/task_controls.ts";

/** A value of an OpenTelemetry attribute, as used here. */
export type AttributeValue = string | number | boolean;

interface Histogram {
  record(value: number, attributes: Record<string, AttributeValue>): void;
}

interface ObservableResult {
  observe(value: number, attributes: Record<string, AttributeValue>): void;
}

interface Observable {
  addCallback(callback: (result: ObservableResult) => void): void;
}

/** The part of OpenTelemetry's meter used here. */
export interface Meter {
  createHistogram(
    name: string,
    options: { description: string; unit: string },
  ): Histogram;
  createObservableGauge(
    name: string,
    options: { description: string; unit: string },
  ): Observable;
  createObservableCounter(
    name: string,
    options: { description: string; unit: string },
  ): Observable;
}

/** The metrics of the process's tasks, on one meter. */
export class Metrics {
  readonly #duration: Histogram;
  /** The runners alive, each with its stats when last seen. */
  readonly #runners = new Map<
    WeakRef<{ readonly stats: TaskStats }>,
    TaskStats | undefined
  >();
  /**
   * The outcomes of the runners collected since they were watched, as last
   * seen, so that the outcomes counter never goes down.
   */
  readonly #retired: Outcomes = noOutcomes();

  constructor(meter: Meter) {
    this.#duration = meter.createHistogram("background_task.attempt.duration", {
      description: "How long an attempt of a background task took",
      unit: "s",
    });
    meter.createObservableGauge("background_task.tasks", {
      description:
        "Background tasks accepted and not finished, by state: queued (waiting for their response, a slot or an earlier task), running, or being stored by a backend",
      unit: "{task}",
    }).addCallback((result) => {
      const totals = { queued: 0, running: 0, storing: 0 };
      this.#eachRunner((stats) => {
        totals.queued += stats.queued;
        totals.running += stats.running;
        totals.storing += stats.storing;
      });
      for (const [state, value] of Object.entries(totals)) {
        result.observe(value, { "background_task.state": state });
      }
    });
    meter.createObservableCounter("background_task.outcomes", {
      description:
        "Background tasks of the wrapped handlers, by how they ended: succeeded, failed (a timeout aside), timedOut, or never run here: refused, discarded, skipped, deduplicated (a duplicate took its place), abandoned, handedOver (handed to a backend)",
      unit: "{task}",
    }).addCallback((result) => {
      const totals = noOutcomes();
      this.#eachRunner((stats) => addOutcomes(totals, stats));
      // After the runners, which may have retired some.
      for (const key of Object.keys(totals) as (keyof Outcomes)[]) {
        totals[key] += this.#retired[key];
      }
      for (const [outcome, value] of Object.entries(totals)) {
        result.observe(value, { "background_task.outcome": outcome });
      }
    });
  }

  /** Measures an attempt that took `seconds`. */
  attempted(
    seconds: number,
    attributes: Record<string, AttributeValue>,
  ): void {
    this.#duration.record(seconds, attributes);
  }

  /** Counts a runner's tasks in the gauges, for as long as it lives. */
  watch(runner: { readonly stats: TaskStats }): void {
    this.#runners.set(new WeakRef(runner), undefined);
  }

  /**
   * Calls `fn` with the stats of each runner alive, keeping them; a runner
   * collected since retires with the outcomes it was last seen with.
   */
  #eachRunner(fn: (stats: TaskStats) => void): void {
    for (const [ref, last] of this.#runners) {
      const runner = ref.deref();
      if (runner === undefined) {
        this.#runners.delete(ref);
        if (last !== undefined) addOutcomes(this.#retired, last);
        continue;
      }
      const stats = runner.stats;
      this.#runners.set(ref, stats);
      fn(stats);
    }
  }
}

/** Tasks by how they ended, as the outcomes counter reports them. */
interface Outcomes {
  succeeded: number;
  failed: number;
  timedOut: number;
  refused: number;
  discarded: number;
  skipped: number;
  deduplicated: number;
  abandoned: number;
  handedOver: number;
}

function noOutcomes(): Outcomes {
  return {
    succeeded: 0,
    failed: 0,
    timedOut: 0,
    refused: 0,
    discarded: 0,
    skipped: 0,
    deduplicated: 0,
    abandoned: 0,
    handedOver: 0,
  };
}

/** Adds a runner's stats to `totals`; `failed` leaves out the timeouts. */
function addOutcomes(totals: Outcomes, stats: TaskStats): void {
  totals.succeeded += stats.succeeded;
  totals.failed += stats.failed - stats.timedOut;
  totals.timedOut += stats.timedOut;
  totals.refused += stats.refused;
  totals.discarded += stats.discarded;
  totals.skipped += stats.skipped;
  totals.deduplicated += stats.deduplicated;
  totals.abandoned += stats.abandoned;
  totals.handedOver += stats.handedOver;
}
