// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A TCP proxy in front of Redis that cuts the first transaction it sees, on
// the first connection that sends MULTI, in one of two places:
//
// - "before-exec": it forwards the commands up to, not including, their EXEC,
//   lets Redis's answers to them through (so that the client has seen the
//   transaction begin), then closes both sockets. Redis discards a
//   transaction whose connection closes before EXEC.
// - "exec-reply": it forwards EXEC too, so Redis runs the transaction, but
//   closes both sockets before EXEC's answer reaches the client.
//
// Or, with "store-reply", it cuts the first store, the first MULTI, EVALSHA
// or EVAL (a flow's transaction, or a pipeline of jobs) on the first
// connection that sends one: everything reaches Redis, which runs it, but
// of the answers from that command on only the first `answers` reach the
// client; once `hold` resolves, both sockets close. ioredis sends again by
// itself what got no answer at all, and gives up (AbortError) the rest of
// what got part of its answers.
//
// Later connections, and that one's bytes before its store, are forwarded as
// they are.
//
// startPostgresProxy() does the same in front of PostgreSQL, for the first
// statement that stores chains: cut before PostgreSQL runs it, or after it
// committed it with the whole answer kept back.

/** A running proxy, closed with its connections when disposed. */
export interface TcpProxy extends AsyncDisposable {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  /** How many transactions (or stores) it cut. */
  readonly cuts: number;
  /** Resolves once a cut is ready and waits for `hold`. */
  readonly holding: Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const QUEUED = encoder.encode("+QUEUED\r\n");

/**
 * Where the RESP command starting at `start` ends, and its name, or
 * undefined if `buffer` does not hold all of it yet. Clients send commands
 * as arrays of bulk strings.
 */
function parseCommand(
  buffer: Uint8Array,
  start: number,
): { end: number; name: string } | undefined {
  function line(from: number): { text: string; next: number } | undefined {
    for (let i = from; i + 1 < buffer.length; i++) {
      if (buffer[i] === 13 && buffer[i + 1] === 10) {
        return { text: decoder.decode(buffer.subarray(from, i)), next: i + 2 };
      }
    }
    return undefined;
  }
  const header = line(start);
  if (header === undefined) return undefined;
  if (!header.text.startsWith("*")) {
    throw new Error(`Unexpected RESP from the client: ${header.text}`);
  }
  let position = header.next;
  let name = "";
  for (let i = 0; i < Number(header.text.slice(1)); i++) {
    const size = line(position);
    if (size === undefined) return undefined;
    const length = Number(size.text.slice(1));
    const end = size.next + length + 2;
    if (end > buffer.length) return undefined;
    if (i === 0) {
      name = decoder
        .decode(buffer.subarray(size.next, size.next + length))
        .toUpperCase();
    }
    position = end;
  }
  return { end: position, name };
}

/**
 * Where the RESP answer starting at `start` ends, or undefined if `buffer`
 * does not hold all of it yet. Redis answers ioredis in RESP2.
 */
function parseReply(buffer: Uint8Array, start: number): number | undefined {
  let lineEnd = -1;
  for (let i = start; i + 1 < buffer.length; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10) {
      lineEnd = i;
      break;
    }
  }
  if (lineEnd === -1) return undefined;
  const type = String.fromCharCode(buffer[start]!);
  const size = Number(decoder.decode(buffer.subarray(start + 1, lineEnd)));
  const next = lineEnd + 2;
  if (type === "$") {
    if (size < 0) return next;
    return next + size + 2 <= buffer.length ? next + size + 2 : undefined;
  }
  if (type === "*") {
    let position: number | undefined = next;
    for (let i = 0; i < size && position !== undefined; i++) {
      position = parseReply(buffer, position);
    }
    return position;
  }
  if ("+-:".includes(type)) return next;
  throw new Error(`Unexpected RESP from Redis: ${type}`);
}

/** Where each occurrence of `needle` in `haystack` ends. */
function ends(haystack: Uint8Array, needle: Uint8Array): number[] {
  const found: number[] = [];
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    found.push(i + needle.length);
  }
  return found;
}

/** Options for {@linkcode startTcpProxy}. */
export interface TcpProxyOptions {
  /** Where to cut the first transaction, or the first store. */
  cut?: "before-exec" | "exec-reply" | "store-reply";
  /**
   * With "store-reply", how many answers, from the store's first command
   * on, reach the client before the cut.
   *
   * @default {0}
   */
  answers?: number;
  /** Resolves when the cut may happen: until then, the connection hangs. */
  hold?: Promise<void>;
  /**
   * Resolves when the proxy starts looking for what to cut: what is sent
   * before goes through as it is.
   */
  arm?: Promise<void>;
}

/** Starts a proxy on a free port of 127.0.0.1 that forwards to `target`. */
export function startTcpProxy(
  target: number,
  { cut = "before-exec", hold = Promise.resolve(), answers = 0, arm }:
    TcpProxyOptions = {},
): TcpProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sockets = new Set<Deno.Conn>();
  const pumps: Promise<void>[] = [];
  let armed = arm === undefined;
  arm?.then(() => armed = true);
  const holding = Promise.withResolvers<void>();
  let cuts = 0;

  function closeQuietly(conn: Deno.Conn): void {
    if (!sockets.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }

  async function proxy(client: Deno.Conn): Promise<void> {
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: target });
    } catch {
      closeQuietly(client);
      return;
    }
    sockets.add(server);
    if (cut === "store-reply") return await cutStore(client, server);
    // Set once this connection sent MULTI: how many commands Redis must
    // answer QUEUED to, how many it did, and whether EXEC was seen.
    let cutting:
      | {
        commands: number;
        queued: number;
        exec: boolean;
        answered: boolean;
        done: boolean;
      }
      | undefined;
    const closeBoth = () => {
      closeQuietly(client);
      closeQuietly(server);
    };
    /** Cuts the transaction once Redis has queued all of its commands. */
    async function cutIfQueued(): Promise<boolean> {
      if (!cutting?.exec || cutting.queued < cutting.commands) return false;
      // Cut after EXEC only once Redis has answered it: it has run.
      if (cut === "exec-reply" && !cutting.answered) return false;
      if (cutting.done) return true;
      cutting.done = true;
      holding.resolve();
      await hold;
      cuts++;
      closeBoth();
      return true;
    }

    async function upstream(): Promise<void> {
      let pending = new Uint8Array(0);
      const chunk = new Uint8Array(64 * 1024);
      while (true) {
        const read = await client.read(chunk);
        if (read === null) break;
        // Read as commands even while nothing is to be cut, so that what is
        // kept back is always a command's start: the proxy may be armed, or
        // another connection cut, in the middle of one.
        const joined = new Uint8Array(pending.length + read);
        joined.set(pending);
        joined.set(chunk.subarray(0, read), pending.length);
        let position = 0;
        while (position < joined.length) {
          const command = parseCommand(joined, position);
          if (command === undefined) break;
          if (cutting !== undefined && command.name === "EXEC") {
            cutting.exec = true;
            if (cut === "before-exec") {
              await server.write(joined.subarray(0, position));
              await cutIfQueued();
              return;
            }
          } else if (cutting !== undefined) {
            cutting.commands++;
          } else if (armed && command.name === "MULTI") {
            armed = false;
            cutting = {
              commands: 0,
              queued: 0,
              exec: false,
              answered: false,
              done: false,
            };
          }
          position = command.end;
        }
        await server.write(joined.subarray(0, position));
        pending = joined.slice(position);
      }
      closeBoth();
    }

    async function downstream(): Promise<void> {
      const chunk = new Uint8Array(64 * 1024);
      // The end of the previous chunk, for an answer split across two.
      let tail = new Uint8Array(0);
      while (true) {
        const read = await server.read(chunk);
        if (read === null) break;
        if (cutting === undefined) {
          await client.write(chunk.subarray(0, read));
          continue;
        }
        const joined = new Uint8Array(tail.length + read);
        joined.set(tail);
        joined.set(chunk.subarray(0, read), tail.length);
        // Where each QUEUED ends in this chunk.
        const queued = ends(joined, QUEUED).map((end) => end - tail.length);
        tail = joined.slice(Math.max(0, joined.length - QUEUED.length + 1));
        let forward = read;
        if (cut === "exec-reply" && cutting.exec) {
          // What follows the last QUEUED is EXEC's answer: keep it back.
          const missing = cutting.commands - cutting.queued;
          if (missing <= 0) forward = 0;
          else if (missing <= queued.length) forward = queued[missing - 1]!;
          cutting.answered = forward < read;
        }
        cutting.queued += queued.length;
        await client.write(chunk.subarray(0, forward));
        if (await cutIfQueued()) return;
      }
      closeBoth();
    }

    const ignore = () => {};
    await Promise.all([
      upstream().catch(ignore),
      downstream().catch(ignore),
    ]);
    closeBoth();
  }

  /**
   * Forwards a connection, cutting its first store after Redis ran it (see
   * "store-reply" above).
   */
  async function cutStore(client: Deno.Conn, server: Deno.Conn): Promise<void> {
    // Commands sent before the store, and answers forwarded; `store` is the
    // index of the store's first command, once it is sent.
    let sent = 0;
    let store: number | undefined;
    let answered = 0;
    const closeBoth = () => {
      closeQuietly(client);
      closeQuietly(server);
    };
    async function upstream(): Promise<void> {
      let pending = new Uint8Array(0);
      const chunk = new Uint8Array(64 * 1024);
      while (true) {
        const read = await client.read(chunk);
        if (read === null) break;
        const joined = new Uint8Array(pending.length + read);
        joined.set(pending);
        joined.set(chunk.subarray(0, read), pending.length);
        let position = 0;
        // Counted from the connection's start, armed or not, as its answers
        // are: an answer to a command sent before the proxy was armed is not
        // one of the store's.
        while (position < joined.length) {
          const command = parseCommand(joined, position);
          if (command === undefined) break;
          // Another connection's store disarmed the proxy: this one is not
          // cut.
          if (
            armed && store === undefined &&
            ["MULTI", "EVALSHA", "EVAL"].includes(command.name)
          ) {
            armed = false;
            store = sent;
          }
          sent++;
          position = command.end;
        }
        await server.write(joined.subarray(0, position));
        pending = joined.slice(position);
      }
      closeBoth();
    }
    async function downstream(): Promise<void> {
      let pending = new Uint8Array(0);
      const chunk = new Uint8Array(64 * 1024);
      while (true) {
        const read = await server.read(chunk);
        if (read === null) break;
        const joined = new Uint8Array(pending.length + read);
        joined.set(pending);
        joined.set(chunk.subarray(0, read), pending.length);
        let position = 0;
        let held = false;
        while (position < joined.length) {
          if (store !== undefined && answered >= store + answers) {
            held = true;
            break;
          }
          const end = parseReply(joined, position);
          if (end === undefined) break;
          answered++;
          position = end;
        }
        await client.write(joined.subarray(0, position));
        pending = joined.slice(position);
        if (held) {
          // Redis answered the store: it ran.
          holding.resolve();
          await hold;
          cuts++;
          closeBoth();
          return;
        }
      }
      closeBoth();
    }
    const ignore = () => {};
    await Promise.all([
      upstream().catch(ignore),
      downstream().catch(ignore),
    ]);
    closeBoth();
  }

  const accepting = (async () => {
    try {
      for await (const client of listener) {
        sockets.add(client);
        pumps.push(proxy(client));
      }
    } catch {
      // The listener was closed.
    }
  })();

  return {
    port: (listener.addr as Deno.NetAddr).port,
    get cuts() {
      return cuts;
    },
    holding: holding.promise,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const socket of [...sockets]) closeQuietly(socket);
      await Promise.all(pumps);
    },
  };
}

/** Options for {@linkcode startPostgresProxy}. */
export interface PostgresProxyOptions {
  /**
   * Where to cut the first store: "before-execute" forwards its statement's
   * Parse and Bind but not its Execute, so that PostgreSQL never runs it;
   * "after-commit" forwards all of it and lets PostgreSQL run and commit it,
   * but keeps every byte of the answer back.
   */
  cut: "before-execute" | "after-commit";
  /** Resolves when the cut may happen: until then, the connection hangs. */
  hold?: Promise<void>;
}

/**
 * Starts a proxy on a free port of 127.0.0.1 that forwards to the
 * PostgreSQL at `target`, and cuts, as `cut` says, the first store of
 * chains it sees: the first statement that calls BullMQ's `add_flow` or
 * `add_jobs_bulk`, on whichever connection sends it. node-postgres sends a
 * query with parameters as Parse, Bind, Describe, Execute and Sync
 * messages, and one query at a time on a connection: once the store is
 * sent, every byte PostgreSQL sends on that connection answers it, up to
 * ReadyForQuery, which it sends once the statement's transaction ended.
 * Later stores, and the other connections, are forwarded as they are.
 */
export function startPostgresProxy(
  target: number,
  { cut, hold = Promise.resolve() }: PostgresProxyOptions,
): TcpProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sockets = new Set<Deno.Conn>();
  const pumps: Promise<void>[] = [];
  let armed = true;
  const holding = Promise.withResolvers<void>();
  let cuts = 0;

  function closeQuietly(conn: Deno.Conn): void {
    if (!sockets.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }

  async function proxy(client: Deno.Conn): Promise<void> {
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: target });
    } catch {
      closeQuietly(client);
      return;
    }
    sockets.add(server);
    const closeBoth = () => {
      closeQuietly(client);
      closeQuietly(server);
    };
    /** Set once this connection sent the store, PostgreSQL running it. */
    let storing = false;
    let cutDone = false;
    async function cutNow(): Promise<void> {
      if (cutDone) return;
      cutDone = true;
      holding.resolve();
      await hold;
      cuts++;
      closeBoth();
    }

    async function upstream(): Promise<void> {
      let pending = new Uint8Array(0);
      // The startup message has a length but no type byte.
      let started = false;
      const chunk = new Uint8Array(64 * 1024);
      while (true) {
        const read = await client.read(chunk);
        if (read === null) break;
        if (storing || (!armed && !storing)) {
          await server.write(chunk.subarray(0, read));
          continue;
        }
        const joined = new Uint8Array(pending.length + read);
        joined.set(pending);
        joined.set(chunk.subarray(0, read), pending.length);
        let position = 0;
        let found: number | undefined;
        while (true) {
          const header = started ? 5 : 4;
          if (position + header > joined.length) break;
          const view = new DataView(joined.buffer, position + header - 4, 4);
          const end = position + header - 4 + view.getUint32(0);
          if (end > joined.length) break;
          if (!started) {
            started = true;
          } else if (
            found === undefined && joined[position] === 0x50 /* Parse */ &&
            /\b(?:add_flow|add_jobs_bulk)\(/.test(
              decoder.decode(joined.subarray(position, end)),
            )
          ) {
            found = position;
          } else if (
            found !== undefined && cut === "before-execute" &&
            joined[position] === 0x45 /* Execute */
          ) {
            armed = false;
            await server.write(joined.subarray(0, position));
            await cutNow();
            return;
          }
          position = end;
        }
        if (found !== undefined && cut === "after-commit") {
          armed = false;
          storing = true;
          await server.write(joined);
          pending = new Uint8Array(0);
          continue;
        }
        if (found !== undefined) {
          // Wait for the Execute: keep what follows the store's start.
          await server.write(joined.subarray(0, found));
          pending = joined.slice(found);
          continue;
        }
        await server.write(joined.subarray(0, position));
        pending = joined.slice(position);
      }
      closeBoth();
    }

    async function downstream(): Promise<void> {
      const chunk = new Uint8Array(64 * 1024);
      let held = new Uint8Array(0);
      while (true) {
        const read = await server.read(chunk);
        if (read === null) break;
        if (!storing) {
          await client.write(chunk.subarray(0, read));
          continue;
        }
        // The store's answer: kept back, and read up to ReadyForQuery.
        const joined = new Uint8Array(held.length + read);
        joined.set(held);
        joined.set(chunk.subarray(0, read), held.length);
        held = joined;
        let position = 0;
        while (position + 5 <= held.length) {
          const type = held[position];
          const end = position + 1 +
            new DataView(held.buffer, position + 1, 4).getUint32(0);
          if (end > held.length) break;
          if (type === 0x5a /* ReadyForQuery */) return await cutNow();
          position = end;
        }
      }
      closeBoth();
    }

    const ignore = () => {};
    await Promise.all([
      upstream().catch(ignore),
      downstream().catch(ignore),
    ]);
    closeBoth();
  }

  const accepting = (async () => {
    try {
      for await (const client of listener) {
        sockets.add(client);
        pumps.push(proxy(client));
      }
    } catch {
      // The listener was closed.
    }
  })();

  return {
    port: (listener.addr as Deno.NetAddr).port,
    get cuts() {
      return cuts;
    },
    holding: holding.promise,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const socket of [...sockets]) closeQuietly(socket);
      await Promise.all(pumps);
    },
  };
}
