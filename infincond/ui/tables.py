"""Tables in the form Gradio's Dataframe sends to the page, ``{"headers", "data"}``, and for the heatmap
``"metadata": {"display_value", "styling"}`` per cell: built from rows directly, not through pandas. From a
DataFrame or a Styler, Gradio derives the same on every event (a Styler is rendered, then looked up cell by
cell): that and building the DataFrames were a third of the server's time in a select or an undo."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POSITIVE, NEGATIVE = "37, 99, 235", "220, 38, 38"  # blue, red
SELECTED_CELL = "; outline: 3px solid #f59e0b; font-weight: 700"


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def table(rows: Sequence[dict], columns: Sequence[str]) -> dict:
    """``rows`` (one dict per row, a value per column; missing ones empty) as a table with these headers."""
    return {"headers": list(columns), "data": [[_plain(row.get(column)) for column in columns] for row in rows]}


def influence_table(concepts: Sequence[str], classes: Sequence[str], values: np.ndarray, selected_row: int | None,
                    selected_class: int | None) -> dict:
    """The heatmap: a row per concept, a column per class, ``values`` (rows, classes) shown to 3 decimals on
    blue (positive) or red (negative) as strong as the value against the largest; the selected concept's
    name in bold, the selected cell outlined."""
    values = np.asarray(values, dtype=np.float64).round(3) + 0.0  # + 0.0: no "-0.000"
    scale = float(np.abs(values).max()) if values.size else 0.0
    alpha = np.minimum(np.abs(values) / (scale or 1.0), 1.0) * 0.85
    data, shown, styling = [], [], []
    for i, concept in enumerate(concepts):
        row, strength = values[i].tolist(), alpha[i].tolist()
        styles = [f"background-color: rgba({POSITIVE if v > 0 else NEGATIVE}, {a:.2f})" if v != 0 else "color: #aaa"
                  for v, a in zip(row, strength, strict=True)]
        if i == selected_row and selected_class is not None:
            styles[selected_class] += SELECTED_CELL
        data.append([concept, *row])
        shown.append([concept, *(f"{v:.3f}" for v in row)])
        styling.append(["font-weight: 600" if i == selected_row else "", *styles])
    return {"headers": ["concept", *classes], "data": data, "metadata": {"display_value": shown, "styling": styling}}
