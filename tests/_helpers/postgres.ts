// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// PostgreSQL for the tests of the BullMQ backend on PostgreSQL: a private
// server per test file, made with Debian's `initdb` and `pg_ctl` in a
// directory of its own, on a free port of 127.0.0.1. PostgreSQL refuses to
// run as root, so the server runs as the `postgres` user when the tests run
// as root. Without the binaries the tests are skipped, unless
// REQUIRE_POSTGRES=1 says they must run (as .ci/run does).

/** The directory of `initdb` and `pg_ctl`: the newest of Debian's, or the PATH's. */
async function binDir(): Promise<string | undefined> {
  const versions: number[] = [];
  try {
    for await (const entry of Deno.readDir("/usr/lib/postgresql")) {
      if (/^\d+$/.test(entry.name)) versions.push(Number(entry.name));
    }
  } catch {
    // Not Debian's layout.
  }
  versions.sort((a, b) => b - a);
  for (const version of versions) {
    const dir = `/usr/lib/postgresql/${version}/bin`;
    if (await exists(`${dir}/initdb`)) return dir;
  }
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir !== "" && await exists(`${dir}/initdb`)) return dir;
  }
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

const bin = await binDir();

/** Whether the tests can start a PostgreSQL. */
export const postgresAvailable: boolean = bin !== undefined;

if (!postgresAvailable && Deno.env.get("REQUIRE_POSTGRES") === "1") {
  throw new Error(
    "REQUIRE_POSTGRES=1 but there is no initdb (apt-get install postgresql)",
  );
}

const said = "AFTERWARD_TESTS_SAID_POSTGRES_SKIPS";
if (!postgresAvailable && Deno.env.get(said) === undefined) {
  Deno.env.set(said, "1");
  console.error(
    "Skipping the BullMQ on PostgreSQL tests (shown as ignored): there is no initdb. Install PostgreSQL (apt-get install postgresql) and run deno task test again.",
  );
}

/** The options of a test that needs PostgreSQL. */
export const postgresTest = {
  ignore: !postgresAvailable,
  sanitizeOps: false,
  sanitizeResources: false,
};

/** A private PostgreSQL server that a test can stop, kill and start again. */
export interface PostgresServer extends AsyncDisposable {
  readonly port: number;
  /** The password of the `postgres` user. */
  readonly password: string;
  /** `postgres://postgres:<password>@127.0.0.1:<port>/postgres`. */
  readonly url: string;
  /** Its directory; the cluster's files are in `data/` under it. */
  readonly dir: string;
  /** Stops it at once (`pg_ctl stop -m immediate`), as a crash would. */
  kill(): Promise<void>;
  /** Starts it again on the same port, and waits until it accepts connections. */
  restart(): Promise<void>;
}

/** Whether the tests run as root (asked of `id`: Deno.uid() needs --allow-sys). */
async function runAsRoot(): Promise<boolean> {
  try {
    const { stdout } = await new Deno.Command("id", { args: ["-u"] }).output();
    return new TextDecoder().decode(stdout).trim() === "0";
  } catch {
    return false;
  }
}

const isRoot = await runAsRoot();

/** Runs a PostgreSQL binary, as `postgres` when the tests run as root. */
async function run(command: string, args: string[]): Promise<string> {
  const [program, programArgs] = isRoot
    ? ["runuser", ["-u", "postgres", "--", `${bin}/${command}`, ...args]]
    : [`${bin}/${command}`, args];
  const { success, stdout, stderr } = await new Deno.Command(program, {
    args: programArgs,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!success) {
    throw new Error(
      `${command} failed: ${decoder.decode(stderr)}${decoder.decode(stdout)}`,
    );
  }
  return decoder.decode(stdout);
}

/** Starts a PostgreSQL server in a new directory, on a free port of 127.0.0.1. */
export async function startPostgres(
  { password = "test-secret", durable = false }: {
    password?: string;
    /** Whether it writes to disk as a production server does (benchmarks). */
    durable?: boolean;
  } = {},
): Promise<PostgresServer> {
  if (bin === undefined) throw new Error("There is no initdb");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const dir = await Deno.makeTempDir({ prefix: "afterward_postgres_" });
  await Deno.writeTextFile(`${dir}/password`, password);
  if (isRoot) {
    await new Deno.Command("chown", { args: ["-R", "postgres", dir] })
      .output();
  }
  await run("initdb", [
    "-D",
    `${dir}/data`,
    "-U",
    "postgres",
    "--auth=scram-sha-256",
    `--pwfile=${dir}/password`,
    "--no-sync",
    "--encoding=UTF8",
  ]);
  const options = [
    `-p ${port}`,
    `-k ${dir}`,
    "-c listen_addresses=127.0.0.1",
    // What a commit wrote reaches the operating system before PostgreSQL
    // answers (synchronous_commit stays on), so that it survives kill(), as
    // a process crash; not the disk (fsync off), which only a machine's
    // crash would need.
    ...durable ? [] : ["-c fsync=off", "-c full_page_writes=off"],
    "-c max_connections=200",
  ].join(" ");
  let running = false;
  async function start(): Promise<void> {
    await run("pg_ctl", [
      "-D",
      `${dir}/data`,
      "-o",
      options,
      "-l",
      `${dir}/log`,
      "-w",
      "start",
    ]);
    running = true;
  }
  async function stop(mode: "immediate" | "fast"): Promise<void> {
    if (!running) return;
    running = false;
    await run("pg_ctl", ["-D", `${dir}/data`, "-m", mode, "-w", "stop"]);
  }
  await start();
  return {
    port,
    password,
    url: `postgres://postgres:${
      encodeURIComponent(password)
    }@127.0.0.1:${port}/postgres`,
    dir,
    kill: () => stop("immediate"),
    restart: start,
    async [Symbol.asyncDispose]() {
      await stop("fast");
      await Deno.remove(dir, { recursive: true });
    },
  };
}
