"""No-code fine-tuning: concept edits become weight constraints, the student refits under them, and every
action lands in a provenance log that can be undone, exported, imported and replayed.

``edits`` (actions, kinds, what an edit does to the bounds), ``names`` (finding concepts and classes),
``history`` (immutable states, undo / redo / jump), ``log`` (the versioned log, exported and replayed),
``logformat`` (its file, read and validated), ``session`` (TuningSession, composing them).
"""

from .edits import DEFAULT_FACTOR, UNUSED_FRACTION, Action, Edit, Kind
from .log import LogEntry, Preview
from .logformat import validate_log
from .session import TuningSession

__all__ = ["DEFAULT_FACTOR", "UNUSED_FRACTION", "Action", "Edit", "Kind", "LogEntry", "Preview", "TuningSession",
           "validate_log"]
