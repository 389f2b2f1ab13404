"""The reference server (``server/``: FastAPI, SQLite) served by uvicorn, + N ms per request.

Run by ``bench_managed.py`` as a child process of the development virtualenv
(which has ``server/`` installed)::

    python bench/_reference_server.py PORT_FILE DELAY_MS TOKEN

It binds a free loopback port, writes its number to PORT_FILE once listening,
and serves until terminated. Every HTTP request waits DELAY_MS first (an
``asyncio.sleep`` in an outer ASGI layer: the server's own work is unchanged).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any


def main() -> int:
    import uvicorn
    from dotflow_api.app import create_app
    from dotflow_api.auth import TokenSet
    from dotflow_api.db import create_db_engine, create_schema
    from dotflow_api.store import Store

    port_file, delay_ms, token = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    database = Path(tempfile.mkdtemp(prefix="dotflow-bench-api-")) / "api.sqlite3"
    engine = create_db_engine(f"sqlite:///{database}")
    create_schema(engine)
    app = create_app(Store(engine), TokenSet([token]))
    delay = delay_ms / 1000

    async def delayed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(delay)
        await app(scope, receive, send)

    # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off only on
    # sockets whose ``proto`` says TCP (``uvicorn --host/--port`` and ``dotflow-api
    # serve`` bind that way). With Nagle on, each keep-alive answer written as head
    # then body waited for the client's delayed ACK: 40 ms per request that no real
    # deployment pays.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(delayed, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        port_file.write_text(str(sock.getsockname()[1]))
        await task

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
