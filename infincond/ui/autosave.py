"""The file format of a session's work, saved after every action so that a browser reload or a server
restart loses nothing: what was loaded (the settings), which student is being tuned, the selection, and
each tuned student's whole log. Under ``<cache>/sessions/<session id>/``: ``session.json``, written
atomically, and a journal per tuned student's log, appended and flushed after every action;
the workspace writes them (:meth:`~infincond.ui.workspace.Workspace.autosave`) and restores from them
(:meth:`~infincond.ui.workspace.Workspace.restore`: the logs replayed on the same features, read from the
feature cache, no image pass)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigError
from ..features import default_cache_dir
from ..storage import atomic_write, storage_errors
from ..tuning.log import write_journal
from ..tuning.logformat import JOURNAL_SUFFIX, read_log

VERSION = 1
_SESSION_ID = re.compile(r"[0-9a-f]{12,32}")


def check_session_id(session_id: object) -> str:
    """A session id is lowercase hex (it names a folder, so nothing else may pass)."""
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        raise ConfigError(f"{session_id!r} is not a session id (12 to 32 lowercase hex digits).")
    return session_id


def session_folder(cache_dir: str | os.PathLike | None, session_id: str) -> Path:
    """Where a session's autosave, saved students and kept logs live."""
    return Path(cache_dir or default_cache_dir()) / "sessions" / check_session_id(session_id)


@dataclass
class Autosave:
    """What a restore needs: the load settings (as a dict), the tuned student's NEC, the selected concept
    and class (names), when it was saved, and the log files by (features fingerprint, NEC)."""

    settings: dict
    nec: int | None
    selection: tuple[str, str] | None
    saved_at: str
    logs: dict[tuple[str, int], Path]
    added_concepts: list[str]

    @property
    def edits(self) -> int | None:
        """Actions recorded over every log (each log's first entry is the distilled student); None when a
        log cannot be read (restoring says why)."""
        try:
            return sum(len(read_log(path)["entries"]) - 1 for path in self.logs.values())
        except ConfigError:
            return None


def write_state(folder: Path, settings, nec: int | None, selection: tuple[str, str] | None,
                added_concepts: list[str]) -> None:
    """Save what was loaded (and the concepts added since) and where the session stands (not the logs)."""
    data = {"version": VERSION, "settings": asdict(settings), "nec": nec, "added_concepts": list(added_concepts),
            "selection": list(selection) if selection else None,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # Not fsynced (a killed server keeps it; only a machine that loses power may lose the last selection):
    # it is written on every select. The logs, the work itself, are.
    atomic_write(folder / "session.json", lambda f: f.write(json.dumps(data, indent=1).encode()), durable=False)


def write_log(folder: Path, fingerprint: str, nec: int, session, memo: dict) -> None:
    """Save one tuned student's log: a journal, appended after every action
    (:func:`~infincond.tuning.log.write_journal`; ``memo``: the caller's, one per log). A log of the
    previous version (a whole export, ``.json``) is replaced by it."""
    path = folder / "logs" / f"{fingerprint}-nec{nec}{JOURNAL_SUFFIX}"
    first = not memo
    write_journal(session, path, memo)
    if first:
        with storage_errors("replace an earlier autosaved log", path.with_suffix(".json")):
            path.with_suffix(".json").unlink(missing_ok=True)


def read(folder: Path) -> Autosave | None:
    """The autosave in ``folder``, or None when there is none (or it is from another version)."""
    path = folder / "session.json"
    if not path.is_file():
        return None
    with storage_errors("read the autosaved session", path):
        data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None
    logs = {}
    for file in sorted((folder / "logs").glob("*-nec*.json*")):  # .json: a previous version's; .jsonl after
        fingerprint, _, nec = file.stem.rpartition("-nec")
        if nec.isdigit():
            logs[(fingerprint, int(nec))] = file
    selection = tuple(data["selection"]) if data.get("selection") else None
    return Autosave(data["settings"], data.get("nec"), selection, data.get("saved_at", ""), logs,
                    list(data.get("added_concepts") or []))


def describe(saved: Autosave) -> str:
    """One line about an autosaved session, for the restore prompt."""
    data = saved.settings.get("dataset", "?")
    edits = saved.edits
    actions = f"{edits} tuning action(s)" if edits is not None else "a tuning log that cannot be read"
    return f"A session of yours was saved at {saved.saved_at.replace('T', ' ')} UTC: `{data}`, {actions}. Restore it?"
