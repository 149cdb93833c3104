#!/usr/bin/env bash
# Load test of genesis-server on loopback (release build), three measurements:
#   1. idle RSS after start;
#   2. plan mode under wrk for DURATION seconds: requests/s, latency percentiles,
#      errors, and RSS sampled every 5 s from /proc/<pid>/status (flat = no leak);
#   3. RSS and thread count with RUNS concurrent runs on slow stub agents
#      (scripts/stub_agent.py).
#
# usage: scripts/loadtest.sh [DURATION_SECONDS=60] [CONNECTIONS=64] [WRK_THREADS=1]
# env:   PORT (18080), STUB_PORT (18081), RUNS (100), RUN_DELAY (agent seconds, 3),
#        LOG_FILTER (server log filter, "info" as in config/genesis.toml)
# needs: wrk (apt-get install -y wrk), curl, python3.
#
# Every request goes to 127.0.0.1 only; wrk stops after DURATION seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-60}
CONNS=${2:-64}
THREADS=${3:-1}
PORT=${PORT:-18080}
STUB_PORT=${STUB_PORT:-18081}
RUNS=${RUNS:-100}
RUN_DELAY=${RUN_DELAY:-3}
LOG_FILTER=${LOG_FILTER:-info}
BASE="http://127.0.0.1:$PORT"

for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y $tool)" >&2; exit 1; }
done

cargo build --release -p genesis-server >&2
BIN="${CARGO_TARGET_DIR:-target}/release/genesis-server"
WORK=$(mktemp -d -t genesis-loadtest.XXXXXX)
SERVER_PID=""
STUB_PID=""
SAMPLER_PID=""
cleanup() {
  for pid in "$SAMPLER_PID" "$SERVER_PID" "$STUB_PID"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Every built-in agent is served by the stub (used by the concurrent-runs phase).
CONFIG="$WORK/loadtest.toml"
: > "$CONFIG"
for agent in spec architect builder frontend backend qa security deploy monitoring \
  marketing sales support analytics research finance darwin; do
  printf '[backends.%s]\ntype = "http"\nurl = "http://127.0.0.1:%s/tasks"\ntimeout = "60s"\n\n' \
    "$agent" "$STUB_PORT" >> "$CONFIG"
done

python3 scripts/stub_agent.py "$STUB_PORT" "$RUN_DELAY" &
STUB_PID=$!

# The defaults allow 100 requests/min per IP and 100 runs in progress per caller: a
# load test from one IP and one (anonymous) caller must raise them.
GENESIS_SERVER__BIND="127.0.0.1:$PORT" \
GENESIS_SERVER__MAX_RUNS_PER_SUBJECT=0 \
GENESIS_SERVER__DATA_DIR="$WORK/data" \
GENESIS_SECURITY__RATE_LIMITS__PER_IP_PER_MINUTE=100000000 \
GENESIS_SECURITY__RATE_LIMITS__PER_IP_BURST=1000000 \
GENESIS_SECURITY__RATE_LIMITS__PER_AGENT_PER_MINUTE=100000000 \
GENESIS_SECURITY__RATE_LIMITS__PER_AGENT_BURST=1000000 \
GENESIS_TELEMETRY__FILTER="$LOG_FILTER" \
  "$BIN" --config "$CONFIG" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 200); do
  curl -fs "$BASE/ready" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -fs "$BASE/ready" >/dev/null || { echo "server not ready" >&2; cat "$WORK/server.log" >&2; exit 1; }

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
mb() { awk -v kb="$1" 'BEGIN {printf "%.1f", kb / 1024}'; }

sleep 2
IDLE_KB=$(rss_kb)
echo "== idle RSS: $(mb "$IDLE_KB") MB"

# Plan-mode requests, rotating over several realistic requests so the routing cache
# does not answer every one.
cat > "$WORK/plan.lua" <<'LUA'
local requests = {
  "Fix the login bug",
  "Add a dark mode toggle to the settings page",
  "Write unit tests for the payment service",
  "Launch a marketing campaign for our new app and analyse the results",
  "Set up monitoring and alerts for the API latency",
  "Research competitor pricing and summarise it",
  "Deploy the new release to staging",
  "Refactor the user service to use async database calls",
}
local bodies = {}
for i, r in ipairs(requests) do
  bodies[i] = '{"description":"' .. r .. '","mode":"plan"}'
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/api/tasks", {["Content-Type"] = "application/json"}, bodies[(n % #bodies) + 1])
end
LUA

# Warm up (connections, caches, allocator) before measuring.
wrk -t"$THREADS" -c"$CONNS" -d5s -s "$WORK/plan.lua" "$BASE" >/dev/null

( t=0; while kill -0 "$SERVER_PID" 2>/dev/null; do echo "$t $(rss_kb)"; sleep 5; t=$((t + 5)); done ) > "$WORK/rss.txt" &
SAMPLER_PID=$!
echo "== plan mode: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency (POST /api/tasks, mode=plan)"
wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/plan.lua" "$BASE" | tee "$WORK/wrk.txt"
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
echo "== RSS during the plan load (seconds, kB):"
tr '\n' ' ' < "$WORK/rss.txt"; echo
RSS_MIN=$(awk 'NR==1 || $2<m {m=$2} END {print m}' "$WORK/rss.txt")
RSS_MAX=$(awk '$2>m {m=$2} END {print m}' "$WORK/rss.txt")
RSS_FIRST=$(awk 'NR==1 {print $2}' "$WORK/rss.txt")
RSS_LAST=$(awk '{l=$2} END {print l}' "$WORK/rss.txt")

# Concurrent runs: RUNS run-mode submissions at once, RSS sampled while they run.
echo "== $RUNS concurrent runs (agents answer after ${RUN_DELAY}s)"
seq 1 "$RUNS" | xargs -P 50 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
  -H 'content-type: application/json' \
  -d '{"description":"Fix the login bug","mode":"run","idempotency_key":"loadtest-{}"}' \
  "$BASE/api/tasks" > "$WORK/submit.txt"
ACCEPTED=$(grep -c '^202$' "$WORK/submit.txt" || true)
PEAK_KB=0
PEAK_THREADS=0
RUNNING_MAX=0
for _ in $(seq 1 600); do
  kb=$(rss_kb); [ "$kb" -gt "$PEAK_KB" ] && PEAK_KB=$kb
  threads=$(ls "/proc/$SERVER_PID/task" | wc -l); [ "$threads" -gt "$PEAK_THREADS" ] && PEAK_THREADS=$threads
  running=$(curl -s "$BASE/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"]["running"])')
  [ "$running" -gt "$RUNNING_MAX" ] && RUNNING_MAX=$running
  [ "$running" -eq 0 ] && break
  sleep 0.5
done
SUCCEEDED=$(curl -s "$BASE/api/tasks?status=succeeded&limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))')

echo
echo "== summary"
echo "idle RSS:                 $(mb "$IDLE_KB") MB"
echo "plan mode requests/s:     $(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk.txt")"
echo "plan mode latency p50:    $(awk '$1=="50%" {print $2}' "$WORK/wrk.txt")"
echo "plan mode latency p99:    $(awk '$1=="99%" {print $2}' "$WORK/wrk.txt")"
echo "non-2xx responses:        $(awk '/Non-2xx/ {print $5}' "$WORK/wrk.txt" | grep . || echo 0)"
echo "socket errors:            $(grep 'Socket errors' "$WORK/wrk.txt" || echo none)"
echo "RSS under load:           first $(mb "$RSS_FIRST") MB, last $(mb "$RSS_LAST") MB, min $(mb "$RSS_MIN") MB, max $(mb "$RSS_MAX") MB"
echo "runs accepted (202):      $ACCEPTED / $RUNS; most running at once: $RUNNING_MAX; succeeded: $SUCCEEDED"
echo "RSS peak with runs:       $(mb "$PEAK_KB") MB ($PEAK_THREADS threads at most)"
echo "server log lines:         $(wc -l < "$WORK/server.log")"
