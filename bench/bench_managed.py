"""Managed mode: a 20-task workflow reporting to a server that adds 20 ms to every request.

Runs, as fresh processes, interleaved, a few times each (figures are medians):

- ``dotflow start --provider api`` (dotflow-core + dotflow-server-api), server up;
- the same with ``--provider none``, to see what reporting costs the workflow;
- dotflow 1.0.1's managed mode (``dotflow start --workflow``, its ServerDefault
  provider, active because SERVER_BASE_URL and SERVER_USER_TOKEN are set);
- ours against a server that is down (connection refused) and one that
  accepts connections and never answers.

Targets: whole-process wall time at least 5x lower than dotflow 1.0.1's; the
time until the last task finishes within 10% of the no-provider run; with the
server down or hanging, the process ends within the flush deadline + 1 s.

The server is a small threaded stdlib server that accepts both wire formats
(``/workflows...`` and dotflow 1.0.1's ``/cli/workflows...``), answers 200/201
and ``{"next_id": 1}``, after 20 ms.

Usage: python bench/bench_managed.py [--runs 15] [--outage-runs 3] [--tasks 20] [--step-ms 0]
                                    [--flush-timeout 5] [--max-in-flight N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _options import at_least
from _venvs import dotflow_python, ours_python

SERVER_DELAY = 0.020
TOKEN = "bench-token"
TARGET_RATIO = 5.0
TARGET_TASK_OVERHEAD = 0.10
TARGET_EXIT_MARGIN = 1.0


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of new connections from
    # either client would overflow it and stall a full SYN retransmission (1 s).
    request_queue_size = 128


class BenchServer:
    """Answers every dotflow request after ``SERVER_DELAY``; or accepts and never answers."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.requests = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        bench = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between header and body

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with bench._lock:
                    bench.requests += 1
                if bench.hang:
                    bench.release.wait(300)
                    self.close_connection = True
                    return
                time.sleep(SERVER_DELAY)
                if self.path.endswith("/next-id"):
                    status, body = 200, {"next_id": 1, "last_id": None}
                elif self.command == "POST":
                    status, body = 201, {"ok": True}
                else:
                    status, body = 200, {"ok": True}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

        return Handler


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


OURS_STEPS = """
import os, time
from dotflow_core import action

STEP_SECONDS = {step_seconds!r}

@action
def step(initial_context):
    if STEP_SECONDS:
        time.sleep(STEP_SECONDS)
    with open(os.environ["BENCH_MARK_FILE"], "w") as mark:
        mark.write(repr(time.time()))
    return {{"ok": True}}
"""

THEIRS_FLOW = """
import os, time
from dotflow import DotFlow, action

STEP_SECONDS = {step_seconds!r}

@action
def step():
    if STEP_SECONDS:
        time.sleep(STEP_SECONDS)
    with open(os.environ["BENCH_MARK_FILE"], "w") as mark:
        mark.write(repr(time.time()))
    return {{"ok": True}}

def build():
    workflow = DotFlow()
    for _ in range({tasks}):
        workflow.task.add(step=step)
    return workflow
"""


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        (work / "bench_steps.py").write_text(
            textwrap.dedent(OURS_STEPS.format(step_seconds=args.step_ms / 1000))
        )
        (work / "bench_flow_v1.py").write_text(
            textwrap.dedent(THEIRS_FLOW.format(step_seconds=args.step_ms / 1000, tasks=args.tasks))
        )
        self.ours = str(ours_python().parent / "dotflow")
        self.theirs = str(dotflow_python().parent / "dotflow")
        self.samples: dict[str, list[dict[str, float]]] = {}

    def environment(self, url: str | None) -> dict[str, str]:
        home = Path(tempfile.mkdtemp(dir=self.work))  # a fresh outbox: nothing to replay
        # Bytecode caching on, as on any installed system (pip compiles at install time;
        # editable installs and PYTHONDONTWRITEBYTECODE=1 would recompile every run).
        environ = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SERVER_", "DOTFLOW_", "WORKFLOW_ID"))
            and key != "PYTHONDONTWRITEBYTECODE"
        }
        environ.update(
            PYTHONPATH=str(self.work),
            DOTFLOW_HOME=str(home),
            BENCH_MARK_FILE=str(home / "last-task"),
            SERVER_FLUSH_TIMEOUT=str(self.args.flush_timeout),
        )
        if self.args.max_in_flight is not None:
            environ["SERVER_MAX_IN_FLIGHT"] = str(self.args.max_in_flight)
        if url is not None:
            environ.update(SERVER_BASE_URL=url, SERVER_USER_TOKEN=TOKEN)
        return environ

    def ours_command(self, provider: str) -> list[str]:
        steps = [part for _ in range(self.args.tasks) for part in ("--step", "bench_steps.step")]
        return [self.ours, "start", "--provider", provider, "-q", *steps]

    def theirs_command(self) -> list[str]:
        return [self.theirs, "start", "--workflow", "bench_flow_v1.build"]

    def measure(self, name: str, command: list[str], environ: dict[str, str]) -> None:
        launched_wall = time.time()
        started = time.perf_counter()
        finished = subprocess.run(
            command,
            cwd=self.work,
            env=environ,
            capture_output=True,
            text=True,
            timeout=600,
        )
        wall = time.perf_counter() - started
        if finished.returncode != 0:
            raise SystemExit(f"{name} failed ({finished.returncode}):\n{finished.stderr[-2000:]}")
        mark = Path(environ["BENCH_MARK_FILE"])
        last_task = float(mark.read_text()) - launched_wall if mark.exists() else float("nan")
        self.samples.setdefault(name, []).append({"wall": wall, "last_task": last_task})

    def scenario(
        self, name: str, command: list[str], url: Callable[[], tuple[str | None, Any]]
    ) -> None:
        address, server = url()
        try:
            self.measure(name, command, self.environment(address))
            if server is not None:
                self.samples[name][-1]["requests"] = server.requests
        finally:
            if server is not None:
                server.close()

    def median(self, name: str, key: str) -> float:
        return statistics.median(sample[key] for sample in self.samples[name])

    def paired(self, numerator: str, denominator: str, key: str) -> float:
        """The median, over rounds, of ``numerator / denominator`` within each round."""
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=True)
        return statistics.median(top[key] / bottom[key] for top, bottom in pairs)


def up() -> tuple[str, BenchServer]:
    server = BenchServer()
    return server.url, server


def hanging() -> tuple[str, BenchServer]:
    server = BenchServer(hang=True)
    return server.url, server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=at_least(1), default=15, help="repetitions per scenario")
    parser.add_argument(
        "--outage-runs",
        type=at_least(0),
        default=3,
        help="repetitions when down/hung (0: not measured)",
    )
    parser.add_argument("--tasks", type=at_least(1), default=20)
    parser.add_argument(
        "--step-ms", type=at_least(0, float), default=0.0, help="work per step (sleep)"
    )
    parser.add_argument(
        "--flush-timeout", type=at_least(0, float), default=5.0, help="SERVER_FLUSH_TIMEOUT"
    )
    parser.add_argument(
        "--max-in-flight",
        type=at_least(1),
        default=None,
        help="SERVER_MAX_IN_FLIGHT (default 32)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dotflow-bench-managed-"))
    try:
        bench = Bench(args, work)
        normal = {
            "ours: api": (bench.ours_command("api"), up),
            "ours: no provider": (bench.ours_command("none"), lambda: (None, None)),
            "dotflow 1.0.1: managed": (bench.theirs_command(), up),
        }
        outages = {
            "ours: server down": (bench.ours_command("api"), lambda: (refused_url(), None)),
            "ours: server hangs": (bench.ours_command("api"), hanging),
        }
        for name, (command, url) in normal.items():  # warm caches, not counted
            bench.scenario(name, command, url)
        bench.samples.clear()
        for _ in range(args.runs):
            for name, (command, url) in normal.items():
                bench.scenario(name, command, url)
        for _ in range(args.outage_runs):
            for name, (command, url) in outages.items():
                bench.scenario(name, command, url)
        report(bench, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(bench: Bench, args: argparse.Namespace) -> None:
    print(
        f"\nManaged mode: {args.tasks} tasks ({args.step_ms:g} ms each), server +"
        f"{SERVER_DELAY * 1000:.0f} ms per request; medians of {args.runs} runs "
        f"({args.outage_runs} for outages); flush deadline {args.flush_timeout:g} s"
    )
    print(f"  {'scenario':<26}{'wall':>10}{'last task':>12}{'requests':>10}")
    for name, samples in bench.samples.items():
        requests = [sample["requests"] for sample in samples if "requests" in sample]
        shown = f"{statistics.median(requests):.0f}" if requests else "-"
        print(
            f"  {name:<26}{bench.median(name, 'wall') * 1000:8.0f} ms"
            f"{bench.median(name, 'last_task') * 1000:9.0f} ms{shown:>10}"
        )
    # Ratios are taken round by round (the variants of a round ran back to back, so
    # machine noise hits them alike), then the median of those is reported.
    ratio = bench.paired("dotflow 1.0.1: managed", "ours: api", "wall")
    print(
        f"\nwhole process, dotflow 1.0.1 / ours: {ratio:.1f}x "
        f"({'meets' if ratio >= TARGET_RATIO else 'misses'} target >= {TARGET_RATIO:g}x)"
    )
    overhead = bench.paired("ours: api", "ours: no provider", "last_task") - 1
    print(
        f"last task finished, api vs no provider: {overhead:+.1%} "
        f"({'meets' if overhead <= TARGET_TASK_OVERHEAD else 'misses'} target <= +10%)"
    )
    limit = args.flush_timeout + TARGET_EXIT_MARGIN
    for name in ("ours: server down", "ours: server hangs"):
        if name not in bench.samples:
            print(f"{name.removeprefix('ours: ')}: not measured (--outage-runs 0)")
            continue
        worst = max(sample["wall"] for sample in bench.samples[name])
        print(
            f"{name.removeprefix('ours: ')}: process ended after {worst:.2f} s at worst "
            f"({'meets' if worst <= limit else 'misses'} target <= {limit:g} s)"
        )


if __name__ == "__main__":
    sys.exit(main())
