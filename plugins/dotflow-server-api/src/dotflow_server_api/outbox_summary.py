"""What ``dotflow outbox`` shows: what waits, and what is stuck and why (reads; claims nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from dotflow_server_api.outbox import CLAIM_MARK, META_FILE, REJECTED_DIR, Outbox, claim_owner
from dotflow_server_api.outbox_lines import read_file


@attrs.define(kw_only=True)
class FileSummary:
    """The requests of one workflow waiting in one file."""

    base_url: str
    fingerprint: str
    workflow_id: str
    events: int
    oldest: float | None
    path: Path
    claimed_by: int | None = None


@attrs.define(kw_only=True)
class Problem:
    """Something in the outbox that will not be sent: a poisoned line, an unreadable file."""

    base_url: str
    fingerprint: str
    path: Path
    reason: str
    #: Lines concerned (0 for a whole entry, e.g. a directory).
    lines: int = 0


@attrs.define(kw_only=True)
class Survey:
    waiting: list[FileSummary] = attrs.Factory(list)
    problems: list[Problem] = attrs.Factory(list)


def survey(root: Path) -> Survey:
    """Every destination folder under ``root``: what waits, and what is stuck."""
    result = Survey()
    try:
        folders = sorted(path for path in root.iterdir() if path.is_dir())
    except OSError:
        return result
    for folder in folders:
        _survey_folder(folder, root, result)
    return result


def summarize(root: Path) -> list[FileSummary]:
    """Every workflow waiting under ``root``, file by file."""
    return survey(root).waiting


def _destination(folder: Path) -> tuple[str, str]:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        return str(meta["base_url"]), str(meta["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"(unknown: {folder.name})", "?"


def _survey_folder(folder: Path, root: Path, result: Survey) -> None:
    base_url, fingerprint = _destination(folder)
    outbox = Outbox(root, base_url, fingerprint)
    outbox.directory = folder
    for path in outbox.candidates():
        try:
            contents = read_file(path)
        except FileNotFoundError:
            continue  # claimed (renamed) or finished by another run meanwhile
        except OSError as error:
            result.problems.append(
                Problem(
                    base_url=base_url,
                    fingerprint=fingerprint,
                    path=path,
                    reason=f"cannot be read: {error.strerror}",
                )
            )
            continue
        claimed_by = claim_owner(path.name) if CLAIM_MARK in path.name else None
        by_workflow: dict[str, list[float]] = {}
        events: dict[str, int] = {}
        for entry in contents.entries:
            workflow_id = entry.request.workflow_id
            by_workflow.setdefault(workflow_id, []).append(entry.first_enqueued_at)
            events[workflow_id] = events.get(workflow_id, 0) + entry.events
        for workflow_id, times in by_workflow.items():
            result.waiting.append(
                FileSummary(
                    base_url=base_url,
                    fingerprint=fingerprint,
                    workflow_id=workflow_id,
                    events=events[workflow_id],
                    oldest=min(times),
                    path=path,
                    claimed_by=claimed_by,
                )
            )
        if contents.rejected:
            first = contents.rejected[0]
            result.problems.append(
                Problem(
                    base_url=base_url,
                    fingerprint=fingerprint,
                    path=path,
                    reason=f"line {first.number}: {first.reason} (set aside at the next replay)",
                    lines=len(contents.rejected),
                )
            )
    for stuck in outbox.stuck:
        result.problems.append(
            Problem(
                base_url=base_url, fingerprint=fingerprint, path=stuck.path, reason=stuck.reason
            )
        )
    _survey_rejected(folder / REJECTED_DIR, base_url, fingerprint, result)


def _survey_rejected(folder: Path, base_url: str, fingerprint: str, result: Survey) -> None:
    try:
        paths = sorted(folder.iterdir())
    except OSError:
        return
    for path in paths:
        reasons: list[str] = []
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        reasons.append(str(json.loads(line).get("reason", "?")))
                    except (ValueError, AttributeError):
                        reasons.append("?")
        except OSError as error:
            reasons = [f"cannot be read: {error.strerror}"]
        result.problems.append(
            Problem(
                base_url=base_url,
                fingerprint=fingerprint,
                path=path,
                reason=f"rejected, never sent: {reasons[0] if reasons else '(empty)'}",
                lines=len(reasons),
            )
        )
