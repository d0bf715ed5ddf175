"""Finding concepts and classes by the names people type: exact, then forgiving case and spacing, with
"did you mean" suggestions when nothing matches."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from ..concepts.corpus import normalize_concept
from ..errors import ConstraintError


class Names:
    """Look-ups of concept and class names (the student's own order)."""

    def __init__(self, concepts: Sequence[str], class_names: Sequence[str]) -> None:
        self.concepts, self.class_names = list(concepts), list(class_names)
        self._concepts = {name: i for i, name in enumerate(self.concepts)}
        self._normalised_concepts = {normalize_concept(name): i for i, name in enumerate(self.concepts)}
        self._classes = {name: c for c, name in enumerate(self.class_names)}
        self._normalised_classes = {normalize_concept(name): c for c, name in enumerate(self.class_names)}

    def concept_id(self, concept: str) -> int:
        """The index of a concept by its text (exact, then case- and space-insensitive)."""
        if concept in self._concepts:
            return self._concepts[concept]
        found = self._normalised_concepts.get(normalize_concept(str(concept)))
        if found is None:
            close = difflib.get_close_matches(str(concept), self.concepts, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConstraintError(f"Unknown concept {concept!r}: the student has {len(self.concepts)} concepts "
                                  f"and this is not one of them.{hint}")
        return found

    def class_id(self, class_name: str) -> int:
        """The index of a class by its name (exact, then case- and space-insensitive)."""
        if class_name in self._classes:
            return self._classes[class_name]
        found = self._normalised_classes.get(normalize_concept(str(class_name)))
        if found is None:
            raise ConstraintError(f"Unknown class {class_name!r}; the classes are {self.class_names}.")
        return found
