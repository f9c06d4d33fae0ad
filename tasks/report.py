"""One run as a self-contained HTML page: the summary with its intervals and
the changes since each model's previous run, per-class accuracy beside the
real baseline, the trend over nights, each classifier's confusion matrix,
and a grid of samples per model beside real images of the same classes.

No network: every image is a PNG embedded as a data URI, plots come from
matplotlib's Agg backend, and the page has no scripts.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image

from casflow.tasks.results import change_cells, has_scores, scores_cells, summary_cells

GRID_CLASSES = 10  # classes shown in sample grids and per-class bars (the first ones; all of them below this)
GRID_PER_CLASS = 8  # samples per class in a grid
GRID_MIN_PIXELS = 32  # grid cells are upscaled (nearest neighbour) to at least this many pixels


@dataclasses.dataclass(frozen=True)
class SampleGrid:
    """A few images per class: uint8 (classes, per_class, H, W, C); missing slots are blank."""

    images: np.ndarray
    class_indices: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ReportData:
    run_id: str
    store_url: str
    class_names: tuple[str, ...]
    summary: list[dict[str, Any]]  # this run's summary rows
    per_class: list[dict[str, Any]]  # this run's per-class rows
    changes: list[dict[str, Any]]  # this run's changes rows (empty for runs before changes were kept)
    history: list[dict[str, Any]]  # summary rows of every run on the store, for the trend
    confusion: dict[str, np.ndarray]  # model -> [true][predicted] counts, summed over seeds
    samples: dict[str, SampleGrid]  # model -> its samples (not for the `real` baseline, whose samples are real_samples)
    real_samples: SampleGrid | None  # the real train split, the same classes
    generated: datetime


def render(data: ReportData) -> str:
    """The whole page."""
    first = data.summary[0] if data.summary else {}
    title = f"CAS run {data.run_id}"
    models = [row["model"] for row in data.summary if row["status"] == "ok"]
    sections = [
        f"<h1>{_e(title)}</h1>",
        f"<p class=meta>dataset <b>{_e(first.get('dataset', '?'))}</b> &middot; recipe <b>{_e(first.get('recipe', '?'))}</b>"
        f" &middot; classifier seeds {_e(first.get('classifier_seeds') or [first.get('seed')])}"
        f" &middot; store <code>{_e(data.store_url)}</code> &middot; written {data.generated:%Y-%m-%d %H:%M} UTC</p>",
        "<h2>Summary</h2>", _summary_table(data.summary),
        "<h2>Changes since each model's previous run</h2>", _changes_section(data.changes),
        "<h2>Scores beside CAS</h2>", _scores_section(data.summary),
        "<h2>Per-class accuracy beside the real baseline</h2>",
        _per_class_section(data.per_class, models, data.class_names),
        "<h2>Trend over runs</h2>", _trend_section(data.history, models),
        "<h2>Confusion matrices</h2>", _confusion_section(data.confusion, models, data.class_names),
        "<h2>Samples beside real images</h2>", _samples_section(data.samples, data.real_samples, models, data.class_names),
    ]
    return (f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f4f4f4}.meta{color:#555}.worse{background:#fde2e2}.better{background:#e1f5e1}.failed{color:#a00}
.grid{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}.grid figure{margin:0;max-width:560px}
figcaption{font-size:.85em;color:#555;margin-top:.3em}
img{image-rendering:pixelated;max-width:100%}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(rows: Sequence[dict[str, str]], row_class: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in rows[0])
    body = "".join(f"<tr class='{row_class[i] if row_class else ''}'>" + "".join(f"<td>{_e(v)}</td>" for v in row.values())
                   + "</tr>" for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary_table(summary: list[dict[str, Any]]) -> str:
    rows = []
    for row in summary:
        cells = summary_cells(row)
        low, high = row.get("cas_top1_ci_low"), row.get("cas_top1_ci_high")
        cells["top-1 95% interval"] = "-" if low is None else f"{100 * low:.2f} - {100 * high:.2f}%"
        cells["error"] = row.get("error") or ""
        rows.append(cells)
    classes = ["failed" if r["status"] != "ok" else (r.get("change") or "") for r in summary]
    return _table(rows, classes)


def _changes_section(changes: list[dict[str, Any]]) -> str:
    if not changes:
        return "<p>No model had an earlier run to compare with (same dataset, recipe and seeds, other samples).</p>"
    shown = [row for row in changes if row["class_index"] is None or row["significant"]]
    note = ("<p>Paired on the same real eval images: exact McNemar test, Holm-adjusted across classes; "
            "classes are listed when they changed significantly.</p>")
    return note + _table([change_cells(row) for row in shown], [row["direction"] for row in shown])


def _scores_section(summary: list[dict[str, Any]]) -> str:
    rows = [scores_cells(row) for row in summary if has_scores(row)]
    if not rows:
        return "<p>No scores beside CAS in this run (turned off in the config, or no real baseline to score with).</p>"
    return ("<p>In the penultimate features of the classifier trained on the real train split: GAN-test is its accuracy "
            "on the samples (high with a low CAS: sharp but not diverse); Frechet distance, precision/recall (k = 3) and "
            "density/coverage (k = 5) against the real eval split; near copies: samples closer to a train image than 99% of "
            "train images are to any other, in pixels and in features. NAS: change in top-1 when that share of the real "
            "train count in samples is added to the real train split.</p>" + _table(rows))


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return _img(buffer.getvalue())


def _img(png: bytes, alt: str = "") -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _per_class_section(per_class: list[dict[str, Any]], models: list[str], class_names: tuple[str, ...]) -> str:
    plt = _pyplot()
    by_model: dict[str, dict[int, dict[str, Any]]] = {}
    for row in per_class:
        by_model.setdefault(row["model"], {})[row["class_index"]] = row
    baseline = next((m for m in models if by_model.get(m) and next(iter(by_model[m].values()))["generator_kind"] == "real"), None)
    classes = list(range(min(len(class_names), GRID_CLASSES * 5)))
    figures = []
    for model in models:
        if model not in by_model:
            continue
        figure, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(classes)), 2.6))
        x = np.arange(len(classes))
        shown = [(model, -0.2 if baseline and model != baseline else 0.0, "#3b6fb6")]
        if baseline and model != baseline:
            shown.append((baseline, 0.2, "#bbbbbb"))
        for name, offset, colour in shown:
            rows = [by_model[name][c] for c in classes]
            top1 = np.array([r["top1"] for r in rows])
            errors = np.array([[t - r["top1_ci_low"] for t, r in zip(top1, rows)], [r["top1_ci_high"] - t for t, r in zip(top1, rows)]])
            ax.bar(x + offset, top1, width=0.4 if len(shown) > 1 else 0.6, color=colour, label=name,
                   yerr=np.clip(errors, 0, None), capsize=2, error_kw={"elinewidth": 0.8})
        ax.set_xticks(x, [class_names[c] for c in classes], rotation=90 if len(classes) > 12 else 0, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("top-1")
        ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
        figures.append(f"<figure>{_png(figure)}<figcaption>{_e(model)}: bars with Wilson 95% intervals"
                       f"{', the real baseline in grey' if baseline and model != baseline else ''}</figcaption></figure>")
    return "<div class=grid>" + "".join(figures) + "</div>"


def _trend_section(history: list[dict[str, Any]], models: list[str]) -> str:
    plt = _pyplot()
    figures = []
    for model in models:
        rows = sorted((r for r in history if r["model"] == model and r["status"] == "ok" and r.get("cas_ratio_top1") is not None
                       and r.get("real_top1") and r["generator_kind"] != "real"), key=lambda r: r["run_id"])
        if not rows:
            continue
        figure, ax = plt.subplots(figsize=(4.2, 2.4))
        x = np.arange(len(rows))
        ratio = np.array([r["cas_ratio_top1"] for r in rows])
        # the interval of CAS divided by the run's real baseline (the baseline's own noise is not included)
        low = np.array([r["cas_top1_ci_low"] / r["real_top1"] for r in rows])
        high = np.array([r["cas_top1_ci_high"] / r["real_top1"] for r in rows])
        ax.fill_between(x, low, high, alpha=0.25, color="#3b6fb6", linewidth=0)
        ax.plot(x, ratio, marker="o", markersize=3, color="#3b6fb6")
        ax.set_xticks(x, [f"{r['run_time']:%m-%d %H:%M}" for r in rows], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("CAS / real")
        ax.set_title(f"{model} ({len(rows)} run{'s' if len(rows) != 1 else ''})", fontsize=10)
        figures.append(f"<figure>{_png(figure)}<figcaption>{_e(model)}: CAS ratio per run, band: Wilson 95% interval "
                       "of CAS over that run's real accuracy</figcaption></figure>")
    return "<div class=grid>" + "".join(figures) + "</div>" if figures else "<p>(no successful runs)</p>"


def _confusion_section(confusion: dict[str, np.ndarray], models: list[str], class_names: tuple[str, ...]) -> str:
    plt = _pyplot()
    figures = []
    for model in models:
        if model not in confusion:
            continue
        matrix = confusion[model].astype(np.float64)
        rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        size = min(6.0, 1.5 + 0.3 * len(class_names))
        figure, ax = plt.subplots(figsize=(size, size))
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        if len(class_names) <= 20:
            ticks = np.arange(len(class_names))
            ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
            ax.set_yticks(ticks, class_names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(model, fontsize=10)
        figures.append(f"<figure>{_png(figure)}<figcaption>{_e(model)}: rows normalised to 1</figcaption></figure>")
    return "<div class=grid>" + "".join(figures) + "</div>"


def _samples_section(samples: dict[str, SampleGrid], real: SampleGrid | None, models: list[str],
                     class_names: tuple[str, ...]) -> str:
    figures = []
    for model in models:
        grid = samples.get(model)
        if grid is None:
            continue
        caption = ", ".join(class_names[c] for c in grid.class_indices)
        figures.append(f"<figure>{_img(grid_png(grid), model)}<figcaption>{_e(model)}: one row per class ({_e(caption)})"
                       "</figcaption></figure>")
    if real is not None:
        figures.insert(0, f"<figure>{_img(grid_png(real), 'real')}<figcaption>real train images, the same classes</figcaption></figure>")
    return "<div class=grid>" + "".join(figures) + "</div>" if figures else "<p>(no samples found)</p>"


def grid_png(grid: SampleGrid) -> bytes:
    """The grid as one PNG: a row per class, a 1-pixel gap between images, upscaled for small images."""
    classes, per_class, height, width, channels = grid.images.shape
    scale = max(1, -(-GRID_MIN_PIXELS // max(height, width)))
    canvas = np.full((classes * (height + 1) - 1, per_class * (width + 1) - 1, channels), 255, np.uint8)
    for row in range(classes):
        for col in range(per_class):
            canvas[row * (height + 1) : row * (height + 1) + height, col * (width + 1) : col * (width + 1) + width] = grid.images[row, col]
    canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(canvas[:, :, 0] if channels == 1 else canvas).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_grid(images: np.ndarray, labels: np.ndarray, num_classes: int) -> SampleGrid:
    """The first GRID_PER_CLASS images of each of the first GRID_CLASSES classes, in stored order."""
    classes = tuple(range(min(num_classes, GRID_CLASSES)))
    out = np.full((len(classes), GRID_PER_CLASS, *images.shape[1:]), 255, np.uint8)
    for row, c in enumerate(classes):
        members = np.flatnonzero(labels == c)[:GRID_PER_CLASS]
        out[row, : len(members)] = images[members]
    return SampleGrid(out, classes)
