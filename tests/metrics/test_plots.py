# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tests of the evaluation figures: valid PNGs, written atomically, with the expected layout."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from monai_bigan.metrics import plot_case_grid, plot_roc_pr, plot_score_histograms


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_png(path: Path, folder: Path, expected: set[str]) -> np.ndarray:
    """The PNG reads back, is not blank, has normal permissions and no temporary file is left in its folder."""
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.01  # something was drawn
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert {p.name for p in folder.iterdir()} == expected
    return pixels


@pytest.fixture
def scan_scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 15)
    return rng.normal(0, 1, labels.size) + 1.5 * labels, labels


def test_plot_roc_pr_with_baselines(tmp_path, scan_scores):
    scores, labels = scan_scores
    backend = matplotlib.get_backend()
    out = plot_roc_pr(
        scores,
        torch.as_tensor(labels),
        tmp_path / "sub" / "roc_pr.png",
        title="test split",
        baselines={"autoencoder": (scores + np.random.default_rng(1).normal(0, 2, scores.size), labels)},
    )
    assert out == tmp_path / "sub" / "roc_pr.png"
    pixels = _check_png(out, tmp_path / "sub", {"roc_pr.png"})
    assert pixels.shape[1] > pixels.shape[0]  # two panels side by side
    assert matplotlib.get_backend() == backend  # the global backend is left alone
    with pytest.raises(ValueError, match="single class"):
        plot_roc_pr(scores, np.zeros_like(labels), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_plot_score_histograms(tmp_path, scan_scores):
    scores, labels = scan_scores
    out = plot_score_histograms(scores, labels, tmp_path / "hist.png", threshold=1.2, title="test", target_fpr=0.05)
    _check_png(out, tmp_path, {"hist.png"})
    # one class (healthy validation scores) and a constant score are fine too
    plot_score_histograms(scores[labels == 0], labels[labels == 0], tmp_path / "healthy.png")
    plot_score_histograms([2.0, 2.0, 2.0], [0, 0, 1], tmp_path / "constant.png", threshold=2.0)
    _check_png(tmp_path / "constant.png", tmp_path, {"hist.png", "healthy.png", "constant.png"})
    with pytest.raises(ValueError, match="NaN"):
        plot_score_histograms([0.1, np.nan], [0, 1], tmp_path / "nan.png")


def _case(rng: np.random.Generator, name: str, label: int, row: str | None = None, vmax: float = 0.5) -> dict:
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 40), np.linspace(-1, 1, 48), indexing="ij"))
    image = np.where((grid**2).sum(0) < 0.8, 100.0, 0.0) + rng.normal(0, 3, (40, 48))
    heatmap = np.abs(rng.normal(0, 0.1, (40, 48)))
    mask = np.zeros((40, 48), dtype=np.uint8)
    if label:
        mask[15:22, 20:28] = 1
        heatmap[mask > 0] += 0.6
    case = dict(image=image, heatmap=torch.as_tensor(heatmap)[None], name=name, score=float(heatmap.mean()))
    case.update(label=label, vmax=vmax, mask=mask)
    if row is not None:
        case["row"] = row
    return case


def test_plot_case_grid_rows(tmp_path):
    rng = np.random.default_rng(2)
    cases = [_case(rng, f"best-{i}", 1, "best") for i in range(3)] + [
        _case(rng, f"worst-{i}", i % 2, "worst") for i in range(3)
    ]
    out = plot_case_grid(cases, tmp_path / "grid.png", title="best and worst test cases")
    two_rows = _check_png(out, tmp_path, {"grid.png"})
    one_row = mpimg.imread(plot_case_grid(cases[:3], tmp_path / "one.png"))
    assert two_rows.shape[0] > 1.5 * one_row.shape[0] - 80  # a second row of panels (the title adds a little)
    # ncols wraps a long group; different vmax values get one colorbar per panel
    cases[1]["vmax"] = 1.0
    wrapped = mpimg.imread(plot_case_grid(cases[:3], tmp_path / "wrapped.png", ncols=2))
    assert wrapped.shape[0] > one_row.shape[0] * 1.5
    assert {p.name for p in tmp_path.iterdir()} == {"grid.png", "one.png", "wrapped.png"}


def test_plot_case_grid_invalid_cases(tmp_path):
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="empty"):
        plot_case_grid([], tmp_path / "a.png")
    case = _case(rng, "x", 0)
    del case["score"]
    with pytest.raises(ValueError, match="score"):
        plot_case_grid([case], tmp_path / "a.png")
    case = _case(rng, "x", 0, vmax=0.0)
    with pytest.raises(ValueError, match="vmax"):
        plot_case_grid([case], tmp_path / "a.png")
    case = _case(rng, "x", 0)
    case["heatmap"] = np.zeros((10, 10))
    with pytest.raises(ValueError, match="shape"):
        plot_case_grid([case], tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_temporary_file(tmp_path, scan_scores, monkeypatch):
    scores, labels = scan_scores
    (tmp_path / "roc.png").write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        plot_roc_pr(scores, labels, tmp_path / "roc.png")
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]
    assert (tmp_path / "roc.png").read_bytes() == b"old"  # the previous file is intact
