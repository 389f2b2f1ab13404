"""The durable outbox: requests not delivered yet, kept across crashes and runs.

Layout (directories mode 0700, files mode 0600, never the token)::

    <outbox_dir>/<host-slug>-<url hash>-<token fingerprint>/
        destination.json                      {"base_url": ..., "fingerprint": ...}
        journal.<time>.<pid>.<random>.jsonl.claimed.<host>.<pid>.<time>   a live run's journal
        <name>.jsonl                          waiting for the next run (or dotflow outbox flush)
        rejected/<name>.rejected.jsonl        lines that are never sent, each with its reason

One folder per (base URL, token fingerprint): events are only ever replayed
to the server and under the identity they were meant for. The lines are
described in :mod:`.outbox_lines`.

A running process journals its undelivered requests to a file it holds
claimed (see :mod:`.delivery.journal`); at its end, what is still undelivered
stays in that file, renamed to a plain ``.jsonl``. A run replays a file after
claiming it with an atomic rename to ``<file>.claimed.<host>.<pid>.<time>``, so
concurrent runners never replay the same file twice; a claim whose process
is gone (same host and pid dead, or older than a day) can be claimed again:
that is how the journal of a killed run is recovered.
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
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit

import attrs

from dotflow_server_api.outbox_lines import Contents, Entry, Rejected, read_file
from dotflow_server_api.payloads import CREATE_TASK, UPDATE_TASK, utf8

logger = logging.getLogger("dotflow.server.api.outbox")

SUFFIX: Final = ".jsonl"
CLAIM_MARK: Final = ".claimed."
META_FILE: Final = "destination.json"
REJECTED_DIR: Final = "rejected"
JOURNAL_PREFIX: Final = "journal."
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


@attrs.define(kw_only=True)
class Recovered:
    """A file this process claimed for replay: what it holds (the file is still there)."""

    path: Path
    contents: Contents


@attrs.define(kw_only=True)
class Stuck:
    """An entry of the outbox folder that cannot be replayed, and why."""

    path: Path
    reason: str


def claim_owner(name: str) -> int | None:
    """The pid a claimed file's name names, if any."""
    try:
        return int(name.partition(CLAIM_MARK)[2].split(".")[1])
    except (ValueError, IndexError):
        return None


class Outbox:
    """The outbox folder of one (base URL, token fingerprint) pair."""

    def __init__(self, root: Path, base_url: str, fingerprint: str) -> None:
        self.root = root
        self.base_url = base_url
        self.fingerprint = fingerprint
        self.directory = root / destination_dirname(base_url, fingerprint)
        self._host = _host_tag()
        #: What the last :meth:`claim` could not replay (directories, unreadable files).
        self.stuck: list[Stuck] = []

    # -- writing -------------------------------------------------------------

    def write(self, workflow_id: str, entries: list[Entry]) -> Path:
        """Write one workflow's entries to a new file, atomically (temp file, fsync, rename)."""
        self.ensure_directory()
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

    def new_journal_path(self) -> Path:
        """A name for this process's journal, claimed by it from the start."""
        base = f"{JOURNAL_PREFIX}{time.time_ns()}.{os.getpid()}.{os.urandom(4).hex()}{SUFFIX}"
        return self.directory / f"{base}{CLAIM_MARK}{self._stamp()}"

    def release(self, path: Path) -> Path:
        """Rename a claimed file back to its plain name: any later run may replay it."""
        plain = path.with_name(path.name.partition(CLAIM_MARK)[0])
        os.replace(path, plain)
        return plain

    def ensure_directory(self) -> None:
        make_private_dirs(self.directory)
        meta = self.directory / META_FILE
        if not meta.exists():
            descriptor = os.open(meta, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump({"base_url": self.base_url, "fingerprint": self.fingerprint}, handle)

    def reject(self, source: Path, rejected: list[Rejected]) -> Path:
        """Keep ``rejected`` lines aside in ``rejected/``, each with its reason (never deleted)."""
        folder = self.directory / REJECTED_DIR
        make_private_dirs(folder)
        base = source.name.partition(CLAIM_MARK)[0].removesuffix(SUFFIX)
        target = folder / f"{base}.{os.urandom(3).hex()}.rejected{SUFFIX}"
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8", errors="replace") as handle:
            for line in rejected:
                record = {"reason": line.reason, "line_number": line.number, "line": line.text}
                handle.write(json.dumps(record, ensure_ascii=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return target

    # -- replaying -----------------------------------------------------------

    def claim(self, owned: set[Path] | None = None) -> Iterator[Recovered]:
        """Claim every waiting file (and every stale claim) and yield what it holds, oldest first.

        A file that cannot be read is given back (renamed to its plain name) and
        listed in :attr:`stuck`, as is anything that is not a regular file.

        :param owned: files this process holds already (never taken over).
        """
        self.stuck = []
        for path in self.candidates():
            target = self._claimable(path, owned or set())
            if target is None:
                continue
            try:
                os.rename(path, target)
            except OSError:  # another runner claimed it first
                continue
            try:
                contents = read_file(target)
            except OSError as error:
                self.stuck.append(Stuck(path=path, reason=f"cannot be read: {error.strerror}"))
                with contextlib.suppress(OSError):
                    os.rename(target, path)
                continue
            yield Recovered(path=target, contents=contents)

    def candidates(self) -> list[Path]:
        """Regular files that hold requests, oldest first (the rest goes to :attr:`stuck`)."""
        try:
            scanned = list(os.scandir(self.directory))
        except OSError:
            return []
        files = []
        for entry in scanned:
            name = entry.name
            if not (name.endswith(SUFFIX) or (SUFFIX + CLAIM_MARK) in name):
                continue
            if entry.is_file(follow_symlinks=False):
                files.append(Path(entry.path))
            else:
                kind = "a symbolic link" if entry.is_symlink() else "not a regular file"
                self.stuck.append(Stuck(path=Path(entry.path), reason=f"{kind}; never read"))
        return sorted(files, key=_written_at)

    def _stamp(self) -> str:
        return f"{self._host}.{os.getpid()}.{int(time.time())}"

    def _claimable(self, path: Path, owned: set[Path]) -> Path | None:
        name = path.name
        if name.endswith(SUFFIX):
            original = name
        else:
            original, _, claim = name.partition(CLAIM_MARK)
            if path in owned or not self._stale(claim):
                return None
        return path.with_name(f"{original}{CLAIM_MARK}{self._stamp()}")

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

    # -- reading without claiming ---------------------------------------------

    def highest_task_id(self, workflow_id: str) -> int | None:
        """The highest task id waiting for ``workflow_id`` (claimed files and journals included)."""
        highest: int | None = None
        for path in self.candidates():
            try:
                entries = read_file(path).entries
            except OSError:
                continue
            for entry in entries:
                request = entry.request
                if (
                    request.kind in (CREATE_TASK, UPDATE_TASK)
                    and request.workflow_id == workflow_id
                    and request.task_id is not None
                ):
                    highest = max(highest or 0, request.task_id)
        return highest
