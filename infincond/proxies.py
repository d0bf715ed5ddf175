"""Which concepts track which: the pooled within-class correlation of their presence.

A concept's proxies are the concepts whose presence moves with it *inside each class*. Correlations over
all images would mix in the class: on data where circles mostly lie on water, ``circle`` correlates 0.6
with ``water``, so a plain correlation would call the true feature a proxy of the shortcut. Centred
within each class first (labels where known, else the teacher's class), ``circle`` tracks ``water`` at
0.01, while ``water pipe``, ``water drops``, ``waterfall`` and ``watermelon`` track it at 0.77 to 0.84
(the Shapes world, seed 0): they measure the background, whatever the class. The removal of a concept
holds these at 0 with it (:mod:`infincond.tuning.edits`), and the shortcut audit folds them into its
finding.
"""

from __future__ import annotations

import numpy as np

#: A concept whose within-class correlation with another is at least this is its proxy.
PROXY_CORRELATION = 0.5
#: At most this many proxies per concept (the most correlated first).
MAX_PROXIES = 24


class Tracking:
    """Within-class correlations between the columns of standardised scores ``x`` (N, K) on fixed rows,
    ``groups`` (N,) the class of each row (``sums``: their :func:`group_sums`, when already known). The
    per-group means and the within-group spread of every column are computed once; each
    :meth:`correlation` is then one matrix-vector product."""

    def __init__(self, x: np.ndarray, groups: np.ndarray, sums: tuple | None = None) -> None:
        self.x = x
        self.counts, sums, squares = group_sums(x, groups) if sums is None else sums
        self.means = sums / self.counts[:, None]
        self.spread = np.sqrt(np.maximum(squares.sum(0) - (self.counts[:, None] * self.means**2).sum(0), 0.0))

    def correlation(self, k: int) -> np.ndarray:
        """Pooled within-class correlation (K,) of every concept with concept ``k`` (0 for a concept
        constant within every class)."""
        cross = np.asarray(self.x).T @ np.asarray(self.x[:, k], dtype=np.float32)
        cross = cross.astype(np.float64) - (self.counts[:, None] * self.means * self.means[:, k : k + 1]).sum(0)
        scale = self.spread * self.spread[k]
        return np.divide(cross, scale, out=np.zeros_like(cross), where=scale > 1e-12)

    def among(self, columns: np.ndarray, rows_of: np.ndarray | None = None) -> np.ndarray:
        """Pooled within-class correlations (M, M) among M concepts (``columns``): one (N, M) product.
        ``rows_of``: these columns of x already gathered as rows (M, N) (see :meth:`gather`)."""
        columns = np.asarray(columns, dtype=np.int64)
        block = np.asarray(self.x[:, columns], dtype=np.float32).T if rows_of is None else rows_of
        cross = (block @ block.T).astype(np.float64)
        means = self.means[:, columns]
        cross -= (self.counts[:, None, None] * means[:, :, None] * means[:, None, :]).sum(0)
        scale = np.outer(self.spread[columns], self.spread[columns])
        return np.divide(cross, scale, out=np.zeros_like(cross), where=scale > 1e-12)

    def gather(self, columns: np.ndarray) -> np.ndarray:
        """Columns of x as contiguous rows (M, N) float32: one pass over x for many :meth:`among` calls."""
        return np.ascontiguousarray(np.asarray(self.x[:, np.asarray(columns, dtype=np.int64)], dtype=np.float32).T)

    def proxies(self, k: int, threshold: float = PROXY_CORRELATION, limit: int = MAX_PROXIES
                ) -> list[tuple[int, float]]:
        """The concepts that track concept ``k`` (correlation at least ``threshold``), most correlated first,
        as (index, correlation); ``k`` itself is not among them."""
        r = self.correlation(k)
        r[k] = -np.inf
        order = np.argsort(-r, kind="stable")[:limit]
        return [(int(j), float(r[j])) for j in order if r[j] >= threshold]


def group_sums(x: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group of rows: its size (G,), and the sums of ``x`` (N, K) and of its squares (G, K), float64,
    over the groups present in ``groups`` (N,), in sorted order."""
    groups = np.asarray(groups)
    ids, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    onehot = np.zeros((len(ids), len(groups)), dtype=np.float32)
    onehot[inverse, np.arange(len(groups))] = 1.0
    x = np.asarray(x, dtype=np.float32)
    return counts.astype(np.float64), (onehot @ x).astype(np.float64), (onehot @ (x * x)).astype(np.float64)


def class_of_rows(labels_as_classes: np.ndarray, teacher_logits: np.ndarray) -> np.ndarray:
    """The class each row counts in (N,): its label where known, else the teacher's prediction."""
    labels = np.asarray(labels_as_classes)
    return np.where(labels >= 0, labels, np.asarray(teacher_logits).argmax(1))
