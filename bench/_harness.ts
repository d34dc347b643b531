// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What the benchmark programs share: running a command for its output,
// a free port, waiting for a server to listen, pinning processes to cores,
// and the median of a run's rounds.

/** Runs `command`, with its output; code 127 when it cannot be started. */
export async function run(
  command: string[],
): Promise<{ code: number; stdout: string }> {
  try {
    const output = await new Deno.Command(command[0]!, {
      args: command.slice(1),
      stdout: "piped",
      stderr: "null",
    }).output();
    return {
      code: output.code,
      stdout: new TextDecoder().decode(output.stdout),
    };
  } catch {
    return { code: 127, stdout: "" };
  }
}

/** A port of 127.0.0.1 that nothing listens on now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** Resolves once `port` accepts connections; throws after six seconds. */
export async function connectable(port: number): Promise<void> {
  for (let attempt = 0;; attempt++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch (error) {
      if (attempt > 300) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/**
 * Whether processes can be pinned to cores (two or more, and `taskset`),
 * and a function that prefixes a command to run it on `core` if so.
 */
export async function pinning(): Promise<
  { pinned: boolean; pin: (core: number, command: string[]) => string[] }
> {
  const pinned = navigator.hardwareConcurrency >= 2 &&
    (await run(["taskset", "-V"])).code === 0;
  return {
    pinned,
    pin: (core, command) =>
      pinned ? ["taskset", "-c", String(core), ...command] : command,
  };
}

/** The median, the mean of the middle two for an even count. */
export function median(numbers: number[]): number {
  const sorted = numbers.toSorted((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? sorted[middle]!
    : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * Makes sure `command` runs, installing Debian's `pkg` with apt-get when it
 * is missing (which works as root); exits if it cannot.
 */
export async function ensureCommand(
  command: string,
  pkg: string,
): Promise<void> {
  if ((await run([command, "--version"])).code !== 127) return;
  console.error(`${command} is missing: installing ${pkg} with apt-get`);
  await run(["apt-get", "update", "-qq"]);
  const installed = await run(["apt-get", "install", "-y", "-qq", pkg]);
  if (installed.code !== 0) {
    console.error(`Could not install ${command}; install ${pkg} and run again`);
    Deno.exit(1);
  }
}

/**
 * Microseconds per request of `requests` direct calls of a wrapped
 * `handler`, whose `completed` has already resolved, its drain included.
 */
export async function microsPerCall(
  handler:
    & ((request: Request, info: Deno.ServeHandlerInfo) => unknown)
    & { drain(): Promise<unknown> },
  requests: number,
): Promise<number> {
  const request = new Request("http://localhost/orders/1");
  const info = {
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40_000 },
    completed: Promise.resolve(),
  } as unknown as Deno.ServeHandlerInfo;
  const startedAt = performance.now();
  for (let i = 0; i < requests; i++) handler(request, info);
  await handler.drain();
  return (performance.now() - startedAt) * 1000 / requests;
}
