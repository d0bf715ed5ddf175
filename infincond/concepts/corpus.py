"""Concept corpora: the built-in vocabulary shipped with the package, and user-supplied ones."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import ConfigError

DEFAULT_TEMPLATE = "a photo of {}."
_BUILTIN_FILE = "builtin_corpus.tsv"


def check_template(template: object) -> str:
    """A prompt template with exactly one ``{}`` (where the concept goes), else a clear ConfigError."""
    if not isinstance(template, str):
        raise ConfigError(f"The prompt template must be text with one '{{}}', not {template!r}.")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:  # a lone '{' or '}'
        raise ConfigError(f"Prompt template {template!r} is malformed ({error}); write literal braces as '{{{{' "
                          "and '}}'.") from error
    if fields != [""]:
        raise ConfigError(f"Prompt template {template!r} must contain exactly one '{{}}' where the concept goes "
                          f"(it has {len(fields)} placeholder(s){', named ' + repr(fields) if any(fields) else ''}), "
                          "e.g. 'a photo of {}.'.")
    return template


def normalize_concept(text: str) -> str:
    """Canonical form used to spot near-identical concepts: lowercase, '-'/'_' as spaces, single spaces."""
    text = re.sub(r"[-_/]+", " ", text.strip().lower())
    return re.sub(r"\s+", " ", text).strip()


#: Plurals that name something other than their singular ("glasses" to see with are not glass, "woods" are a
#: forest): never merged into it.
DISTINCT_PLURALS = frozenset({"glasses", "woods", "arms", "clothes", "goods", "spirits", "scales", "shorts",
                              "sands", "waters", "greens", "shades", "papers", "customs", "remains"})


def _singular(text: str) -> str:
    """A crude singular of the last word, enough to merge 'car'/'cars' and 'bus'/'buses' (not the
    :data:`DISTINCT_PLURALS`)."""
    head, _, last = text.rpartition(" ")
    if last in DISTINCT_PLURALS:
        return text
    for suffix, repl in (("ies", "y"), ("ses", "s"), ("xes", "x"), ("ches", "ch"), ("shes", "sh")):
        if last.endswith(suffix) and len(last) > len(suffix) + 1:
            last = last[: -len(suffix)] + repl
            break
    else:
        if last.endswith("s") and not last.endswith("ss") and len(last) > 3:
            last = last[:-1]
    return f"{head} {last}".strip()


@dataclass(frozen=True)
class ConceptCorpus:
    """An ordered list of concept texts, each with the source(s) it came from (';'-joined); ``merged`` lists
    the spellings taken for the same concept as an earlier one, as (kept, merged into it)."""

    concepts: tuple[str, ...]
    sources: tuple[str, ...]
    merged: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if len(self.concepts) != len(self.sources):
            raise ConfigError("A corpus needs exactly one source entry per concept.")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def builtin(cls) -> ConceptCorpus:
        """The built-in corpus: PASCAL-Context, COCO-Stuff and ADE20K labels, DTD textures,
        colours, materials, scenes, parts and shapes (over 800 concepts)."""
        text = resources.files(__package__).joinpath("data", _BUILTIN_FILE).read_text(encoding="utf-8")
        rows = list(csv.reader(text.splitlines()[1:], delimiter="\t"))
        return cls(tuple(r[0] for r in rows), tuple(r[1] for r in rows)).deduplicated()

    @classmethod
    def from_list(cls, concepts: Iterable[str], source: str = "user") -> ConceptCorpus:
        """A corpus from plain strings; blank entries are dropped, duplicates merged."""
        items = [c.strip() for c in concepts if c and c.strip()]
        if not items:
            raise ConfigError("The concept list is empty: give at least one concept.")
        return cls(tuple(items), tuple(source for _ in items)).deduplicated()

    @classmethod
    def from_file(cls, path: str | os.PathLike, source: str | None = None) -> ConceptCorpus:
        """A corpus from a text file: one concept per line (``#`` starts a comment),
        optionally followed by a tab and its source."""
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(f"Concept file {str(file)!r} does not exist: give a text file, one concept per line.")
        source = source or file.stem
        concepts: list[str] = []
        sources: list[str] = []
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"Concept file {str(file)!r} cannot be read as UTF-8 text ({error}): give a text "
                              "file, one concept per line.") from error
        for line in text.splitlines():
            line = line.split("#", 1)[0].rstrip()
            if not line.strip() or line.lower().startswith("concept\tsource"):
                continue
            text, _, src = line.partition("\t")
            concepts.append(text.strip())
            sources.append(src.strip() or source)
        if not concepts:
            raise ConfigError(f"Concept file {str(file)!r} holds no concepts.")
        return cls(tuple(concepts), tuple(sources)).deduplicated()

    @classmethod
    def resolve(cls, spec: ConceptCorpus | str | os.PathLike | Sequence[str] | None) -> ConceptCorpus:
        """Accept what users pass around: None or 'builtin', a file path, a list, or a corpus."""
        if isinstance(spec, ConceptCorpus):
            return spec
        if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "builtin", "built-in")):
            return cls.builtin()
        if isinstance(spec, (str, os.PathLike)):
            return cls.from_file(spec)
        return cls.from_list(spec)

    # -- operations ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.concepts)

    def __add__(self, other: ConceptCorpus | Sequence[str]) -> ConceptCorpus:
        """The union, de-duplicated; a plain list of concepts is tagged with the source "user"."""
        if not isinstance(other, ConceptCorpus):
            other = ConceptCorpus.from_list(list(other))
        return ConceptCorpus(self.concepts + other.concepts, self.sources + other.sources,
                             self.merged + other.merged).deduplicated()

    def deduplicated(self) -> ConceptCorpus:
        """Merge near-identical concepts (case, punctuation, plural); the first spelling wins and
        the sources are united."""
        order: list[str] = []
        texts: dict[str, str] = {}
        sources: dict[str, list[str]] = {}
        merged = list(self.merged)
        for text, src in zip(self.concepts, self.sources, strict=False):
            norm = normalize_concept(text)
            if not norm:
                continue
            key = _singular(norm)
            if key not in texts:
                order.append(key)
                texts[key] = norm
                sources[key] = []
            elif norm != texts[key] and (texts[key], norm) not in merged:
                merged.append((texts[key], norm))
            for part in src.split(";"):
                if part and part not in sources[key]:
                    sources[key].append(part)
        return ConceptCorpus(tuple(texts[k] for k in order), tuple(";".join(sources[k]) for k in order),
                             tuple(merged))

    def select(self, indices: Sequence[int] | np.ndarray) -> ConceptCorpus:
        """The sub-corpus at ``indices`` (used for pruning)."""
        idx = [int(i) for i in indices]
        return ConceptCorpus(tuple(self.concepts[i] for i in idx), tuple(self.sources[i] for i in idx), self.merged)

    def prompts(self, template: str = DEFAULT_TEMPLATE) -> list[str]:
        """The text prompts the encoder embeds: ``template`` with each concept in its ``{}``."""
        check_template(template)
        return [template.format(c) for c in self.concepts]

    def fingerprint(self) -> str:
        """A hash of the concept texts, in order."""
        return hashlib.sha256("\n".join(self.concepts).encode()).hexdigest()[:16]

    def source_counts(self) -> dict[str, int]:
        """How many concepts each source contributes."""
        counts: dict[str, int] = {}
        for src in self.sources:
            for part in src.split(";"):
                counts[part] = counts.get(part, 0) + 1
        return counts


def near_duplicate_mask(concept_embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Keep-mask (K,) dropping every concept whose text embedding has cosine >= ``threshold`` with an
    earlier kept one. ``concept_embeddings``: (K, D), L2-normalised."""
    sims = concept_embeddings @ concept_embeddings.T
    np.fill_diagonal(sims, -np.inf)
    keep = np.ones(len(concept_embeddings), dtype=bool)
    for k in range(len(concept_embeddings)):
        if keep[k]:
            # Later concepts too close to a kept one go; earlier ones were already decided.
            close = np.nonzero(sims[k, k + 1 :] >= threshold)[0] + k + 1
            keep[close] = False
    return keep
