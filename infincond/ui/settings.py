"""What a user asks the app to load: the teacher, the dataset, the encoder and the concepts."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import check_choice, check_integer
from ..concepts.corpus import ConceptCorpus
from ..data import DataConfig
from ..errors import ConfigError

CORPUS_CHOICES = ("builtin", "builtin+typed", "typed")
#: The setup form's fields, in the order the page (and the /load endpoint) takes them.
SETUP_FIELDS = ("teacher", "dataset", "config_name", "split", "image_column", "label_column", "encoder", "corpus",
                "concepts_text", "samples", "group_column")


@dataclass
class LoadSettings:
    """What to load: repo ids or paths, dataset settings, the concept corpus and the sample size.

    ``corpus``: "builtin", "typed" (``concepts_text`` only) or "builtin+typed"; ``corpus_file`` (one
    concept per line) replaces the built-in corpus when given. ``group_column``: the groups worst-group
    accuracy is measured on (a categorical column, "concept:<name>", or "" for none).
    """

    teacher: str
    dataset: str
    encoder: str
    config_name: str | None = None
    split: str | None = None
    image_column: str = "auto"
    label_column: str = "auto"
    samples: int = DataConfig.samples
    corpus: str = "builtin+typed"
    concepts_text: str = ""
    corpus_file: str | None = None
    group_column: str = ""

    def __post_init__(self) -> None:
        check_choice("corpus", self.corpus, CORPUS_CHOICES)
        self.samples = check_integer("sample size", self.samples, 2)

    def corpus_value(self) -> ConceptCorpus:
        typed = [c.strip() for line in self.concepts_text.splitlines() for c in line.split(",") if c.strip()]
        if self.corpus_file:
            base = ConceptCorpus.from_file(self.corpus_file)
        elif self.corpus in ("builtin", "builtin+typed"):
            base = ConceptCorpus.builtin()
        else:
            base = None
        if self.corpus == "builtin":
            typed = []
        if base is None:
            if not typed:
                raise ConfigError("Type at least one concept (comma- or line-separated), or use the built-in corpus.")
            return ConceptCorpus.from_list(typed)
        return base + typed if typed else base

    @classmethod
    def from_fields(cls, values: dict, corpus_file: str | None = None) -> LoadSettings:
        """Settings from the setup form's fields by name (:data:`SETUP_FIELDS`), as a page sends them."""
        return cls(
            (values["teacher"] or "").strip(),
            (values["dataset"] or "").strip(),
            (values["encoder"] or "").strip(),
            values["config_name"] or None,
            values["split"] or None,
            values["image_column"] or "auto",
            values["label_column"] or "auto",
            DataConfig.samples if values["samples"] is None else values["samples"],
            values["corpus"],
            values["concepts_text"] or "",
            corpus_file or None,
            (values["group_column"] or "").strip(),
        )

    def fields(self) -> list:
        """The setup form's fields, in :data:`SETUP_FIELDS` order."""
        return [self.teacher, self.dataset, self.config_name or "", self.split or "", self.image_column,
                self.label_column, self.encoder, self.corpus, self.concepts_text, self.samples, self.group_column]

    def data_config(self) -> DataConfig:
        return DataConfig(self.dataset, config_name=self.config_name or None, split=self.split or None,
                          image_column=self.image_column, label_column=self.label_column, samples=self.samples)
