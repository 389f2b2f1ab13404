"""The durable outbox: requests that could not be delivered before the process ended.

Layout (directories mode 0700, files mode 0600, never the token)::

    <outbox_dir>/<host-slug>-<url hash>-<token fingerprint>/
        destination.json                      {"base_url": ..., "fingerprint": ...}
        <workflow slug>~<hash>.<time>.<pid>.<random>.jsonl

One folder per (base URL, token fingerprint): events are only ever replayed
to the server and under the identity they were meant for. Each line of a
``.jsonl`` file is one request: ``method``, ``path``, ``body``,
``first_enqueued_at``, ``attempts`` (plus ``kind``, ``workflow_id``,
``task_id`` and ``final``, which replay needs to keep the ordering rules).

A run replays a file after claiming it with an atomic rename to
``<file>.claimed.<host>.<pid>.<time>``, so concurrent runners never replay
the same file twice; a claim whose process is gone (same host, pid dead, or
older than a day) can be claimed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import attrs

from dotflow_server_api.payloads import CREATE_TASK, KINDS, UPDATE_TASK, Request, utf8

logger = logging.getLogger("dotflow.server.api.outbox")

SUFFIX: Final = ".jsonl"
CLAIM_MARK: Final = ".claimed."
META_FILE: Final = "destination.json"
#: A claim older than this is taken over even when its owner cannot be checked.
STALE_CLAIM_SECONDS: Final = 24 * 3600
_SLUG: Final = re.compile(r"[^A-Za-z0-9._-]+")


def _host_tag() -> str:
    import socket

    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def destination_dirname(base_url: str, fingerprint: str) -> str:
    """The folder name of one (base URL, token fingerprint) pair."""
    parts = urlsplit(base_url)
    slug = _SLUG.sub("_", f"{parts.hostname or 'server'}{parts.path}").strip("_")[:60]
    url_hash = hashlib.sha256(base_url.encode("utf-8")).hexdigest()[:8]
    return f"{slug or 'server'}-{url_hash}-{fingerprint}"


def workflow_prefix(workflow_id: str) -> str:
    """The start of the file names holding one workflow's requests."""
    encoded = utf8(workflow_id)
    slug = quote(encoded, safe="")[:80]
    digest = hashlib.sha256(encoded).hexdigest()[:8]
    return f"{slug}~{digest}."


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and missing parents with mode 0700."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)


def _written_at(path: Path) -> tuple[int, str]:
    """When a file was written (from its name), for replaying oldest first."""
    base = path.name.partition(CLAIM_MARK)[0].removesuffix(SUFFIX)
    try:
        return int(base.rsplit(".", 3)[1]), path.name
    except (IndexError, ValueError):
        return 0, path.name


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. EPERM: it exists but belongs to someone else
    return True


def _count(value: Any, default: int) -> int:
    return value if type(value) is int and value >= 0 else default


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def _epoch(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError, OverflowError):
        return time.time()


@attrs.define(kw_only=True)
class Entry:
    """One spooled request and its delivery history."""

    request: Request
    first_enqueued_at: float
    attempts: int = 0
    #: Hook events the request carries (several once coalesced).
    events: int = 1

    def to_line(self) -> str:
        request = self.request
        head = json.dumps(
            {
                "method": request.method,
                "path": request.path,
                "kind": request.kind,
                "workflow_id": request.workflow_id,
                "task_id": request.task_id,
                "final": request.final,
                "last": request.last,
                "first_enqueued_at": _iso(self.first_enqueued_at),
                "attempts": self.attempts,
                "events": self.events,
            },
            ensure_ascii=True,
            separators=(",", ":"),
        )
        # The body is already JSON: splice it in rather than parse and encode it again.
        return f'{head[:-1]},"body":{request.body.decode("ascii", "replace")}}}\n'

    @classmethod
    def from_line(cls, line: str) -> Entry:
        """Parse one line; raises ValueError (or KeyError/TypeError) when it is not an entry."""
        data = json.loads(line)
        kind = data["kind"]
        if kind not in KINDS or data["method"] not in ("POST", "PATCH"):
            raise ValueError(f"unknown request kind {kind!r}")
        task_id = data.get("task_id")
        if task_id is not None and (type(task_id) is not int or task_id < 1):
            raise ValueError(f"bad task id {task_id!r}")
        request = Request(
            kind=kind,
            method=data["method"],
            path=str(data["path"]),
            body=json.dumps(data["body"], ensure_ascii=True, separators=(",", ":")).encode(),
            workflow_id=str(data["workflow_id"]),
            task_id=task_id,
            final=bool(data.get("final", False)),
            last=bool(data.get("last", False)),
        )
        return cls(
            request=request,
            first_enqueued_at=_epoch(data.get("first_enqueued_at")),
            attempts=_count(data.get("attempts"), 0),
            events=_count(data.get("events"), 1),
        )


@attrs.define(eq=False)
class ClaimedFile:
    """A file this process claimed for replay; deleted once each of its entries is settled."""

    path: Path
    remaining: int = 0

    def settle(self, count: int = 1) -> None:
        """Mark ``count`` entries settled (sent, dropped, spooled again); delete the file at 0."""
        self.remaining -= count
        if self.remaining <= 0:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


@attrs.define(kw_only=True)
class FileSummary:
    """What ``dotflow outbox`` shows for one file."""

    base_url: str
    fingerprint: str
    workflow_id: str
    events: int
    oldest: float | None
    path: Path
    claimed_by: int | None = None


class Outbox:
    """The outbox folder of one (base URL, token fingerprint) pair."""

    def __init__(self, root: Path, base_url: str, fingerprint: str) -> None:
        self.root = root
        self.base_url = base_url
        self.fingerprint = fingerprint
        self.directory = root / destination_dirname(base_url, fingerprint)
        self._host = _host_tag()

    # -- writing -------------------------------------------------------------

    def write(self, workflow_id: str, entries: list[Entry]) -> Path:
        """Write one workflow's entries to a new file, atomically (temp file, fsync, rename)."""
        self._ensure_directory()
        name = (
            f"{workflow_prefix(workflow_id)}{time.time_ns()}.{os.getpid()}."
            f"{os.urandom(4).hex()}{SUFFIX}"
        )
        final = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii", errors="replace") as handle:
                if hasattr(os, "fchmod"):  # a umask cannot widen 0600, but be explicit
                    os.fchmod(handle.fileno(), 0o600)
                handle.writelines(entry.to_line() for entry in entries)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        return final

    def _ensure_directory(self) -> None:
        make_private_dirs(self.directory)
        meta = self.directory / META_FILE
        if not meta.exists():
            descriptor = os.open(meta, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump({"base_url": self.base_url, "fingerprint": self.fingerprint}, handle)

    # -- replaying -----------------------------------------------------------

    def claim(self, owned: set[Path] | None = None) -> Iterator[tuple[ClaimedFile, list[Entry]]]:
        """Claim every waiting file (and every stale claim) and yield its entries, oldest first.

        :param owned: claims this process holds already (never taken over).
        """
        for path in self._candidates():
            target = self._claimable(path, owned or set())
            if target is None:
                continue
            try:
                os.rename(path, target)
            except OSError:  # another runner claimed it first
                continue
            entries = self._read(target)
            claimed = ClaimedFile(target, remaining=len(entries))
            if not entries:
                claimed.settle(0)
            yield claimed, entries

    def _candidates(self) -> list[Path]:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        files = [
            self.directory / name
            for name in names
            if name.endswith(SUFFIX) or (SUFFIX + CLAIM_MARK) in name
        ]
        return sorted(files, key=_written_at)

    def _claimable(self, path: Path, owned: set[Path]) -> Path | None:
        name = path.name
        if name.endswith(SUFFIX):
            original = name
        else:
            original, _, claim = name.partition(CLAIM_MARK)
            if path in owned or not self._stale(claim):
                return None
        stamp = f"{self._host}.{os.getpid()}.{int(time.time())}"
        return path.with_name(f"{original}{CLAIM_MARK}{stamp}")

    def _stale(self, claim: str) -> bool:
        try:
            host, pid_text, since_text = claim.split(".")
            pid, since = int(pid_text), int(since_text)
        except ValueError:
            return True  # not a claim we wrote: take it
        if time.time() - since > STALE_CLAIM_SECONDS:
            return True
        if host != self._host:
            return False
        return pid == os.getpid() or not _pid_alive(pid)

    def _read(self, path: Path) -> list[Entry]:
        entries: list[Entry] = []
        bad = 0
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    try:
                        entries.append(Entry.from_line(line))
                    except (ValueError, KeyError, TypeError):
                        bad += 1
        except OSError as error:
            logger.error("cannot read outbox file %s: %s", path, error.strerror)
        if bad:
            logger.warning("outbox file %s: skipped %d unreadable line(s)", path, bad)
        return entries

    # -- reading without claiming ---------------------------------------------

    def highest_task_id(self, workflow_id: str) -> int | None:
        """The highest task id spooled for ``workflow_id`` (claimed files included)."""
        prefix = workflow_prefix(workflow_id)
        highest: int | None = None
        for path in self._candidates():
            if not path.name.startswith(prefix):
                continue
            for entry in self._read(path):
                request = entry.request
                if (
                    request.kind in (CREATE_TASK, UPDATE_TASK)
                    and request.workflow_id == workflow_id
                    and request.task_id is not None
                ):
                    highest = max(highest or 0, request.task_id)
        return highest


def summarize(root: Path) -> list[FileSummary]:
    """Every outbox file under ``root``, for ``dotflow outbox`` (reads, claims nothing)."""
    summaries: list[FileSummary] = []
    try:
        folders = sorted(path for path in root.iterdir() if path.is_dir())
    except OSError:
        return []
    for folder in folders:
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            base_url, fingerprint = str(meta["base_url"]), str(meta["fingerprint"])
        except (OSError, ValueError, KeyError, TypeError):
            base_url, fingerprint = f"(unknown: {folder.name})", "?"
        outbox = Outbox(root, base_url, fingerprint)
        outbox.directory = folder
        for path in outbox._candidates():
            entries = outbox._read(path)
            claimed_by = None
            if CLAIM_MARK in path.name:
                with contextlib.suppress(ValueError, IndexError):
                    claimed_by = int(path.name.partition(CLAIM_MARK)[2].split(".")[1])
            summaries.append(
                FileSummary(
                    base_url=base_url,
                    fingerprint=fingerprint,
                    workflow_id=entries[0].request.workflow_id if entries else "?",
                    events=sum(entry.events for entry in entries),
                    oldest=min((entry.first_enqueued_at for entry in entries), default=None),
                    path=path,
                    claimed_by=claimed_by,
                )
            )
    return summaries
