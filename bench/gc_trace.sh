#!/bin/bash
# The collector's pauses behind latency.sh's tail: each VARIANT of ../shared/bench/server.ts (or of
# bench/completed_server.ts for fire100-parameters and fire100-completed) at a steady RATE req/s (h2load --h1, 50 clients, server on
# core 0, h2load on core 1, as latency.sh runs them) with V8's --trace-gc, and, over the 5 s from 3 s after the
# server started, the young-generation collections (scavenges: how many, their pauses in all, median, largest)
# and the full ones (mark-compact, with their incremental steps).
# Usage, from the project's root: bench/gc_trace.sh RATE VARIANT...
set -u
here=$(cd "$(dirname "$0")" && pwd)
rate=$1; shift
command -v h2load >/dev/null || apt-get install -y nghttp2-client >/dev/null 2>&1 || { echo "no h2load (apt-get install nghttp2-client)"; exit 1; }
# ../shared/bench beside the project's checkout (or beside its worktrees' folder), or SHARED_BENCH.
shared=""
for d in "${SHARED_BENCH:-}" "$here/../../shared/bench" "$here/../../../shared/bench"; do
  [ -n "$d" ] && [ -f "$d/server.ts" ] && { shared="$d"; break; }
done
[ -n "$shared" ] || { echo "no server.ts: set SHARED_BENCH to ../shared/bench"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
clients=50; per=$((rate / clients))
for v in "$@"; do
  server="$shared/server.ts"
  case $v in fire100-*) server="$here/completed_server.ts";; esac
  port=$(deno eval 'const l = Deno.listen({ hostname: "127.0.0.1", port: 0 }); console.log(l.addr.port); l.close()')
  taskset -c 0 deno run -A --v8-flags=--trace-gc "$server" "$v" "$port" > "$tmp/$v.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
  taskset -c 1 h2load --h1 -c $clients --rps $per -D 9 "http://127.0.0.1:$port/" >/dev/null 2>&1
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  # a line: "[pid:isolate]   T ms: Scavenge A (B) -> C (D) MB, pooled: E MB, PAUSE / F ms ..."
  awk -v v="$v" '
    match($0, / [0-9]+ ms: /) {
      t = substr($0, RSTART + 1, RLENGTH - 6) + 0
      if (t < 3000 || t > 8000) next
      if (!match($0, /[0-9.]+ \/ [0-9.]+ ms/)) next
      pause = substr($0, RSTART, RLENGTH); sub(/ \/.*/, "", pause); pause += 0
      if ($0 ~ /Scavenge/) { s[++ns] = pause; st += pause; if (pause > smax) smax = pause }
      else if ($0 ~ /Mark-Compact/) {
        nm++; mt += pause
        if (match($0, /\+ [0-9.]+ ms in/)) { step = substr($0, RSTART + 2, RLENGTH - 8); it += step }
      }
    }
    END {
      n = ns
      for (i = 2; i <= n; i++) { x = s[i]; for (j = i - 1; j > 0 && s[j] > x; j--) s[j + 1] = s[j]; s[j + 1] = x }
      printf "%s: in 5 s, %d scavenges, %.0f ms of pauses (median %.1f, largest %.1f); %d mark-compact, %.0f ms (+%.0f ms in incremental steps)\n",
        v, ns, st, (n ? s[int((n + 1) / 2)] : 0), smax, nm, mt, it
    }' "$tmp/$v.log"
done
