// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Redis for the BullMQ tests: the server .ci/run started (REDIS_PORT), else a
// private redis-server on a free port of 127.0.0.1, else none, and the tests
// are skipped, unless REQUIRE_REDIS=1 says they must run.

async function hasRedisServer(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("redis-server", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

/** The port of the Redis .ci/run started, if any (an empty value is none). */
const sharedPort = Deno.env.get("REDIS_PORT") || undefined;

/** Whether redis-server is installed, for the tests that stop their own. */
export const redisServerInstalled: boolean = await hasRedisServer();

/** Whether the tests can have a Redis. */
export const redisAvailable: boolean = sharedPort !== undefined ||
  redisServerInstalled;

if (!redisAvailable && Deno.env.get("REQUIRE_REDIS") === "1") {
  throw new Error("REQUIRE_REDIS=1 but there is no redis-server");
}

// Said once per run, so that skipped tests are never mistaken for passing
// ones. Each test file evaluates this module anew, in an isolate of its own,
// but they share the process's environment.
const said = "AFTERWARD_TESTS_SAID_REDIS_SKIPS";
if (Deno.env.get(said) !== undefined) {
  // Said by an earlier test file.
} else if (!redisAvailable) {
  console.error(
    "Skipping the BullMQ backend's tests (shown as ignored): there is no redis-server on the PATH and REDIS_PORT is not set. To run them, install redis-server (apt-get install redis-server, or brew install redis), or set REDIS_PORT to the port of a Redis you started, and run deno task test again.",
  );
} else if (!redisServerInstalled) {
  console.error(
    "Skipping the BullMQ tests that stop and restart a Redis of their own (shown as ignored): they need redis-server on the PATH, and only REDIS_PORT is set. Install redis-server to run them.",
  );
}
if (!redisServerInstalled) Deno.env.set(said, "1");

/** The options of a test that needs a Redis: BullMQ keeps timers and connections that outlive a test by a moment. */
export const redisTest = {
  ignore: !redisAvailable,
  sanitizeOps: false,
  sanitizeResources: false,
};

/** The options of a test that kills and restarts a redis-server of its own. */
export const ownRedisTest = { ...redisTest, ignore: !redisServerInstalled };

/** A Redis for one test, stopped when disposed if the test started it. */
export interface TestRedis extends AsyncDisposable {
  port: number;
}

async function ping(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buffer = new Uint8Array(16);
      const read = await conn.read(buffer);
      // A server that wants a password answers too.
      return /^(\+PONG|-NOAUTH)/.test(
        new TextDecoder().decode(buffer.subarray(0, read ?? 0)),
      );
    } finally {
      conn.close();
    }
  } catch {
    return false;
  }
}

/** Connects to the shared Redis, or starts a private one. */
export async function startRedis(): Promise<TestRedis> {
  if (sharedPort !== undefined) {
    const port = Number(sharedPort);
    // A shared Redis that does not answer would leave BullMQ retrying forever.
    if (!(await ping(port))) {
      throw new Error(`No Redis answers on REDIS_PORT=${sharedPort}`);
    }
    return { port, [Symbol.asyncDispose]: async () => {} };
  }
  return await startRedisServer();
}

/** A private redis-server that a test can kill and start again. */
export interface RedisServer extends AsyncDisposable {
  readonly port: number;
  /** Kills it with SIGKILL, as a crash would, and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts it again on the same port, and waits until it answers. */
  restart(): Promise<void>;
}

/**
 * Starts a redis-server on a free port of 127.0.0.1. With `durable`, it
 * writes every change to an append-only file before answering, so that what
 * it acknowledged survives `kill()`; with `password`, it requires it.
 */
export async function startRedisServer(
  { durable = false, password }: { durable?: boolean; password?: string } = {},
): Promise<RedisServer> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const dir = durable ? await Deno.makeTempDir() : undefined;
  let child: Deno.ChildProcess | undefined;
  async function start(): Promise<void> {
    child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        ...(dir === undefined
          ? ["--appendonly", "no"]
          : ["--appendonly", "yes", "--appendfsync", "always", "--dir", dir]),
        ...(password === undefined ? [] : ["--requirepass", password]),
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    for (let tries = 0; !(await ping(port)); tries++) {
      if (tries > 200) throw new Error("redis-server did not start");
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  async function stop(signal: Deno.Signal): Promise<void> {
    if (child === undefined) return;
    const stopping = child;
    child = undefined;
    stopping.kill(signal);
    await stopping.status;
  }
  await start();
  return {
    port,
    kill: () => stop("SIGKILL"),
    restart: start,
    async [Symbol.asyncDispose]() {
      await stop("SIGTERM");
      if (dir !== undefined) await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A MONITOR connection waiting for a command, closed when disposed. */
export interface RedisMonitor extends Disposable {
  /** Resolves as soon as Redis runs the command. */
  readonly seen: Promise<void>;
}

/**
 * Watches Redis, through MONITOR, for a command (such as `multi`), to act at
 * that moment.
 */
export async function monitorRedis(
  port: number,
  command: string,
): Promise<RedisMonitor> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode("MONITOR\r\n"));
  const needle = `] "${command.toLowerCase()}"`;
  const seen = (async () => {
    const decoder = new TextDecoder();
    let text = "";
    for await (const chunk of conn.readable) {
      text += decoder.decode(chunk, { stream: true }).toLowerCase();
      if (text.includes(needle)) return;
      text = text.slice(-needle.length);
    }
    throw new Error(`Redis closed the MONITOR connection before "${command}"`);
  })();
  // Disposed before the command ran: nobody waits for it any more.
  seen.catch(() => {});
  return {
    seen,
    [Symbol.dispose]() {
      try {
        conn.close();
      } catch {
        // Closed already: Redis went away, or the readable ended.
      }
    },
  };
}
