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
"""Tests of the review sheet rendering and of the ReviewSheetd transform."""

from __future__ import annotations

import os
import time
from pathlib import Path
from unittest import mock

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_bigan.visualize import ReviewSheetd, render_review_sheet, select_slices

BLOB_SLICES = (5, 6, 7)


def _case(shape: tuple[int, int, int] = (32, 32, 12)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A disc phantom with a bright blob in BLOB_SLICES, a blob-free reconstruction, the residual and slice scores."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = (((yy - 16) / 12.0) ** 2 + ((xx - 16) / 10.0) ** 2 < 1).astype(np.float32)
    recon = np.repeat(disc[..., None], shape[2], axis=2) * 0.5
    image = recon + rng.normal(0, 0.01, shape).astype(np.float32) * recon
    blob = ((yy - 12) ** 2 + (xx - 18) ** 2 < 9).astype(np.float32)
    for k in BLOB_SLICES:
        image[..., k] += blob
    heatmap = np.abs(image - recon)
    return image, recon, heatmap, heatmap.mean(axis=(0, 1))


def _check_png(path: Path, min_size: int = 300) -> np.ndarray:
    assert path.is_file()
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert min(pixels.shape[:2]) >= min_size and max(pixels.shape[:2]) < 5000
    assert pixels[..., :3].std() > 0.05  # not blank
    return pixels


def test_select_slices():
    assert select_slices([0.1, 0.9, 0.2, 0.8], 2) == [1, 3]
    assert select_slices(np.array([3.0, 1.0, 2.0]), 10) == [0, 1, 2]
    assert select_slices(torch.tensor([0.0, float("nan"), 1.0]), 2) == [0, 2]
    assert select_slices([0.5, 0.5, 0.5], 1) == [0]
    with pytest.raises(ValueError):
        select_slices([1.0], 0)


def test_render_3d_picks_blob_slices(tmp_path):
    image, recon, heatmap, scores = _case()
    assert select_slices(scores, 3) == list(BLOB_SLICES)
    out = render_review_sheet(
        image,
        recon,
        heatmap,
        scores,
        tmp_path / "sheets" / "case_review.png",
        title="case.nii.gz",
        info_lines=["score 0.123  |  percentile 97.5 among healthy  |  FLAGGED (threshold 0.110)"],
        heatmap_vmax=1.0,
        num_slices=3,
        threshold=0.5,
    )
    assert out == tmp_path / "sheets" / "case_review.png"
    pixels = _check_png(out)
    # flagged sheets are framed in red
    assert pixels[2, pixels.shape[1] // 2, 0] > 0.6 and pixels[2, pixels.shape[1] // 2, 1] < 0.2
    # taller with more rows
    out4 = render_review_sheet(
        torch.from_numpy(image[None]),  # channel-first tensors are accepted too
        torch.from_numpy(recon[None]),
        torch.from_numpy(heatmap),
        torch.from_numpy(scores),
        tmp_path / "case4.png",
        title="case.nii.gz",
        heatmap_vmax=1.0,
        num_slices=4,
    )
    assert mpimg.imread(out4).shape[0] > pixels.shape[0]


def test_render_other_slice_dim(tmp_path):
    image, recon, heatmap, _ = _case()
    moved = [np.moveaxis(a, 2, 0) for a in (image, recon, heatmap)]
    out = render_review_sheet(
        *moved, moved[2].mean(axis=(1, 2)), tmp_path / "a.png", title="t", heatmap_vmax=1.0, slice_dim=0
    )
    _check_png(out)


def test_render_2d(tmp_path):
    image, recon, heatmap, _ = _case()
    out = render_review_sheet(
        image[None, ..., 6],
        recon[..., 6],
        heatmap[..., 6],
        np.array([heatmap[..., 6].mean()]),
        tmp_path / "slice.png",
        title="slice.png",
        info_lines=["score 0.01  |  not flagged"],
        heatmap_vmax=1.0,
        threshold=0.5,
    )
    _check_png(out, min_size=200)


def test_mismatch_raises(tmp_path):
    image, recon, heatmap, scores = _case()
    kwargs = {"title": "t", "heatmap_vmax": 1.0}
    with pytest.raises(ValueError, match="same shape"):
        render_review_sheet(image, recon[:-1], heatmap, scores, tmp_path / "x.png", **kwargs)
    with pytest.raises(ValueError, match="same shape"):
        render_review_sheet(image, recon, heatmap[..., :-1], scores, tmp_path / "x.png", **kwargs)
    with pytest.raises(ValueError, match="slice_scores"):
        render_review_sheet(image, recon, heatmap, scores[:-1], tmp_path / "x.png", **kwargs)
    with pytest.raises(ValueError, match="heatmap_vmax"):
        render_review_sheet(image, recon, heatmap, scores, tmp_path / "x.png", title="t", heatmap_vmax=0.0)
    with pytest.raises(ValueError):
        render_review_sheet(image[None, None], recon, heatmap, scores, tmp_path / "x.png", **kwargs)
    assert not any(tmp_path.iterdir())


def test_atomic_write(tmp_path):
    image, recon, heatmap, scores = _case()
    target = tmp_path / "case_review.png"
    target.write_bytes(b"old")
    render_review_sheet(image, recon, heatmap, scores, target, title="t", heatmap_vmax=1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["case_review.png"]
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not the private mode of temporary files
    # a failing save leaves the previous file and no temporary file behind
    with mock.patch("matplotlib.figure.Figure.savefig", side_effect=OSError("disk full")):
        with pytest.raises(OSError, match="disk full"):
            render_review_sheet(image, recon, heatmap, scores, target, title="t", heatmap_vmax=1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["case_review.png"]
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _item(filename: str | None = "/x/case_01.nii.gz") -> dict:
    image, recon, heatmap, _ = _case()
    meta = {} if filename is None else {"filename_or_obj": filename}
    return {
        "image": MetaTensor(torch.from_numpy(image[None]), meta=meta),
        "pred": torch.from_numpy(np.stack([heatmap, recon, np.full_like(heatmap, 0.3)])),
        "score": torch.tensor([0.123]),
        "percentile": torch.tensor(97.5),
        "flagged": torch.tensor(True),
    }


def test_review_sheetd(tmp_path):
    transform = ReviewSheetd(tmp_path / "review", heatmap_vmax=1.0, threshold=0.5, num_slices=3)
    d = transform(_item())
    assert d["review_sheet"] == str(tmp_path / "review" / "case_01_review.png")
    _check_png(Path(d["review_sheet"]))
    assert transform.info_lines(d) == ["score 0.123  |  percentile 97.5 among healthy  |  FLAGGED for review"]
    # DICOM series folder, fallback to "filename", then "image"
    assert ReviewSheetd(tmp_path)(_item("/data/series_7/"))["review_sheet"].endswith("series_7_review.png")
    item = _item(None)
    item["filename"] = "scan.dcm"
    assert ReviewSheetd(tmp_path, postfix="sheet")(item)["review_sheet"].endswith("scan_sheet.png")
    plain = _item(None)
    plain["image"] = plain["image"].as_tensor()
    del plain["score"], plain["percentile"], plain["flagged"]
    assert Path(ReviewSheetd(tmp_path)(plain)["review_sheet"]).name == "image_review.png"


def test_review_sheetd_2d_and_missing(tmp_path):
    item = _item("/x/slice_3.png")
    item["image"], item["pred"] = item["image"][..., 6], item["pred"][..., 6]
    item["flagged"] = False
    d = ReviewSheetd(tmp_path)(item)
    assert Path(d["review_sheet"]).name == "slice_3_review.png"
    with pytest.raises(KeyError):
        ReviewSheetd(tmp_path)({"image": item["image"]})
    assert "review_sheet" not in ReviewSheetd(tmp_path, allow_missing_keys=True)({"image": item["image"]})


def test_render_speed(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((64, 64, 20), dtype=np.float32)
    heatmap = np.abs(image - 0.5)
    args = (image, image * 0.9, heatmap, heatmap.mean(axis=(0, 1)))
    render_review_sheet(*args, tmp_path / "warmup.png", title="t", heatmap_vmax=0.5)
    start = time.perf_counter()
    render_review_sheet(*args, tmp_path / "timed.png", title="t", heatmap_vmax=0.5, threshold=0.3, num_slices=4)
    assert time.perf_counter() - start < 2.0  # about 0.25 s on 2 CPU cores; loose bound against flakiness
