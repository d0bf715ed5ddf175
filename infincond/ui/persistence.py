"""What leaves a workspace and comes back: its autosave (written after every action, restored after a
reload or a restart), tuning logs imported, and the student saved, zipped or pushed. A mixin of
:class:`~infincond.ui.workspace.Workspace`; the file format is :mod:`.autosave`'s."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
import zipfile
from pathlib import Path

from ..distill import DistillConfig
from ..errors import ConfigError
from ..hub import check_repo_id
from ..student import ConceptStudent
from ..tuning import TuningSession
from . import autosave
from .settings import LoadSettings


class Persistence:
    """Saving, restoring, importing and sharing a workspace's work (see the module docstring)."""

    def import_log(self, path: str | os.PathLike) -> Path | None:
        """Replay a log (recorded on these features) as the session of its student's NEC target. A session
        with edits that it replaces is exported first, into the session folder, whose path is returned."""
        self.require("features")
        session = TuningSession.replay(self.features, path, strict=False, groups=self.groups)
        nec = session.initial.config.nec or int(round(session.initial.nec))
        key = (self.features.fingerprint, nec)
        kept = None
        previous = self.sessions.get(key)
        if previous is not None and len(previous.log) > 1:
            kept = self.folder / "replaced-logs" / f"tuning-log-nec{nec}-{uuid.uuid4().hex[:6]}.json"
            previous.export_log(kept)
        self.sessions[key] = session
        self._saved.pop(key, None)
        self.nec, self.image, self.subset = nec, None, None
        if self.concept is None or self.class_id is None:
            self.select_strongest()
        return kept

    # -- sharing --------------------------------------------------------------------------------------
    def concept_student(self) -> ConceptStudent:
        return ConceptStudent.from_session(self.session_or_fail(), self.encoder)

    def save(self, folder: str | os.PathLike) -> Path:
        """Save the student into ``folder`` (new, empty, or holding a previous student, replaced whole):
        weights, config, metrics, tuning log and model card."""
        folder = Path(folder).expanduser()
        self.concept_student().save_pretrained(folder)
        return folder

    def zip(self) -> Path:
        """The saved student as a zip file in a fresh temporary folder."""
        student = self.concept_student()
        folder = Path(tempfile.mkdtemp(prefix="infincond-"))
        student.save_pretrained(folder / "student")
        target = folder / "infincond-student.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted((folder / "student").rglob("*")):
                archive.write(path, path.relative_to(folder / "student"))
        return target

    def push(self, repo_id: str, token: str | None, private: bool = False) -> str:
        """Push the student to the Hub (one commit: weights, config, metrics, tuning log and model card);
        returns the repo URL."""
        repo_id = check_repo_id(repo_id)
        if not token:
            raise ConfigError("No Hugging Face token: set HF_TOKEN, or sign in with Hugging Face on a Space.")
        return str(self.concept_student().push_to_hub(repo_id, private=private, token=token).repo_url)

    # -- autosave and restore -------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        """This session's folder under the cache (autosave, saved students, kept logs)."""
        return autosave.session_folder(self.cache_dir, self.id)

    def autosave(self) -> None:
        """Write what changed since the last autosave: where the workspace stands (settings, student,
        selection, concepts added), when it moved, and every tuning log that grew. A workspace built from bare
        features (no settings to reload them by) is not autosaved."""
        if self.settings is None or self.features is None:
            return
        selection = None
        if self.session is not None and self.concept is not None and self.class_id is not None:
            selection = (self.session.concepts[self.concept], self.session.class_names[self.class_id])
        if self._saved.get("id") != self.id:  # a new session id (discard): its folder has nothing yet
            self._saved.clear()
            self._saved["id"] = self.id
        state = (self.settings, self.nec, selection, tuple(self.added_concepts))
        if self._saved.get("state") != state:  # an undo, a preview, ... leave it as it was: not written again
            autosave.write_state(self.folder, self.settings, self.nec, selection, self.added_concepts)
            self._saved["state"] = state
        for key, session in self.sessions.items():
            written, memo = self._saved.get(key, (None, {}))
            if len(session.log) > 1 and written != len(session.log):
                autosave.write_log(self.folder, key[0], key[1], session, memo)
                self._saved[key] = (len(session.log), memo)

    def restore(self, saved: autosave.Autosave, progress: bool = True) -> int:
        """Bring an autosaved session back: load its data (the features come from the cache: no image pass),
        distil, add the concepts it had added, replay each tuned student's log, and select what was
        selected. Returns how many actions were replayed."""
        self.load(LoadSettings(**saved.settings), progress=progress)
        necs = {nec for _, nec in saved.logs}
        nec = saved.nec or next(iter(sorted(necs)), DistillConfig().nec)
        self.distill(nec, self.default_sweep + tuple(necs), progress=progress)
        if saved.added_concepts:
            self.add_concepts(", ".join(saved.added_concepts))
        replayed = 0
        for (fingerprint, log_nec), path in saved.logs.items():
            if fingerprint == self.features.fingerprint:
                session = TuningSession.replay(self.features, path, groups=self.groups)
                self.sessions[(fingerprint, log_nec)] = session
                self._saved[(fingerprint, log_nec)] = (len(session.log), {})
                replayed += len(session.log) - 1
        self.pick(nec)
        if saved.selection:
            with contextlib.suppress(ConfigError):  # a concept that is gone keeps the default selection
                self.select(*saved.selection)
        return replayed
