"""Prefect artifacts for each run: the summary table, the changes since each
model's previous run, and a note of the worst classes per model with where
the results (and the report) are."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from casflow.flows.steps import ResultsRecord
from casflow.tasks.results import ModelOutcome, change_cells, has_scores, scores_cells, summary_cells

WORST_CLASSES_SHOWN = 3


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def summary_table(record: ResultsRecord) -> list[dict[str, str]]:
    return [summary_cells(row) | {"error": row.get("error") or ""} for row in record.summary]


def changes_table(record: ResultsRecord) -> list[dict[str, str]]:
    """Each compared model overall, and its classes that changed significantly."""
    return [change_cells(row) for row in record.changes if row["class_index"] is None or row["significant"]]


def worst_classes_markdown(record: ResultsRecord, outcomes: list[ModelOutcome], class_names: tuple[str, ...],
                           report_uri: str | None) -> str:
    lines = [f"# CAS run {record.run_id}", "", f"- summary: `{record.summary_uri}`",
             f"- per class: `{record.per_class_uri}`", f"- changes: `{record.changes_uri}`"]
    lines += [f"- report: [{report_uri}]({_link(report_uri)})", ""] if report_uri else [""]
    for outcome in outcomes:
        if not outcome.ok:
            lines += [f"## {outcome.model}: failed", "", f"{outcome.error}", ""]
            continue
        accuracy = outcome.accuracy
        per_class = accuracy.per_class_top1()
        worst = sorted(range(len(per_class)), key=lambda c: per_class[c])[:WORST_CLASSES_SHOWN]
        lines += [f"## {outcome.model}: top-1 {_pct(accuracy.top1)}", "",
                  "| class | top-1 | eval images |", "| --- | --- | --- |"]
        lines += [f"| {class_names[c]} | {_pct(per_class[c])} | {accuracy.n_eval[c]} |" for c in worst]
        lines.append("")
    return "\n".join(lines)


def _link(uri: str) -> str:
    return uri if "://" in uri else f"file://{uri}"


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
