// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// With Deno's telemetry on, Deno.exit() first exports what is left (spans,
// then logs, then metrics), blocking the main thread through each export,
// and each may take OTEL_EXPORTER_OTLP_TIMEOUT (10 s by default, read once
// at startup): 21 s measured against a collector that never answers, on
// Deno 2.9.6. No timer of the main thread can fire meanwhile, and Deno.exit()
// in a worker ends only the worker. A worker can still end the process with
// a signal: Deno.kill() of the process's own pid asks no permission. So a
// worker armed before the exit kills the process once the shutdown's
// deadline has passed; a prompt export is never cut short (when the drain
// used the whole budget, the export still gets EXPORT_GRACE: the spans of
// the tasks abandoned then are the ones worth having), and with telemetry
// off Deno.exit() waits for nothing and no worker starts.

import { denoTelemetryOn } from "../core/_telemetry.ts";

/** How long arming the worker may take before the exit goes on without it (it starts in about 50 ms). */
const ARMING_LIMIT = 1_000;

/**
 * Milliseconds the export at exit gets when the deadline has passed by
 * then (the drain abandoned tasks): to a collector that answers, it takes
 * tens of milliseconds.
 */
const EXPORT_GRACE = 1_000;

// The worker's whole program. SIGKILL rather than SIGTERM: a SIGTERM
// listener of the user's would take it, and its JavaScript cannot run.
const WATCHDOG = `
onmessage = ({ data: { deadline, message } }) => {
  setTimeout(() => {
    console.error(message);
    Deno.kill(Deno.pid, "SIGKILL");
  }, Math.max(0, deadline - Date.now()));
  postMessage("armed");
};
`;

/**
 * Exits the process with `code`, and when Deno's telemetry is on, ends it
 * by SIGKILL at `deadline` (milliseconds since the epoch), or
 * {@linkcode EXPORT_GRACE} from now if it has passed, if Deno is still
 * exporting then, after writing a line that says so.
 */
export async function exitBy(
  code: number,
  deadline: number,
  budget: number,
): Promise<never> {
  if (Number.isFinite(deadline) && denoTelemetryOn()) {
    const now = Date.now();
    const passed = deadline <= now;
    await armWatchdog(
      passed ? now + EXPORT_GRACE : deadline,
      !passed
        ? `The shutdown deadline (${budget} ms) passed while Deno was still exporting telemetry at exit: ending the process without it (SIGKILL)`
        : `The shutdown deadline (${budget} ms) had passed, and Deno was still exporting telemetry at exit ${EXPORT_GRACE} ms later: ending the process without it (SIGKILL)`,
    );
  }
  Deno.exit(code);
}

async function armWatchdog(deadline: number, message: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const worker = new Worker(
      `data:text/javascript,${encodeURIComponent(WATCHDOG)}`,
      { type: "module" },
    );
    await new Promise<void>((resolve) => {
      worker.onmessage = () => resolve();
      // A worker that cannot start leaves the exit as Deno makes it.
      worker.onerror = (event) => {
        event.preventDefault();
        resolve();
      };
      timer = setTimeout(resolve, ARMING_LIMIT);
      worker.postMessage({ deadline, message });
    });
  } catch {
    // No Worker here: the exit is as Deno makes it.
  } finally {
    clearTimeout(timer);
  }
}
