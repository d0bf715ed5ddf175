"""What the page says after a what-if and after an action: the weights it changes, what it does to the
metrics and the worst group, the proxies a remove holds and the proxy report; and the small formatting
rules every view shares (a metric's change in points, text made safe for Markdown)."""

from __future__ import annotations

import html

from ..metrics import percent
from ..tuning import LogEntry, Preview


def delta(value: float | None) -> str:
    """A change of a share, in points: "+4.0 pts" ("" for None)."""
    return "" if value is None else f"{100 * value:+.1f} pts"


def text(value: str) -> str:
    """Text shown as is in Markdown (HTML escaped)."""
    return html.escape(value, quote=False)


def _held_and_rose(held: list[dict], rose: list[dict]) -> str:
    """The proxies a remove holds, and the proxy report: the weights that rose most, and what they track."""
    out = ""
    used = [h for h in held if h["before"] != 0]
    if held:
        unused = len(held) - len(used)
        out += (f"\n\nholds at 0 {len(held)} prox{'y' if len(held) == 1 else 'ies'} of "
                f"'{text(held[0]['tracks'])}': " + ", ".join(f"{text(h['concept'])} (was {h['before']:+.2f})"
                                                              for h in used)
                + (f"{', and ' if used else ''}{unused} the class does not use" if unused else ""))
    if rose:
        parts = [f"{text(r['concept'])} {r['before']:+.2f} -> {r['after']:+.2f}"
                 + (f" (**tracks {text(r['tracks'])}**)" if r["tracks"] else "") for r in rose]
        out += f"\n\nrose most for {text(rose[0]['class_name'])}: " + ", ".join(parts)
    return out


def _worst(d: dict, before: dict, after: dict) -> str:
    g_before, g_after = before.get("groups") or {}, after.get("groups") or {}
    if g_after.get("worst_group_accuracy") is None:
        return ""
    return (f" · worst group {percent(g_before.get('worst_group_accuracy'))} -> "
            f"{percent(g_after['worst_group_accuracy'])} ({delta(d.get('worst_group_accuracy'))})")


def preview_text(preview: Preview) -> str:
    """A what-if: the weights it changes and what it does to the metrics, and a remove's proxies."""
    d, before, after = preview.delta, preview.metrics_before, preview.metrics_after
    changed = ", ".join(f"{c['class_name']}: {c['before']:+.3f} -> {c['after']:+.3f}" for c in preview.changes)
    worst = sorted(((v["accuracy"] if v["accuracy"] is not None else v["agreement"] or 0.0, name)
                    for name, v in d["per_class"].items()), key=lambda x: x[0])
    per_class = ", ".join(f"{name} {delta(v)}" for v, name in worst[:2] + worst[-2:])
    how = (f"refitted in {preview.seconds:.2f} s: what Apply gives" if preview.refitted
           else "the other weights held; refitting...")
    return (f"**What if: {text(preview.edit.describe())}** ({how})\n\n"
            f"weight {changed}\n\nfidelity {percent(before['fidelity'])} -> {percent(after['fidelity'])} "
            f"({delta(d['fidelity'])}) · accuracy {percent(before['accuracy'])} -> {percent(after['accuracy'])} "
            f"({delta(d['accuracy'])}){_worst(d, before, after)}\n\nper class: {per_class}"
            f"{_held_and_rose(preview.held, preview.rose)}")


def entry_text(entry: LogEntry) -> str:
    """What an applied action did: its summary and metric changes."""
    d, after = entry.delta, entry.metrics_after
    refit = f" (refitted in {entry.refit['seconds']:.2f} s)" if entry.refit else ""
    if entry.refit and not entry.refit.get("converged", True):
        refit = refit[:-1] + ", stopped at the solver's iteration limit)"
    return (f"**Step {entry.step}: {text(entry.summary)}**{refit} · fidelity {percent(after['fidelity'])} "
            f"({delta(d.get('fidelity'))}) · accuracy {percent(after['accuracy'])} ({delta(d.get('accuracy'))})"
            f"{_worst(d, entry.metrics_before or {}, after)}{_held_and_rose(entry.held, entry.rose)}")


