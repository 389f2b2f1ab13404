"""Import a benchmark script of ``bench/`` as a module, for the benchmarks' own tests."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "bench"


def import_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` (and the helpers it imports from ``bench/``) as a module."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))
