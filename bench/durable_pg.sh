#!/bin/bash
# The BullMQ backend on PostgreSQL beside what a user writes instead (an awaited queue.add() per request on
# BullMQ's PostgreSQL backend), and the same two on Redis, in the manner of ../shared/bench/durable.sh:
# answered req/s, drain after the run, stored chains/s over run + drain; server on core 0, wrk -c32 on core 1,
# a private PostgreSQL with its default durability (fsync, synchronous_commit: what an application's server
# has; PG_OPTIONS adds settings, such as "-c synchronous_commit=off") and a private redis-server.
# Usage, from the project's root: bench/durable_pg.sh ROUNDS SECONDS [VARIANT...]
# (the variants: the four below, and "raw queue.add awaited, stored once", what a user writes on Redis for the
# backend's guarantee that a store sent again after a lost answer adds nothing; by default the four).
set -u
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null 2>&1 || { echo "no wrk (apt-get install wrk)"; exit 1; }
command -v redis-server >/dev/null || apt-get install -y redis-server >/dev/null 2>&1 || { echo "no redis-server (apt-get install redis-server)"; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pgbin" ]; then
  apt-get install -y postgresql >/dev/null 2>&1 || { echo "no postgresql (apt-get install postgresql)"; exit 1; }
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
here=$(cd "$(dirname "$0")" && pwd)
rounds=${1:-3}; dur=${2:-3}
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# PostgreSQL refuses to run as root: as the postgres user then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
rp=$(free_port); pp=$(free_port)
rd=$(mktemp -d); pd=$(mktemp -d)
[ "$(id -u)" = 0 ] && chown postgres "$pd"
redis-server --port $rp --bind 127.0.0.1 --save "" --appendonly no --dir $rd --daemonize yes --pidfile $rd/pid >/dev/null
as_pg "$pgbin/initdb" -D "$pd/data" -U postgres --auth=trust --encoding=UTF8 >/dev/null
as_pg "$pgbin/pg_ctl" -D "$pd/data" -l "$pd/log" -w -o "-p $pp -k $pd -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_OPTIONS:-}" start >/dev/null
trap 'kill $(cat $rd/pid) 2>/dev/null; as_pg "$pgbin/pg_ctl" -D "$pd/data" -m fast -w stop >/dev/null; rm -rf $rd $pd' EXIT
export REDIS_PORT=$rp DATABASE_URL="postgres://postgres@127.0.0.1:$pp/postgres"
variants=("bullmq backend on postgres" "raw queue.add awaited on postgres" "bullmq backend" "raw queue.add awaited")
[ $# -gt 2 ] && variants=("${@:3}")
for r in $(seq 1 $rounds); do
  for v in "${variants[@]}"; do
    port=$((20000 + RANDOM % 20000)); cport=$((port + 1))
    taskset -c 0 deno run -A --config deno.json "$here/durable_pg_server.ts" "$v" $port $cport > "$rd/srv.log" 2>&1 &
    pid=$!
    for i in $(seq 1 100); do grep -q listening "$rd/srv.log" && break; sleep 0.1; done
    taskset -c 1 wrk -t1 -c32 -d1s http://127.0.0.1:$port/ >/dev/null 2>&1
    out=$(taskset -c 1 wrk -t1 -c32 -d${dur}s http://127.0.0.1:$port/ 2>&1)
    reqs=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}')
    drain=$(curl -s --max-time 120 http://127.0.0.1:$cport/)
    kill $pid; wait $pid 2>/dev/null
    echo "round $r | $v | answered/s $(awk -v n=$reqs -v d=$dur 'BEGIN{printf "%.0f", n/d}') | drain ms ${drain%.*} | stored/s $(awk -v n=$reqs -v d=$dur -v m=${drain:-0} 'BEGIN{printf "%.0f", n/(d+m/1000)}')"
  done
done
