"""Events on real data: a provider must not make a data pipeline slower or fatter.

The workflow of issue 15 (``data_workload.py``: step 1 returns SIZE small
dicts, step 2 counts them), each variant in a fresh process, interleaved round
by round, medians: dotflow-core with no provider, with a counting in-process
provider, with the ``api`` provider against a loopback server (a stdlib
``ThreadingHTTPServer`` in this process that answers every request at once and
notes each body's size), and dotflow 1.0.1 with its default configuration.
dotflow-core runs from ``bench/.venv-ours`` (this tree, installed as pip
installs it: bytecode compiled at install, no editable import hooks), as
bench_managed does. Prints the wall time of ``start()``, the child's peak RSS
and the whole process's wall time (not a target: dotflow 1.0.1 imports
``requests`` before ``start()``, dotflow-core's api provider inside it), the ratios
against the targets, the api provider's counts at exit and its largest body;
then how the cost grows at SIZE/100, SIZE/10 and SIZE items.

Targets: counting and api time <= 1.15x no provider, peak RSS <= 1.2x; api:
0 spooled, 0 dropped, every body within the 5 MB cap; api at least as fast as
dotflow 1.0.1.

Usage: python bench/bench_data.py [--size 2000000] [--rounds 5] [--growth-rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _options import at_least
from _venvs import BENCH_DIR, dotflow_python, ours_python

WORKLOAD = BENCH_DIR / "data_workload.py"
TOKEN = "bench-token"
MAX_BODY_BYTES = 5_000_000  # the api provider's cap (dotflow_server_api.payloads)
TIME_TARGET = 1.15
RSS_TARGET = 1.2
VARIANTS = ("core-none", "core-counting", "core-api", "dotflow")


class LoopbackServer:
    """Answers every dotflow request at once; keeps the number and largest size of the bodies."""

    def __init__(self) -> None:
        self.requests = 0
        self.largest_body = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.request_queue_size = 128  # type: ignore[misc]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with server._lock:
                    server.requests += 1
                    server.largest_body = max(server.largest_body, length)
                if self.path.endswith("/next-id"):
                    status, body = 200, {"next_id": 1, "last_id": None}
                else:
                    status, body = (201 if self.command == "POST" else 200), {"ok": True}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

        return Handler


def environment(home: Path, url: str | None) -> dict[str, str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SERVER_", "DOTFLOW_", "WORKFLOW_ID"))
    }
    environ["DOTFLOW_HOME"] = str(home)
    if url is not None:
        environ.update(SERVER_BASE_URL=url, SERVER_USER_TOKEN=TOKEN)
    return environ


def measure(python: Path | str, variant: str, size: int, url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dotflow-bench-data-") as home:
        started = time.perf_counter()
        finished = subprocess.run(
            [str(python), str(WORKLOAD), variant, str(size)],
            capture_output=True,
            text=True,
            cwd=BENCH_DIR,  # dotflow 1.0.1 writes its .output/ directory here
            env=environment(Path(home), url),
            timeout=900,
        )
        process_seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"{variant} failed ({finished.returncode}):\n{finished.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    result["process_seconds"] = process_seconds
    return result


def run_rounds(
    size: int, rounds: int, pythons: dict[str, Path], server: LoopbackServer
) -> dict[str, list[dict[str, Any]]]:
    samples: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for number in range(1, rounds + 1):
        for variant in VARIANTS:
            url = server.url if variant == "core-api" else None
            samples[variant].append(measure(pythons[variant], variant, size, url))
        print(f"{size} items: round {number}/{rounds} done", file=sys.stderr)
    return samples


def median(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(sample[key]) for sample in samples)


def verdict(value: float, target: float, at_most: bool = True) -> str:
    met = value <= target if at_most else value >= target
    return f"{'meets' if met else 'MISSES'} target {'<=' if at_most else '>='} {target:g}x"


def report(samples: dict[str, list[dict[str, Any]]], size: int, server: LoopbackServer) -> None:
    print(f"\n{size:,} items, sequential, medians of {len(samples['core-none'])} rounds")
    print(
        f"{'variant':<16}{'start() s':>11}{'peak RSS MB':>13}{'time/none':>11}{'RSS/none':>10}"
        f"{'process s':>11}"
    )
    none_time = median(samples["core-none"], "seconds")
    none_rss = median(samples["core-none"], "max_rss_mb")
    for variant, values in samples.items():
        seconds, rss = median(values, "seconds"), median(values, "max_rss_mb")
        print(
            f"{variant:<16}{seconds:>11.3f}{rss:>13.0f}"
            f"{seconds / none_time:>10.2f}x{rss / none_rss:>9.2f}x"
            f"{median(values, 'process_seconds'):>11.3f}"
        )
    print("\nratios against the targets")
    for variant in ("core-counting", "core-api"):
        time_ratio = median(samples[variant], "seconds") / none_time
        rss_ratio = median(samples[variant], "max_rss_mb") / none_rss
        shown = verdict(time_ratio, TIME_TARGET)
        print(f"  {variant} / core-none, time {time_ratio:.2f}x: {shown}")
        print(f"  {variant} / core-none, RSS  {rss_ratio:.2f}x: {verdict(rss_ratio, RSS_TARGET)}")
    speed = median(samples["dotflow"], "seconds") / median(samples["core-api"], "seconds")
    print(f"  dotflow 1.0.1 / core-api, time {speed:.2f}x: {verdict(speed, 1.0, at_most=False)}")
    whole = median(samples["dotflow"], "process_seconds") / median(
        samples["core-api"], "process_seconds"
    )
    print(f"  (whole process, not a target: dotflow 1.0.1 / core-api {whole:.2f}x)")
    api = samples["core-api"]
    spooled = sum(int(sample.get("spooled", -1)) for sample in api)
    dropped = sum(int(sample.get("dropped", -1)) for sample in api)
    delivered = [int(sample.get("delivered", 0)) for sample in api]
    print(
        f"  api, all rounds: {min(delivered)}-{max(delivered)} events delivered per run, "
        f"{spooled} spooled, {dropped} dropped "
        f"({'meets' if spooled == dropped == 0 else 'MISSES'} target 0 and 0)"
    )
    print(
        f"  api, largest body {server.largest_body:,} bytes "
        f"({'within' if server.largest_body <= MAX_BODY_BYTES else 'OVER'} the "
        f"{MAX_BODY_BYTES:,}-byte cap)"
    )


def report_growth(table: dict[int, dict[str, list[dict[str, Any]]]]) -> None:
    print("\ngrowth: what a provider adds per event (median time minus no provider's,")
    print("over the events it received); flat when events cost the same whatever the data")
    print(f"{'items':>12}{'none s':>10}{'counting us/event':>20}{'api us/event':>15}")
    for size, samples in table.items():
        none_time = median(samples["core-none"], "seconds")
        cells = []
        for variant in ("core-counting", "core-api"):
            extra = median(samples[variant], "seconds") - none_time
            events = max(median(samples[variant], "events"), 1)
            cells.append(extra / events * 1e6)
        print(f"{size:>12,}{none_time:>10.3f}{cells[0]:>20.1f}{cells[1]:>15.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=at_least(100), default=2_000_000)
    parser.add_argument("--rounds", type=at_least(1), default=5)
    parser.add_argument(
        "--growth-rounds", type=at_least(0), default=3, help="0 skips the growth table"
    )
    args = parser.parse_args()

    ours = ours_python()  # the tree as pip installs it (bytecode compiled, no editable hooks)
    pythons = {variant: ours for variant in VARIANTS}
    pythons["dotflow"] = dotflow_python()
    server = LoopbackServer()
    try:
        main_samples = run_rounds(args.size, args.rounds, pythons, server)
        report(main_samples, args.size, server)
        if args.growth_rounds:
            table = {}
            for size in (args.size // 100, args.size // 10):
                table[size] = run_rounds(size, args.growth_rounds, pythons, server)
            table[args.size] = main_samples
            report_growth(table)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
