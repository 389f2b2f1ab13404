"""Managed mode: a 20-task workflow reporting to a server that adds 20 ms to every request.

Runs, as fresh processes, interleaved, round after round (figures are medians):

- ``dotflow start --provider api`` (dotflow-core + dotflow-server-api), server up;
- the same with ``--provider none``, to see what reporting costs the workflow;
- dotflow 1.0.1's managed mode (``dotflow start --workflow``, its ServerDefault
  provider, active because SERVER_BASE_URL and SERVER_USER_TOKEN are set);
- ours against a server that is down (connection refused) and one that
  accepts connections and never answers.

Targets: whole-process wall time at least 5x lower than dotflow 1.0.1's; the
time until the last task finishes within 10% of the no-provider run; with the
server down or hanging, the process ends within the flush deadline + 1 s.

Then two servers that are not the project's test server, each side by side
with dotflow 1.0.1 (``--peer-runs`` rounds, 15 by default):

- **small**: Python's ``http.server.ThreadingHTTPServer`` as a new user writes
  it (listen backlog 5, HTTP/1.0: one connection per request) + 20 ms per
  request. Target: ours at least 4x faster, and the server never overflowed:
  the kernel's listen-queue overflow counter (``/proc/net/netstat``
  ``ListenOverflows``, the server side of a burst too big for the backlog)
  does not move during any of our runs, and no connection breaks.
- **reference**: the reference server (``server/``, FastAPI + SQLite) served by
  uvicorn + 20 ms per request (an outer ASGI layer sleeps). Target: at least
  5x. (dotflow 1.0.1 speaks ``/cli/workflows...``, which the reference server
  answers 404, after the same 20 ms: its timing is that of its requests.)

Each ratio is taken within a round, and the median over rounds is the figure
the verdict uses. Next to it is a 95% confidence interval for that median
(distribution-free, from the rounds' order statistics): on a machine whose
speed drifts from one process to the next, it says whether the run's verdict is
settled or could have gone the other way.

The server is a small threaded stdlib server that accepts both wire formats
(``/workflows...`` and dotflow 1.0.1's ``/cli/workflows...``), answers 200/201
and ``{"next_id": 1}``, after 20 ms.

Usage: python bench/bench_managed.py [--runs 90] [--outage-runs 3] [--tasks 20] [--step-ms 0]
                                    [--flush-timeout 5] [--max-in-flight N]
"""

from __future__ import annotations

import argparse
import json
import math
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
CONFIDENCE = 0.95


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of new connections from
    # either client would overflow it and stall a full SYN retransmission (1 s).
    request_queue_size = 128


class _SmallServer(ThreadingHTTPServer):
    """As a new user writes it: socketserver's default listen backlog (5)."""


class BenchServer:
    """Answers every dotflow request after ``SERVER_DELAY``; or accepts and never answers.

    :param small: Python's defaults (backlog 5, HTTP/1.0), counting broken connections.
    """

    def __init__(self, hang: bool = False, small: bool = False) -> None:
        self.hang = hang
        self.small = small
        self.requests = 0
        self.broken = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        server_class = _SmallServer if small else _Server
        self._server = server_class(("127.0.0.1", 0), self._handler())
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
            protocol_version = "HTTP/1.0" if bench.small else "HTTP/1.1"
            disable_nagle_algorithm = not bench.small  # no delayed-ACK stall (header, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle(self) -> None:
                try:
                    super().handle()
                except (ConnectionResetError, BrokenPipeError):
                    with bench._lock:
                        bench.broken += 1

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


def listen_overflows() -> int:
    """The kernel's count of handshakes dropped by full listen queues (-1: unreadable)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return -1
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(counters.get("ListenOverflows", -1))
    return -1


class ReferenceServer:
    """``bench/_reference_server.py`` in a child process (uvicorn, FastAPI, SQLite, + 20 ms)."""

    def __init__(self, work: Path) -> None:
        port_file = work / "reference-port"
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("_reference_server.py")),
                str(port_file),
                str(SERVER_DELAY * 1000),
                TOKEN,
            ]
        )
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the reference server did not start (is server/ installed?)")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}"
        self.requests = 0

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


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
            overflows = listen_overflows()
            self.measure(name, command, self.environment(address))
            if server is not None:
                sample = self.samples[name][-1]
                sample["requests"] = server.requests
                sample["overflows"] = listen_overflows() - overflows
                sample["broken"] = getattr(server, "broken", 0)
        finally:
            if server is not None and not isinstance(server, ReferenceServer):
                server.close()

    def median(self, name: str, key: str) -> float:
        return statistics.median(sample[key] for sample in self.samples[name])

    def paired(self, numerator: str, denominator: str, key: str) -> list[float]:
        """``numerator / denominator`` within each round, in round order."""
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=True)
        return [top[key] / bottom[key] for top, bottom in pairs]


def median_interval(
    values: list[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """A ``confidence`` interval for the median of ``values``' population, or None if too few.

    Distribution-free: the interval runs from the k-th smallest to the k-th
    largest value, k the largest rank for which the chance that fewer than k
    of n values fall below the median, P(Binomial(n, 1/2) < k), is at most
    (1 - confidence) / 2. No shape is assumed for the noise.
    """
    ordered = sorted(values)
    count = len(ordered)
    tail = (1 - confidence) / 2
    rank, below = 0, 0.0
    while True:
        below += math.comb(count, rank) / 2**count  # P(Binomial(n, 1/2) = rank)
        if below > tail:
            break
        rank += 1
    if rank == 0:
        return None
    return ordered[rank - 1], ordered[count - rank]


#: The order of each round's runs, alternating round by round: dotflow 1.0.1
#: first, then ours with and without a provider, each of the two right after
#: dotflow 1.0.1's (larger) process in half of the rounds and right after the
#: other in the rest, so that a position effect cancels out of their ratio.
ROUND_ORDERS = (
    ("dotflow 1.0.1: managed", "ours: api", "ours: no provider"),
    ("dotflow 1.0.1: managed", "ours: no provider", "ours: api"),
)


def up() -> tuple[str, BenchServer]:
    server = BenchServer()
    return server.url, server


def hanging() -> tuple[str, BenchServer]:
    server = BenchServer(hang=True)
    return server.url, server


def small() -> tuple[str, BenchServer]:
    server = BenchServer(small=True)
    return server.url, server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=at_least(1), default=90, help="repetitions per scenario")
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
    parser.add_argument(
        "--peer-runs",
        type=at_least(0),
        default=15,
        help="rounds against the small server and the reference server (0: not measured)",
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
        bench.samples = {name: [] for name in normal}  # the report's order
        for round_number in range(args.runs):
            for name in ROUND_ORDERS[round_number % len(ROUND_ORDERS)]:
                bench.scenario(name, *normal[name])
        for _ in range(args.outage_runs):
            for name, (command, url) in outages.items():
                bench.scenario(name, command, url)
        peers = run_peers(bench, args, work)
        report(bench, args)
        report_peers(bench, args, peers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


#: Each peer server: its factory, and the ratio (dotflow 1.0.1 / ours) it must reach.
PEER_TARGETS = {"small server": 4.0, "reference server": 5.0}


def run_peers(bench: Bench, args: argparse.Namespace, work: Path) -> list[str]:
    """The small and reference server rounds (ours, then 1.0.1, alternating who goes first)."""
    if not args.peer_runs:
        return []
    reference = ReferenceServer(work)
    try:
        servers: dict[str, Callable[[], tuple[str | None, Any]]] = {
            "small server": small,
            "reference server": lambda: (reference.url, reference),
        }
        for kind, url in servers.items():
            ours, theirs = f"ours: api, {kind}", f"dotflow 1.0.1: managed, {kind}"
            pair = {ours: bench.ours_command("api"), theirs: bench.theirs_command()}
            for name, command in pair.items():  # warm up, not counted
                bench.scenario(name, command, url)
                bench.samples[name] = []
            for round_number in range(args.peer_runs):
                order = [ours, theirs] if round_number % 2 else [theirs, ours]
                for name in order:
                    bench.scenario(name, pair[name], url)
    finally:
        reference.close()
    return list(servers)


def report_peers(bench: Bench, args: argparse.Namespace, peers: list[str]) -> None:
    for kind in peers:
        ours, theirs = f"ours: api, {kind}", f"dotflow 1.0.1: managed, {kind}"
        ratios = bench.paired(theirs, ours, "wall")
        print(
            f"\n{kind} ({args.peer_runs} rounds): ours {bench.median(ours, 'wall') * 1000:.0f} ms, "
            f"dotflow 1.0.1 {bench.median(theirs, 'wall') * 1000:.0f} ms; whole process, "
            "dotflow 1.0.1 / ours: "
            + verdict(
                ratios, PEER_TARGETS[kind], higher_is_better=True, shown=lambda x: f"{x:.2f}x"
            )
        )
        if kind == "small server":
            overflows = [sample.get("overflows", 0) for sample in bench.samples[ours]]
            broken = [sample.get("broken", 0) for sample in bench.samples[ours]]
            theirs_overflows = [sample.get("overflows", 0) for sample in bench.samples[theirs]]
            clean = max(overflows) == 0 and max(broken) == 0
            print(
                f"  server side, our runs: listen-queue overflows {sum(overflows)} "
                f"(most in one run {max(overflows)}), broken connections {sum(broken)} "
                f"({'meets' if clean else 'misses'} target: none after the first burst; "
                f"dotflow 1.0.1's runs: {sum(theirs_overflows)} overflows; the counter is the "
                "kernel's, for every listener on this machine)"
            )


def report(bench: Bench, args: argparse.Namespace) -> None:
    print(
        f"\nManaged mode: {args.tasks} tasks ({args.step_ms:g} ms each), server +"
        f"{SERVER_DELAY * 1000:.0f} ms per request; medians of {args.runs} runs "
        f"({args.outage_runs} for outages); flush deadline {args.flush_timeout:g} s"
    )
    print(f"  {'scenario':<26}{'wall':>10}{'last task':>12}{'requests':>10}")
    for name, samples in bench.samples.items():
        if "server" in name.partition(", ")[2]:
            continue  # the peers' rounds are reported apart
        requests = [sample["requests"] for sample in samples if "requests" in sample]
        shown = f"{statistics.median(requests):.0f}" if requests else "-"
        print(
            f"  {name:<26}{bench.median(name, 'wall') * 1000:8.0f} ms"
            f"{bench.median(name, 'last_task') * 1000:9.0f} ms{shown:>10}"
        )
    # Ratios are taken round by round (the variants of a round ran back to back, so
    # machine noise hits them alike), then the median of those is reported.
    ratios = bench.paired("dotflow 1.0.1: managed", "ours: api", "wall")
    print(
        "\nwhole process, dotflow 1.0.1 / ours: "
        + verdict(ratios, TARGET_RATIO, higher_is_better=True, shown=lambda x: f"{x:.2f}x")
    )
    overheads = [ratio - 1 for ratio in bench.paired("ours: api", "ours: no provider", "last_task")]
    print(
        "last task finished, api vs no provider: "
        + verdict(
            overheads, TARGET_TASK_OVERHEAD, higher_is_better=False, shown=lambda x: f"{x:+.1%}"
        )
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


def verdict(
    values: list[float], target: float, *, higher_is_better: bool, shown: Callable[[float], str]
) -> str:
    """The median of ``values`` against ``target``, with its confidence interval.

    The verdict is the median's; the interval says whether this run settles it
    (the whole interval on the same side of the target) or not.
    """

    def meets(value: float) -> bool:
        return value >= target if higher_is_better else value <= target

    median = statistics.median(values)
    outcome = f"{'meets' if meets(median) else 'misses'} target "
    outcome += f"{'>=' if higher_is_better else '<='} {shown(target)}"
    interval = median_interval(values)
    if interval is None:
        return f"{shown(median)} ({outcome}; too few rounds for an interval)"
    low, high = interval
    if meets(low) != meets(high):
        outcome += "; the interval straddles the target: this run does not settle it"
    return f"{shown(median)}, {CONFIDENCE:.0%} interval {shown(low)} to {shown(high)} ({outcome})"


if __name__ == "__main__":
    sys.exit(main())
