"""The report's plots, drawn as SVG without matplotlib: well-formed, escaped, any class count."""

import base64
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from casflow.tasks import report


def svg_of(img: str) -> ET.Element:
    data = re.fullmatch(r"<img alt='[^']*' src='data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)'>", img).group(1)
    root = ET.fromstring(base64.b64decode(data))
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and float(root.get("width")) > 0 and float(root.get("height")) > 0
    return root


def texts(root: ET.Element) -> list[str]:
    return [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]


@pytest.mark.parametrize("classes", [1, 10, 60])
def test_bar_chart_has_a_bar_and_a_label_per_class_and_series(classes):
    names = [f"c<{i}>&" for i in range(classes)]
    values = np.linspace(0, 1, classes)
    series = [("model & co", values, values - 0.1, np.minimum(values + 0.1, 1), report.BLUE), ("real", values, values, values, report.GREY)]
    root = svg_of(report.bar_chart_svg(names, series, "top-1", "alt 'quoted'"))
    bars = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("fill") in (report.BLUE, report.GREY)]
    assert len(bars) == 2 * classes + 2  # and the two legend keys
    assert set(names) <= set(texts(root)) and "model & co" in texts(root)


@pytest.mark.parametrize("runs", [1, 3])
def test_line_chart_fits_its_range_even_for_one_run(runs):
    values = [0.9 + 0.01 * i for i in range(runs)]
    root = svg_of(report.line_chart_svg([f"11-{i:02d} 02:00" for i in range(runs)], values, [v - 0.02 for v in values],
                                        [v + 0.02 for v in values], "m (3 runs)", "CAS / real", "m"))
    assert len(list(root.iter("{http://www.w3.org/2000/svg}circle"))) == runs
    ticks = [float(t) for t in texts(root) if re.fullmatch(r"[0-9.]+", t)]
    assert ticks and min(values) - 0.05 <= min(ticks) and max(ticks) <= max(values) + 0.05


def test_heatmap_names_classes_up_to_twenty():
    small = svg_of(report.heatmap_svg(np.eye(3), ("cat", "dog", "emu"), "m", "m"))
    assert {"cat", "dog", "emu", "predicted", "true"} <= set(texts(small))
    large = svg_of(report.heatmap_svg(np.eye(30), tuple(f"k{i}" for i in range(30)), "m", "m"))
    assert "k0" not in texts(large) and len(list(large.iter("{http://www.w3.org/2000/svg}rect"))) == 30 * 30 + 2
