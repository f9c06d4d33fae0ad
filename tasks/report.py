"""One run as a self-contained HTML page: the summary with its intervals and
the changes since each model's previous run, each series' CAS against step
and best set, per-class accuracy beside the
real baseline, the trend over nights, each classifier's confusion matrix,
a grid of samples per model beside real images of the same classes, and the
failure gallery: the real eval images a model's classifier misses most
confidently, beside the model's nearest samples of both classes.

No network: every image is embedded as a data URI (sample grids as PNG,
plots as SVG drawn here, without matplotlib) and the page has no scripts.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image

from casflow.tasks.compare import run_order
from casflow.tasks.results import (
    UNKNOWN,
    adaptive_seeds,
    best_cells,
    best_so_far_verdicts,
    change_cells,
    has_scores,
    scores_cells,
    summary_cells,
)

GRID_CLASSES = 10  # classes shown in sample grids and per-class bars (the first ones; all of them below this)
GRID_PER_CLASS = 8  # samples per class in a grid
GRID_MIN_PIXELS = 32  # grid cells are upscaled (nearest neighbour) to at least this many pixels


@dataclasses.dataclass(frozen=True)
class SampleGrid:
    """A few images per class: uint8 (classes, per_class, H, W, C); missing slots are blank."""

    images: np.ndarray
    class_indices: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Miss:
    """A real eval image a model's classifier got wrong, and the model's samples nearest to it (tasks/gallery.py)."""

    image: np.ndarray  # uint8 (H, W, C)
    true_class: int
    predicted_class: int
    confidence: float  # the probability the classifier gave the predicted class
    true_neighbours: np.ndarray  # uint8 (k, H, W, C), nearest first: the model's samples of the true class
    predicted_neighbours: np.ndarray  # the same, of the predicted class


@dataclasses.dataclass(frozen=True)
class Gallery:
    """One model's most confident misses; `note` says why there are none when there are none."""

    misses: tuple[Miss, ...]
    note: str = ""


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
    best: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # this run's best table rows (its series)
    galleries: dict[str, Gallery] = dataclasses.field(default_factory=dict)  # model -> its failure gallery


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
        "<h2>Summary</h2>", _summary_table(data.summary, data.best),
        "<h2>Changes since each model's previous run</h2>", _changes_section(data.changes),
        *(["<h2>Series: CAS against step and the best set</h2>", _series_section(data.best)] if data.best else []),
        "<h2>Scores beside CAS</h2>", _scores_section(data.summary),
        "<h2>Per-class accuracy beside the real baseline</h2>",
        _per_class_section(data.per_class, models, data.class_names),
        "<h2>Trend over runs</h2>", _trend_section(data.history, models),
        "<h2>Confusion matrices</h2>", _confusion_section(data.confusion, models, data.class_names),
        "<h2>Samples beside real images</h2>", _samples_section(data.samples, data.real_samples, models, data.class_names),
        "<h2>Failure gallery: the most confident misses</h2>", _gallery_section(data.galleries, data.class_names),
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
.gallery td{vertical-align:middle}.gallery img{height:56px;width:auto;max-width:none}
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


def _summary_table(summary: list[dict[str, Any]], best: list[dict[str, Any]]) -> str:
    rows, verdicts, seeds = [], best_so_far_verdicts(best), adaptive_seeds(summary)
    for row in summary:
        cells = summary_cells(row, verdicts, seeds)
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


def _series_section(best: list[dict[str, Any]]) -> str:
    parts = ["<p>Each checkpoint against its series' leader (highest top-1), paired on the same eval images with the "
             "night-to-night test, Holm-adjusted across the series; the best set is the leader and every checkpoint "
             "not significantly worse. Newest vs best so far: the highest step against the best earlier one.</p>"]
    for series in dict.fromkeys(r["series"] for r in best):
        rows = sorted((r for r in best if r["series"] == series), key=lambda r: r["step"])
        lows = [r["cas_top1_ci_low"] if r["cas_top1_ci_low"] is not None else r["cas_top1"] for r in rows]
        highs = [r["cas_top1_ci_high"] if r["cas_top1_ci_high"] is not None else r["cas_top1"] for r in rows]
        chart = line_chart_svg([str(r["step"]) for r in rows], [r["cas_top1"] for r in rows], lows, highs,
                               f"{series} ({len(rows)} checkpoints)", "top-1", f"{series}: CAS top-1 per step")
        parts.append(f"<figure>{chart}<figcaption>{_e(series)}: CAS top-1 per step, band: Wilson 95% interval"
                     "</figcaption></figure>")
        if rows[0].get("reason"):
            parts.append(f"<p>Best set {UNKNOWN}: {_e(rows[0]['reason'])}</p>")
        parts.append(_table([{"series": series} | best_cells(r) for r in rows],
                            ["better" if r["in_best_set"] else "" for r in rows]))
    return "".join(parts)


def _scores_section(summary: list[dict[str, Any]]) -> str:
    rows = [scores_cells(row) for row in summary if has_scores(row)]
    if not rows:
        return "<p>No scores beside CAS in this run (turned off in the config, or no real baseline to score with).</p>"
    return ("<p>In the penultimate features of the classifier trained on the real train split: GAN-test is its accuracy "
            "on the samples (high with a low CAS: sharp but not diverse); Frechet distance, precision/recall (k = 3) and "
            "density/coverage (k = 5) against the real eval split; near copies: samples closer to a train image than 99% of "
            "train images are to any other, in pixels and in features. NAS: change in top-1 when that share of the real "
            "train count in samples is added to the real train split.</p>" + _table(rows))


def _img(png: bytes, alt: str = "") -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


# ---------------------------------------------------------------- plots, drawn as SVG
# A report is written every run, cached runs included: drawing these few plots by hand takes milliseconds,
# where matplotlib took about 2 s of a cached demo run on a 2-core CPU (its import and 14 figures).

BLUE, GREY = "#3b6fb6", "#bbbbbb"


def _svg_img(width: float, height: float, body: Sequence[str], alt: str) -> str:
    """An SVG picture as an <img> with a data URI, like the PNGs: no inline markup, nothing fetched."""
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
           f"viewBox='0 0 {width:.0f} {height:.0f}' font-family='DejaVu Sans,sans-serif' font-size='10' fill='#222'>"
           f"<rect width='100%' height='100%' fill='white'/>{''.join(body)}</svg>")
    return f"<img alt='{_e(alt)}' src='data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}'>"


def _text(x: float, y: float, text: str, anchor: str = "middle", size: float = 10, rotate: float = 0) -> str:
    turn = f" transform='rotate({rotate:g} {x:.1f} {y:.1f})'" if rotate else ""
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' font-size='{size:g}'{turn}>{_e(text)}</text>"


def _line(x1: float, y1: float, x2: float, y2: float, colour: str = "#222", width: float = 1) -> str:
    return f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' stroke='{colour}' stroke-width='{width:g}'/>"


def _axes(left: float, top: float, width: float, height: float, ticks: Sequence[float], y, label: str,
          fmt: str = "{:.1f}") -> list[str]:
    """A plot frame with y ticks and grid lines at `ticks` (y maps a value to a pixel row) and a y label."""
    parts = [f"<rect x='{left:.1f}' y='{top:.1f}' width='{width:.1f}' height='{height:.1f}' fill='none' stroke='#222'/>"]
    for tick in ticks:
        row = y(tick)
        parts += [_line(left, row, left + width, row, "#eee"), _line(left - 3, row, left, row),
                  _text(left - 5, row + 3.5, fmt.format(tick), "end", 9)]
    parts.append(_text(12, top + height / 2, label, rotate=-90))
    return parts


def bar_chart_svg(categories: Sequence[str],
                  series: Sequence[tuple[str, Sequence[float | None], Sequence[float | None], Sequence[float | None], str]],
                  ylabel: str, alt: str) -> str:
    """Grouped bars in [0, 1] with error bars: series are (name, values, lows, highs, colour); a legend above.
    A value None (a class without eval images) has no bar."""
    n, rotate = len(categories), len(categories) > 12
    left, top, plot_h = 42.0, 22.0, 170.0
    plot_w = max(300.0, 28.0 * n)
    bottom = 12 + (6 * max(len(c) for c in categories) if rotate else 12)
    y = lambda v: top + plot_h * (1 - v / 1.05)  # noqa: E731
    parts = _axes(left, top, plot_w, plot_h, (0, 0.2, 0.4, 0.6, 0.8, 1.0), y, ylabel)
    slot, key = plot_w / n, left
    bar = slot * (0.4 if len(series) > 1 else 0.6)
    for k, (name, values, lows, highs, colour) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * bar
        for i, (value, low, high) in enumerate(zip(values, lows, highs)):
            if value is None:  # a class without eval images: no accuracy, no bar (not a bar at 0)
                continue
            centre = left + slot * (i + 0.5) + offset
            parts.append(f"<rect x='{centre - bar / 2:.1f}' y='{y(value):.1f}' width='{bar:.1f}' height='{y(0) - y(value):.1f}' "
                         f"fill='{colour}'/>")
            low, high = min(low, value), max(high, value)
            parts += [_line(centre, y(low), centre, y(high), width=0.8), _line(centre - 2, y(low), centre + 2, y(low), width=0.8),
                      _line(centre - 2, y(high), centre + 2, y(high), width=0.8)]
        parts += [f"<rect x='{key:.1f}' y='6' width='12' height='8' fill='{colour}'/>", _text(key + 16, 13.5, name, "start", 8)]
        key += 30 + 5 * len(name)
    for i, name in enumerate(categories):
        centre = left + slot * (i + 0.5)
        parts.append(_line(centre, top + plot_h, centre, top + plot_h + 3))
        parts.append(_text(centre + 3, top + plot_h + 6, name, "end", 8, rotate=-90) if rotate
                     else _text(centre, top + plot_h + 13, name, size=8))
    return _svg_img(left + plot_w + 10, top + plot_h + bottom, parts, alt)


def _nice_step(rough: float) -> float:
    """1, 2 or 5 times a power of ten, the first at least `rough`."""
    power = 10 ** math.floor(math.log10(rough))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= rough)


def line_chart_svg(labels: Sequence[str], values: Sequence[float], lows: Sequence[float], highs: Sequence[float], title: str,
                   ylabel: str, alt: str) -> str:
    """Values with a band from `lows` to `highs`, one point per label (rotated under the axis), y range fitted."""
    n = len(labels)
    left, top, plot_w, plot_h = 50.0, 22.0, max(300.0, 30.0 * n), 150.0
    floor, ceiling = min(lows), max(highs)
    pad = max((ceiling - floor) * 0.1, 0.01)
    floor, ceiling = floor - pad, ceiling + pad
    y = lambda v: top + plot_h * (ceiling - v) / (ceiling - floor)  # noqa: E731
    x = lambda i: left + plot_w * (i + 0.5) / n  # noqa: E731
    step = _nice_step((ceiling - floor) / 4)
    ticks = [step * k for k in range(math.ceil(floor / step), math.floor(ceiling / step) + 1)]
    parts = _axes(left, top, plot_w, plot_h, ticks, y, ylabel, f"{{:.{max(0, -math.floor(math.log10(step)))}f}}")
    band = [(x(i), y(h)) for i, h in enumerate(highs)] + [(x(i), y(lo)) for i, lo in reversed(list(enumerate(lows)))]
    parts.append(f"<polygon points='{' '.join(f'{a:.1f},{b:.1f}' for a, b in band)}' fill='{BLUE}' fill-opacity='0.25'/>")
    parts.append(f"<polyline points='{' '.join(f'{x(i):.1f},{y(v):.1f}' for i, v in enumerate(values))}' fill='none' "
                 f"stroke='{BLUE}' stroke-width='1.5'/>")
    parts += [f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='2.5' fill='{BLUE}'/>" for i, v in enumerate(values)]
    for i, label in enumerate(labels):
        parts += [_line(x(i), top + plot_h, x(i), top + plot_h + 3), _text(x(i) + 3, top + plot_h + 8, label, "end", 8, rotate=-45)]
    parts.append(_text(left + plot_w / 2, 14, title))
    return _svg_img(left + plot_w + 10, top + plot_h + 12 + 5 * max(len(a) for a in labels), parts, alt)


def heatmap_svg(rates: np.ndarray, class_names: Sequence[str], title: str, alt: str) -> str:
    """A [true][predicted] matrix of rates in [0, 1], white to dark blue; class names on both axes up to 20 classes."""
    n = len(class_names)
    cell = max(4.0, min(24.0, 320.0 / n))
    named = n <= 20
    margin = 14 + (6 * max(len(c) for c in class_names) if named else 0)
    left, top = 16 + margin, 22.0
    parts = []
    for row in range(n):
        for col in range(n):
            r, g, b = (int(round(255 + (end - 255) * float(rates[row, col]))) for end in (8, 48, 107))  # white -> #08306b
            parts.append(f"<rect x='{left + col * cell:.1f}' y='{top + row * cell:.1f}' width='{cell + 0.3:.1f}' "
                         f"height='{cell + 0.3:.1f}' fill='rgb({r},{g},{b})'/>")
    side = n * cell
    parts.append(f"<rect x='{left:.1f}' y='{top:.1f}' width='{side:.1f}' height='{side:.1f}' fill='none' stroke='#222'/>")
    if named:
        for i, name in enumerate(class_names):
            centre = i * cell + cell / 2
            parts += [_text(left - 4, top + centre + 3, name, "end", 8),
                      _text(left + centre + 3, top + side + 5, name, "end", 8, rotate=-90)]
    parts += [_text(left + side / 2, 14, title), _text(left + side / 2, top + side + margin + 2, "predicted"),
              _text(10, top + side / 2, "true", rotate=-90)]
    return _svg_img(left + side + 10, top + side + margin + 8, parts, alt)


def _per_class_section(per_class: list[dict[str, Any]], models: list[str], class_names: tuple[str, ...]) -> str:
    by_model: dict[str, dict[int, dict[str, Any]]] = {}
    for row in per_class:
        by_model.setdefault(row["model"], {})[row["class_index"]] = row
    baseline = next((m for m in models if by_model.get(m) and next(iter(by_model[m].values()))["generator_kind"] == "real"), None)
    classes = list(range(min(len(class_names), GRID_CLASSES * 5)))
    figures = []
    for model in models:
        if model not in by_model:
            continue
        series = []
        for name, colour in [(model, BLUE)] + ([(baseline, GREY)] if baseline and model != baseline else []):
            rows = [by_model[name][c] for c in classes]
            series.append((name, [r["top1"] for r in rows], [r["top1_ci_low"] for r in rows], [r["top1_ci_high"] for r in rows],
                           colour))
        chart = bar_chart_svg([class_names[c] for c in classes], series, "top-1", f"{model}: top-1 per class")
        figures.append(f"<figure>{chart}<figcaption>{_e(model)}: bars with Wilson 95% intervals"
                       f"{', the real baseline in grey' if baseline and model != baseline else ''}</figcaption></figure>")
    return "<div class=grid>" + "".join(figures) + "</div>"


def _trend_section(history: list[dict[str, Any]], models: list[str]) -> str:
    figures = []
    for model in models:
        rows = sorted((r for r in history if r["model"] == model and r["status"] == "ok" and r.get("cas_ratio_top1") is not None
                       and r.get("real_top1") and r["generator_kind"] != "real"), key=run_order)
        if not rows:
            continue
        # the interval of CAS divided by the run's real baseline (the baseline's own noise is not included)
        chart = line_chart_svg([f"{r['run_time']:%m-%d %H:%M}" for r in rows], [r["cas_ratio_top1"] for r in rows],
                               [r["cas_top1_ci_low"] / r["real_top1"] for r in rows],
                               [r["cas_top1_ci_high"] / r["real_top1"] for r in rows],
                               f"{model} ({len(rows)} run{'s' if len(rows) != 1 else ''})", "CAS / real", f"{model}: CAS / real per run")
        figures.append(f"<figure>{chart}<figcaption>{_e(model)}: CAS ratio per run, band: Wilson 95% interval "
                       "of CAS over that run's real accuracy</figcaption></figure>")
    return "<div class=grid>" + "".join(figures) + "</div>" if figures else "<p>(no successful runs)</p>"


def _confusion_section(confusion: dict[str, np.ndarray], models: list[str], class_names: tuple[str, ...]) -> str:
    figures = []
    for model in models:
        if model not in confusion:
            continue
        matrix = confusion[model].astype(np.float64)
        rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        chart = heatmap_svg(rates, class_names, model, f"{model}: confusion matrix")
        figures.append(f"<figure>{chart}<figcaption>{_e(model)}: rows normalised to 1</figcaption></figure>")
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


def _gallery_section(galleries: dict[str, Gallery], class_names: tuple[str, ...]) -> str:
    if not galleries:
        return "<p>(no model evaluated)</p>"
    parts = ["<p>The real eval images each model's classifier (its first seed) misses most confidently, beside the "
             "model's samples nearest to them of the image's true class and of the class it was taken for, in the "
             "features of the classifier trained on the real train split. Shown for every plain model, the best "
             "checkpoint of each series and any model that got significantly worse tonight. Samples far from the "
             "image in its true class, or close to it in the predicted one, show what the model draws wrong.</p>"]
    for model, gallery in galleries.items():
        parts.append(f"<h3>{_e(model)}</h3>")
        if not gallery.misses:
            parts.append(f"<p>{_e(gallery.note or 'no misses')}</p>")
            continue
        rows = []
        for miss in gallery.misses:
            true_name, predicted_name = class_names[miss.true_class], class_names[miss.predicted_class]
            rows.append(f"<tr><td>{_img(strip_png(miss.image[None]), f'real eval image of {true_name}')}</td>"
                        f"<td>true <b>{_e(true_name)}</b>, taken for <b>{_e(predicted_name)}</b> ({100 * miss.confidence:.1f}%)</td>"
                        f"<td>{_strip(miss.true_neighbours, f'{model}: nearest samples of {true_name}')}</td>"
                        f"<td>{_strip(miss.predicted_neighbours, f'{model}: nearest samples of {predicted_name}')}</td></tr>")
        parts.append("<table class=gallery><tr><th>real eval image</th><th>true class, taken for (confidence)</th>"
                     "<th>nearest samples of the true class</th><th>nearest samples of the predicted class</th></tr>"
                     + "".join(rows) + "</table>")
    return "".join(parts)


def _strip(images: np.ndarray, alt: str) -> str:
    return _img(strip_png(images), alt) if len(images) else "(no samples of this class)"


def strip_png(images: np.ndarray) -> bytes:
    """uint8 (k, H, W, C) images side by side as one PNG, upscaled as the sample grids."""
    return grid_png(SampleGrid(images[None], ()))


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
