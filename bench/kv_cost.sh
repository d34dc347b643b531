#!/bin/bash
# What a stored chain costs the Deno KV backend and an awaited kv.enqueue(), in the manner of
# ../shared/bench/durable.sh (its server, wrk -c32, server on core 0, wrk on core 1): answered req/s, then
# CPU µs per request of the server's threads (its main thread, "deno", and Deno KV's SQLite thread,
# "sw-0", from /proc/PID/task/*/stat) and bytes written per request (wchar of /proc/PID/io), over the
# measured run. CPU time and bytes move less than req/s when other programs share the machine.
# Usage, from the project's root: bench/kv_cost.sh ROUNDS SECONDS [CHECKOUT...]
# Each round runs both variants in each checkout in turn (the project's root by default; a git worktree of
# an older commit to compare).
set -u
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null 2>&1 || { echo "no wrk (apt-get install wrk)"; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
# ../shared/bench beside the project's checkout (or beside its worktrees' folder), or SHARED_BENCH.
server=""
for d in "${SHARED_BENCH:-}" "$here/../../shared/bench" "$here/../../../shared/bench"; do
  [ -n "$d" ] && [ -f "$d/durable_server.ts" ] && { server="$d/durable_server.ts"; break; }
done
[ -n "$server" ] || { echo "no durable_server.ts: set SHARED_BENCH to ../shared/bench"; exit 1; }
rounds=${1:-3}; dur=${2:-3}; shift 2 2>/dev/null
checkouts=("$@"); [ ${#checkouts[@]} -eq 0 ] && checkouts=("$(pwd)")
log=$(mktemp)
trap 'rm -f $log' EXIT
# Per thread name, CPU ticks; then "io" and the bytes written so far.
snapshot() {
  for t in /proc/$1/task/*; do echo "$(basename $t) $(tr ' ' _ < $t/comm) $(awk '{print $14+$15}' $t/stat)"; done
  echo "io io $(awk '/wchar/ {print $2}' /proc/$1/io)"
}
for r in $(seq 1 $rounds); do
  for dir in "${checkouts[@]}"; do
    for v in "kv backend" "raw kv.enqueue awaited"; do
      port=$((20000 + RANDOM % 20000)); cport=$((port + 1))
      (cd "$dir" && exec taskset -c 0 deno run -A --unstable-kv --config deno.json "$server" "$v" $port $cport) > $log 2>&1 &
      pid=$!
      for i in $(seq 1 100); do grep -q listening $log && break; sleep 0.1; done
      taskset -c 1 wrk -t1 -c32 -d1s http://127.0.0.1:$port/ >/dev/null 2>&1
      before=$(snapshot $pid | sort)
      out=$(taskset -c 1 wrk -t1 -c32 -d${dur}s http://127.0.0.1:$port/ 2>&1)
      after=$(snapshot $pid | sort)
      reqs=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
      curl -s --max-time 120 http://127.0.0.1:$cport/ >/dev/null
      kill $pid; wait $pid 2>/dev/null
      join <(echo "$before") <(echo "$after") | awk -v n="${reqs:-0}" -v d=$dur -v name="round $r | $(basename "$dir") | $v" '
        $2 == "io" { io = $5 - $3; next }
        { c = ($5 - $3) * 10000; all += c; if ($2 == "deno") main += c; else if ($2 == "sw-0") kv += c }
        END {
          if (n == 0) { print name " | no answer"; exit }
          printf "%s | req/s %d | CPU µs/req main %.1f, sqlite %.1f, all %.1f | written B/req %.0f\n", name, n / d, main / n, kv / n, all / n, io / n
        }'
    done
  done
done
