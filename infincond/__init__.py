"""InFiConD: distil any image classifier into a small, readable concept-based student.

Example::

    run = infincond.run_distillation("teacher-repo", "dataset-repo", "openai/clip-vit-base-patch32")
    print(run.metrics.to_dict())
"""

from .audit import AuditReport, Finding
from .concepts import ConceptCorpus, ConceptEncoder, concept_presence
from .data import DataConfig, ImageSource, load_image_source
from .distill import Constraints, ConvergenceWarning, DistillConfig, distill, fit
from .errors import (
    ColumnDetectionError,
    ConfigError,
    ConstraintError,
    HubError,
    InfinconError,
    LoadError,
    StorageError,
)
from .extraction import extract_features
from .features import ExtractConfig, FeatureSet
from .groups import Groups, groups_for
from .linear import Contribution, LinearStudent
from .metrics import Metrics, evaluate, evaluate_student
from .pipeline import DistillationRun, run_distillation
from .student import ConceptStudent
from .teacher import Teacher
from .tuning import Edit, LogEntry, Preview, TuningSession

__version__ = "0.1.0"

__all__ = [
    "AuditReport", "Finding", "Groups", "groups_for",
    "ColumnDetectionError", "ConceptCorpus", "ConceptEncoder", "ConceptStudent", "ConfigError", "ConstraintError",
    "Constraints", "Contribution", "ConvergenceWarning", "DataConfig", "DistillConfig", "DistillationRun", "Edit",
    "ExtractConfig", "FeatureSet", "HubError", "ImageSource", "InfinconError", "LinearStudent", "LoadError", "LogEntry",
    "Metrics", "Preview", "StorageError", "Teacher", "TuningSession", "concept_presence", "distill", "evaluate",
    "evaluate_student", "extract_features", "fit", "load_image_source", "run_distillation",
]
