"""Tables and plots in the form Gradio sends them to the page, built from rows directly, not through pandas:
a Dataframe's ``{"headers", "data"}`` (for the heatmap also ``"metadata": {"display_value", "styling"}``
per cell), a native plot's ``{"columns", "data", "datatypes", "mark"}``. From a DataFrame or a Styler,
Gradio derives the same on every event (a Styler is rendered, then looked up cell by cell; a plot's frame
goes to JSON and back): that and building the DataFrames were a third of the server's time in a select or
an undo."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POSITIVE, NEGATIVE = "37, 99, 235", "220, 38, 38"  # blue, red
SELECTED_CELL = "; outline: 3px solid #f59e0b; font-weight: 700"


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _cells(rows: Sequence[dict], columns) -> list[list]:
    """``rows`` (one dict per row, a value per column; missing ones empty) as lists of plain values."""
    return [[_plain(row.get(column)) for column in columns] for row in rows]


def table(rows: Sequence[dict], columns: Sequence[str]) -> dict:
    """``rows`` (dicts, see :func:`_cells`) as a table with these headers."""
    return {"headers": list(columns), "data": _cells(rows, columns)}


def plot(rows: Sequence[dict], columns: dict[str, str], mark: str) -> dict:
    """``rows`` as a native plot's data: ``columns`` maps each column to its type ("quantitative" or
    "nominal"), ``mark`` is the plot's ("bar", "line")."""
    if not rows:  # no columns either, as Gradio makes of an empty frame: a plot whose first value had typed
        columns = {}  # columns and no rows drew its later bars without colour (test_browser checks the fill)
    return {"columns": list(columns), "data": _cells(rows, columns), "datatypes": dict(columns), "mark": mark}


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
