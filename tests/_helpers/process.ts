// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Runs a small program in a process of its own, for the claims a test can
// only make from outside: that nothing ends the process, or that a signal
// does. The program imports the package as `@afterward/background-tasks`
// (and its entry points as `@afterward/background-tasks/kv`, say).

const root = new URL("../../", import.meta.url);

/** A running program, its output read line by line. */
export interface Script extends AsyncDisposable {
  /** The process. */
  readonly child: Deno.ChildProcess;
  /** The next line of standard output; fails after `timeout` ms without one. */
  nextLine(): Promise<string>;
  /** Waits for the exit, failing after `timeout` ms, and returns all output, the lines read before included. */
  exit(): Promise<{ code: number; stdout: string[]; stderr: string }>;
}

/**
 * Starts `source` with `deno run`, the given permission flags and `env`
 * added to this process's environment. Every wait
 * on it is bounded by `timeout` ms, after which the process is killed and
 * the test fails instead of hanging (a frozen event loop must not freeze
 * the suite too).
 */
export async function startScript(
  source: string,
  flags: string[] = [],
  timeout = 20_000,
  env: Record<string, string> = {},
): Promise<Script> {
  const dir = await Deno.makeTempDir({ prefix: "background_tasks_process_" });
  const path = `${dir}/main.ts`;
  await Deno.writeTextFile(
    path,
    source.replaceAll(
      /"@afterward\/background-tasks(?:\/(\w+))?"/g,
      (_match, entry = "mod") =>
        JSON.stringify(new URL(`${entry}.ts`, root).href),
    ),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      // The package's own import map, for the entry points that use npm.
      `--config=${new URL("deno.json", root).pathname}`,
      `--lock=${new URL("deno.lock", root).pathname}`,
      "--allow-read",
      ...flags,
      path,
    ],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = child.stdout
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(splitLines())[Symbol.asyncIterator]();
  const stderr = new Response(child.stderr).text();
  const seen: string[] = [];

  async function bounded<T>(promise: Promise<T>, what: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        promise,
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => {
            try {
              child.kill("SIGKILL");
            } catch {
              // Gone already.
            }
            reject(new Error(`${what} took more than ${timeout} ms`));
          }, timeout);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  async function rest(): Promise<string[]> {
    for (
      let line = await stdout.next();
      !line.done;
      line = await stdout.next()
    ) {
      seen.push(line.value);
    }
    return seen;
  }

  return {
    child,
    async nextLine() {
      const line = await bounded(stdout.next(), "a line of output");
      if (line.done) throw new Error(`the process ended: ${await stderr}`);
      seen.push(line.value);
      return line.value;
    },
    async exit() {
      const { code } = await bounded(child.status, "the exit");
      return { code, stdout: await rest(), stderr: await stderr };
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await child.status;
      await rest();
      await stderr;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function splitLines(): TransformStream<string, string> {
  let buffer = "";
  return new TransformStream({
    transform(chunk, controller) {
      buffer += chunk;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) controller.enqueue(line);
    },
    flush(controller) {
      if (buffer !== "") controller.enqueue(buffer);
    },
  });
}
