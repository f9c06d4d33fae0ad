"""The README's picture of a report (docs/report.png): a real run's report, its top (title, summary, changes, the
series and its chart) and its failure gallery, the sections between left out, in headless Chromium.

    python docs/report_screenshot.py STORE/reports/RUN_ID/index.html docs/report.png

The page is cropped below its last drawn row and written as a 256-colour PNG: the README's copy stays small.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CUT_FROM = "<h2>Scores beside CAS</h2>"  # the first section left out
CUT_TO = "<h2>Failure gallery"  # the section shown after the cut
LEFT_OUT = ("<p><i>(left out of this picture: scores beside CAS, per-class accuracy, trend over runs, confusion "
            "matrices, samples beside real images)</i></p>\n")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def excerpt(report: str) -> str:
    """The report's page with the sections from CUT_FROM up to CUT_TO left out (and said so)."""
    return report[: report.index(CUT_FROM)] + LEFT_OUT + report[report.index(CUT_TO):]


def screenshot(page: Path, out: Path, width: int, height: int) -> None:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if browser is None:
        raise SystemExit("no Chromium on PATH")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={out}", page.as_uri()], check=True, capture_output=True, timeout=120)


def crop_and_shrink(shot: Path, out: Path, margin: int = 16) -> Image.Image:
    """Cut the blank rows below the page's last drawn one; keep 256 colours."""
    image = Image.open(shot).convert("RGB")
    drawn = np.flatnonzero((np.asarray(image).min(axis=2) < 250).any(axis=1))
    bottom = min(image.height, int(drawn[-1]) + margin) if len(drawn) else image.height
    small = image.crop((0, 0, image.width, bottom)).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(out, optimize=True)
    return small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a run's index.html")
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=6000, help="the window; blank rows below the page are cut")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        page, shot = Path(work) / "page.html", Path(work) / "shot.png"
        page.write_text(excerpt(args.report.read_text()))
        screenshot(page, shot, args.width, args.height)
        image = crop_and_shrink(shot, args.out)
    print(f"{args.out}: {image.width}x{image.height}, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
