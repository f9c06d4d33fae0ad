"""The Prefect artifacts' text, without a Prefect server: names and errors escaped, classes without eval
images kept out of the worst classes."""

from __future__ import annotations

import re
import string

import pytest

from casflow.flows.artifacts import markdown_code, markdown_text, worst_classes_markdown
from casflow.flows.records import ResultsRecord
from casflow.tasks.metrics import ClassCounts
from casflow.tasks.results import ModelOutcome

HOSTILE = [
    "[click me](http://evil.example)",
    "**bold** _em_ `code`",
    "<img src=x onerror=alert(1)>",
    "a | b | c",
    "one\n# heading\n- item",
    "![pic](http://evil.example/p.png)",
    "http://evil.example www.evil.example",
    "&amp; &lt;b&gt; \\*",
    "cat",
]
_ESCAPE = re.compile(r"\\[" + re.escape(string.punctuation) + "]")


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: m.group(0)[1], text)


@pytest.mark.parametrize("name", HOSTILE)
def test_markdown_text_leaves_no_markup(name):
    escaped = markdown_text(name)
    assert "\n" not in escaped and "\r" not in escaped
    # with every backslash escape taken out, no ASCII punctuation is left to be read as markup
    assert not set(_ESCAPE.sub("", escaped)) & set(string.punctuation)
    assert _unescape(escaped) == " ".join(name.splitlines())  # and it reads as the name (on one line)


@pytest.mark.parametrize("text", ["results/per_class", "a`b", "``x``", "`start", "two\nlines"])
def test_markdown_code_spans_hold_their_text(text):
    span = markdown_code(text)
    fence = re.match(r"`+", span).group(0)
    assert span.endswith(fence) and "\n" not in span
    inner = span[len(fence):-len(fence)]
    assert fence not in inner and inner.strip(" ") == " ".join(text.splitlines())


def _counts(n_eval, correct, num_classes):
    return ClassCounts(n_eval=tuple(n_eval), top1_correct=tuple(correct), top5_correct=tuple(n_eval),
                       confusion=tuple(tuple(0 for _ in range(num_classes)) for _ in range(num_classes)))


def _record():
    return ResultsRecord("20261201T020000Z-abcd1234", "/s/results/per_class/x", "/s/results/changes/x",
                         "/s/results/summary/x", [], [])


def test_worst_classes_note_escapes_class_names_and_errors():
    names = tuple(HOSTILE)
    k = len(names)
    # the hostile names are the worst classes: low accuracy for all but the last
    ok = ModelOutcome("gauss", "gaussian", counts=(_counts([10] * k, [0] * (k - 1) + [10], k),))
    failed = ModelOutcome("bad", "python", error="model 'bad': [click](http://evil.example) **boom**\n# not a heading")
    note = worst_classes_markdown(_record(), [ok, failed], names, "/s/reports/x/index.html")
    table = [line for line in note.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == 3
    for line in table:  # three cells each: no name adds a column
        assert len(re.split(r"(?<!\\)\|", line)) == 5, line
    for line in note.splitlines():
        if line.startswith("- report: "):  # the one link, ours
            continue
        unescaped = re.sub(r"\\.", "", line)
        assert not re.search(r"\]\(|<img|\*\*|^#+ (?!CAS run|gauss|bad)", unescaped), line
    assert "click me" in note and "boom" in note and "## bad: failed" in note
    assert "- report: [" in note and "(<file:///s/reports/x/index.html>)" in note


def test_worst_classes_skip_a_class_without_eval_images():
    counts = _counts([5, 0, 5, 5], [1, 0, 5, 4], 4)  # class 1 has no eval images: no top-1, not 0%
    note = worst_classes_markdown(_record(), [ModelOutcome("gauss", "gaussian", counts=(counts,))],
                                  ("zero", "empty", "two", "three"), None)
    rows = [line for line in note.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split("|")[1].strip() for row in rows] == ["zero", "three", "two"]
    assert "empty" not in note and "nan" not in note
