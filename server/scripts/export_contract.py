"""Write the runner-facing OpenAPI contract into the client package.

Usage (from the repository root, with dotflow-api installed):

    python server/scripts/export_contract.py            # write the file
    python server/scripts/export_contract.py --check    # exit 1 if it is out of date

The file is ``plugins/dotflow-server-api/src/dotflow_server_api/openapi.json`` unless
``--output`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dotflow_api.contract import client_contract

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = (
    REPO_ROOT / "plugins" / "dotflow-server-api" / "src" / "dotflow_server_api" / "openapi.json"
)


def render() -> str:
    """The contract as the exact text written to the file."""
    return json.dumps(client_contract(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="file to write")
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 if the file differs"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
