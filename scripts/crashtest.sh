#!/usr/bin/env bash
# Crash test of the release genesis-server binary on loopback: submit RUNS runs to slow
# stub agents, SIGKILL the server mid-run, restart it on the same data dir, and check
# that every accepted run completes, none is lost, and no task whose success was
# journaled before the kill is called again (a task in flight at the kill may be).
# The same check runs in CI as `cargo test -p genesis-server --test it crash`.
#
# usage: scripts/crashtest.sh
# env:   PORT (18180), STUB_PORT (18181), RUNS (8), DELAY (agent seconds, 0.5),
#        KILL_AFTER (seconds between the last submission and the kill, 1.5)
# needs: curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18180}
STUB_PORT=${STUB_PORT:-18181}
RUNS=${RUNS:-8}
DELAY=${DELAY:-0.5}
KILL_AFTER=${KILL_AFTER:-1.5}
BASE="http://127.0.0.1:$PORT"

cargo build --release -p genesis-server >&2
BIN=target/release/genesis-server
WORK=$(mktemp -d -t genesis-crashtest.XXXXXX)
SERVER_PID=""
STUB_PID=""
cleanup() {
  for pid in "$SERVER_PID" "$STUB_PID"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

CONFIG="$WORK/crashtest.toml"
printf '[server]\nbind = "127.0.0.1:%s"\ndata_dir = "%s/data"\nshutdown_grace = "5s"\nmax_runs_per_subject = 0\n\n' "$PORT" "$WORK" > "$CONFIG"
printf '[security.rate_limits]\nper_ip_per_minute = 1000000\nper_ip_burst = 100000\n\n' >> "$CONFIG"
for agent in spec architect builder frontend backend qa security deploy monitoring \
  marketing sales support analytics research finance darwin; do
  printf '[backends.%s]\ntype = "http"\nurl = "http://127.0.0.1:%s/tasks"\n\n' "$agent" "$STUB_PORT" >> "$CONFIG"
done

python3 scripts/stub_agent.py "$STUB_PORT" "$DELAY" "$WORK/calls.txt" &
STUB_PID=$!

start_server() {
  GENESIS_TELEMETRY__FILTER=warn "$BIN" --config "$CONFIG" >> "$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fs "$BASE/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$WORK/server.log" >&2
  return 1
}

start_server
: > "$WORK/runs.txt"
for i in $(seq 1 "$RUNS"); do
  curl -fs -H 'content-type: application/json' \
    -d "{\"description\":\"Fix the login bug\",\"mode\":\"run\",\"idempotency_key\":\"crash-$i\"}" \
    "$BASE/api/tasks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])' >> "$WORK/runs.txt"
done
sleep "$KILL_AFTER"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
echo "killed the server with SIGKILL after $RUNS accepted runs"

# What the journal says was finished at the kill, and the agent calls so far.
python3 - "$WORK" <<'PY'
import sqlite3, sys
work = sys.argv[1]
db = sqlite3.connect(f"{work}/data/genesis.db")
done = db.execute("SELECT run_id, task_id FROM tasks WHERE status = 'succeeded'").fetchall()
total = db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
with open(f"{work}/done_before.txt", "w") as f:
    for r, t in done:
        f.write(f"{r} {t}\n")
print(f"journaled before the kill: {len(done)} of {total} tasks succeeded")
PY
cp "$WORK/calls.txt" "$WORK/calls_before.txt"

start_server
for _ in $(seq 1 600); do
  running=$(curl -s "$BASE/api/tasks?status=running&limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))')
  [ "$running" -eq 0 ] && break
  sleep 0.2
done

python3 - "$WORK" "$BASE" <<'PY'
import collections, json, sys, urllib.request
work, base = sys.argv[1], sys.argv[2]
runs = [l.strip() for l in open(f"{work}/runs.txt") if l.strip()]
def count(path):
    return collections.Counter(tuple(l.split()) for l in open(path) if l.strip())
before, after = count(f"{work}/calls_before.txt"), count(f"{work}/calls.txt")
done_before = {tuple(l.split()) for l in open(f"{work}/done_before.txt") if l.strip()}
failures = []
for run in runs:
    with urllib.request.urlopen(f"{base}/api/tasks/{run}") as r:
        rec = json.load(r)
    if rec["status"] != "succeeded":
        failures.append(f"run {run} is {rec['status']}")
    for t in rec["tasks"]:
        key = (run, t["task_id"])
        if t["status"] != "succeeded":
            failures.append(f"task {key} is {t['status']}")
        if key in done_before and after[key] != before[key]:
            failures.append(f"finished task {key} ran again ({before[key]} -> {after[key]} calls)")
with urllib.request.urlopen(f"{base}/api/tasks?limit=1000") as r:
    listed = len(json.load(r)["runs"])
if listed != len(runs):
    failures.append(f"{listed} runs stored, {len(runs)} accepted")
rerun = sum(1 for k in after if k not in done_before and after[k] > 1)
print(f"runs accepted {len(runs)}, stored {listed}; tasks finished before the kill and not re-run: "
      f"{sum(1 for k in done_before if after[k] == before[k])}/{len(done_before)}; "
      f"in-flight tasks run again: {rerun}")
if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("crash test passed")
PY

# Graceful stop: SIGTERM must exit 0.
kill -TERM "$SERVER_PID"
if wait "$SERVER_PID"; then echo "SIGTERM: exit 0"; else echo "SIGTERM: exit $?"; exit 1; fi
SERVER_PID=""
