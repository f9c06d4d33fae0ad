"""Prefect artifacts for each run: the summary table, the changes since each
model's previous run, and a note of the worst classes per model with where
the results (and the report) are."""

from __future__ import annotations

import re
from urllib.parse import quote

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from casflow.flows.steps import ResultsRecord
from casflow.tasks.results import (
    ModelOutcome,
    adaptive_seeds,
    best_so_far_verdicts,
    change_cells,
    has_scores,
    scores_cells,
    summary_cells,
)

WORST_CLASSES_SHOWN = 3
_MARKDOWN_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def markdown_text(value: object) -> str:
    """Any text (a class folder's name, an error message) as literal Markdown text on one line: every ASCII
    punctuation character backslash-escaped (CommonMark lets each be escaped, and an escaped one is plain
    text: no link, emphasis, heading, table cell, HTML tag or entity, nor an autolink, whose `://` and
    `www.` are broken up), line breaks as spaces."""
    text = " ".join(str(value).splitlines())
    return "".join(f"\\{ch}" if ch in _MARKDOWN_PUNCTUATION else ch for ch in text)


def markdown_code(value: object) -> str:
    """Text as a Markdown code span on one line (literal: nothing in it is markup), fenced by more backticks
    than it holds in a row."""
    text = " ".join(str(value).splitlines())
    longest = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def summary_table(record: ResultsRecord) -> list[dict[str, str]]:
    verdicts, seeds = best_so_far_verdicts(list(record.best)), adaptive_seeds(record.summary)
    return [summary_cells(row, verdicts, seeds) | {"error": row.get("error") or ""} for row in record.summary]


def changes_table(record: ResultsRecord) -> list[dict[str, str]]:
    """Each compared model overall, and its classes that changed significantly."""
    return [change_cells(row) for row in record.changes if row["class_index"] is None or row["significant"]]


def worst_classes_markdown(record: ResultsRecord, outcomes: list[ModelOutcome], class_names: tuple[str, ...],
                           report_uri: str | None) -> str:
    """Every name and message in it (model and class names, errors, store paths) is escaped (`markdown_text`):
    a class folder's name cannot add links or markup to the note. Classes without eval images have no top-1
    and are not worst classes."""
    lines = [f"# CAS run {markdown_text(record.run_id)}", "", f"- summary: {markdown_code(record.summary_uri)}",
             f"- per class: {markdown_code(record.per_class_uri)}", f"- changes: {markdown_code(record.changes_uri)}"]
    lines += [f"- best: {markdown_code(record.best_uri)}"] if record.best_uri else []
    lines += [f"- report: [{markdown_text(report_uri)}](<{_link(report_uri)}>)", ""] if report_uri else [""]
    for outcome in outcomes:
        model = markdown_text(outcome.model)
        if not outcome.ok:
            lines += [f"## {model}: failed", "", markdown_text(outcome.error), ""]
            continue
        accuracy = outcome.accuracy
        per_class = accuracy.per_class_top1()
        scored = [c for c in range(len(per_class)) if per_class[c] is not None]
        worst = sorted(scored, key=lambda c: per_class[c])[:WORST_CLASSES_SHOWN]
        lines += [f"## {model}: top-1 {_pct(accuracy.top1)}", "",
                  "| class | top-1 | eval images |", "| --- | --- | --- |"]
        lines += [f"| {markdown_text(class_names[c])} | {_pct(per_class[c])} | {accuracy.n_eval[c]} |" for c in worst]
        lines.append("")
    return "\n".join(lines)


def _link(uri: str) -> str:
    """A link target: percent-encoded but for the URL's own separators, so that it ends where it should."""
    return quote(uri if "://" in uri else f"file://{uri}", safe=":/@")


def publish(record: ResultsRecord, outcomes: list[ModelOutcome], class_names: tuple[str, ...],
            report_uri: str | None = None) -> None:
    create_table_artifact(key="cas-summary", table=summary_table(record), description=f"CAS run {record.run_id}")
    create_table_artifact(key="cas-changes", table=changes_table(record) or [{"model": "-", "verdict": "nothing to compare"}],
                          description=f"Changes since each model's previous run, run {record.run_id}")
    scored = [scores_cells(row) for row in record.summary if has_scores(row)]
    if scored:
        create_table_artifact(key="cas-scores", table=scored,
                              description=f"Scores beside CAS, in the real baseline's classifier, run {record.run_id}")
    create_markdown_artifact(key="cas-worst-classes",
                             markdown=worst_classes_markdown(record, outcomes, class_names, report_uri),
                             description=f"Worst classes per model, run {record.run_id}")
