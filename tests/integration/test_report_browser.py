"""The HTML report in a real headless browser (Debian's chromium): it renders (the screenshot is
not blank, charts included) and every section is present. Network features are off; the page
must need nothing but itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from services import service_missing

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "assess"))


def _screenshot(html: Path, png: Path, profile: Path) -> None:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        "--window-size=1280,4000",
        "--hide-scrollbars",
        html.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"


def test_report_renders_in_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        service_missing("chromium", "/usr/bin/chromium is absent (install: bash .ci/chromium.sh)")
    import numpy as np
    from assess_subjects import make_tables, train_bundle
    from matplotlib import image

    from torchshield.assess import AssessInputs, assess, write_report

    train, test = make_tables(tmp_path / "data", rows=160)
    model = train_bundle(train, tmp_path / "model.tsb", epochs=6)
    report = assess(AssessInputs(model=model, data=test, train_data=train, quick=True))
    html = write_report(report, tmp_path / "report")["html"]
    text = html.read_text(encoding="utf-8")
    for s in report.sections:
        assert f'<section id="{s.id}"' in text
    png = tmp_path / "shot.png"
    _screenshot(html, png, tmp_path / "profile")
    pixels = image.imread(png)[..., :3]
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    flat = (pixels.reshape(-1, 3) * 255).round().astype(np.uint8)
    colours = np.unique(flat, axis=0)
    non_white = float((flat.min(axis=1) < 240).mean())
    assert len(colours) > 50, "the page rendered as a few flat colours (blank?)"
    assert non_white > 0.05, f"only {non_white:.1%} of the screenshot is not white"
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
