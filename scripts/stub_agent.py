#!/usr/bin/env python3
"""A stub Genesis agent service for load and crash tests on loopback.

Speaks the HTTP backend wire format (see docs/API.md, "Agent backends"): it receives
POST {run_id, task: {id, ...}, ...}, waits DELAY seconds and answers
{"output": "done <task id>", "cost_usd": 0.001}. With a counts file it appends one
"<run_id> <task_id>" line per call, so a crash test can count calls per (run, task).

usage: stub_agent.py PORT [DELAY_SECONDS] [COUNTS_FILE]
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
COUNTS = sys.argv[3] if len(sys.argv) > 3 else None
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        run_id = body.get("run_id", "?")
        task_id = (body.get("task") or {}).get("id", "?")
        if COUNTS:
            with LOCK, open(COUNTS, "a", encoding="utf-8") as f:
                f.write(f"{run_id} {task_id}\n")
        if DELAY > 0:
            time.sleep(DELAY)
        out = json.dumps({"output": f"done {task_id}", "cost_usd": 0.001}).encode()
        try:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller was killed mid-call (crash tests do that on purpose)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
