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
from pathlib import Path
from unittest import mock

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    Invertd,
    LoadImaged,
    Orientationd,
    Resized,
    ScaleIntensityRangePercentilesd,
)

from monai_bigan.handlers.report import worst_axial_slice
from monai_bigan.transforms import AnomalyScored, is_foreground
from monai_bigan.utils import ScoreCalibration
from monai_bigan.visualize import (
    ReviewSheetd,
    above_threshold_regions,
    input_slice_numbers,
    render_review_sheet,
    select_slices,
)
from monai_bigan.visualize.review_sheet import _add_panel_image

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


@pytest.mark.parametrize(
    "shape, figsize, box",
    [
        ((7, 5), (2.0, 2.1), (0.13, 0.271, 1.37, 1.618)),  # box edges between pixels, non-integer scales
        ((64, 48), (2.5, 2.5), (0.2, 0.2, 2.1, 1.575)),  # the default panel: pixel centres on voxel borders
    ],
)
def test_panel_images_draw_like_imshow(shape, figsize, box):
    """A panel image (and a heatmap over it) shows what imshow(interpolation="nearest") shows in an Axes of its box."""
    rng = np.random.default_rng(0)
    data = rng.random(shape).astype(np.float32)
    data[2, 3] = np.nan
    overlay = np.ma.masked_less(data, 0.6)
    pixels = []
    for in_axes in (True, False):
        fig = Figure(figsize=figsize, dpi=100)
        FigureCanvasAgg(fig)
        if in_axes:
            ax = fig.add_axes([box[0] / figsize[0], box[1] / figsize[1], box[2] / figsize[0], box[3] / figsize[1]])
            ax.set_axis_off()
            ax.imshow(data, cmap="gray", vmin=0.1, vmax=0.9, interpolation="nearest", aspect="auto")
            ax.imshow(overlay, cmap="inferno", norm=Normalize(0, 1), alpha=0.6, interpolation="nearest", aspect="auto")
        else:
            _add_panel_image(fig, data, box, cmap="gray", vmin=0.1, vmax=0.9)
            _add_panel_image(fig, overlay, box, cmap="inferno", norm=Normalize(0, 1), alpha=0.6)
        fig.canvas.draw()
        pixels.append(np.asarray(fig.canvas.buffer_rgba()).copy())
    assert pixels[0].std() > 10  # something drawn
    np.testing.assert_array_equal(pixels[1], pixels[0])


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
    # without a calibration: no threshold to quote, no size of the healthy set
    assert transform.info_lines(d) == [
        "scan score 0.123 -> FLAGGED for review",
        "percentile 97.5 among healthy validation scans",
        f"{int((d['pred'][0] >= 0.5).sum())} voxels above the voxel threshold 0.5 in 1 region, outlined in cyan",
    ]
    assert transform.warning_lines(d) == []
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


# ---------------------------------------------------------------------------------------------------------------------
# what the sheet says: the strings drawn on the figure, captured instead of saved


def _capture(fn, *args, **kwargs):
    """Run ``fn`` (which renders one sheet) and return the figure it would have saved."""
    figures = []
    with mock.patch(
        "monai_bigan.visualize.review_sheet._save_atomic", side_effect=lambda fig, path, dpi: figures.append(fig)
    ):
        result = fn(*args, **kwargs)
    assert len(figures) == 1
    return figures[0], result


def _drawn_text(fig) -> str:
    """Every figure-level text (title, info, warnings, footer), wrapped lines joined by spaces."""
    return " ".join(t.get_text() for t in fig.texts)


def _row_labels(fig) -> list[str]:
    """The "slice n / slice score s" labels left of the rows (vertical texts), top row first."""
    return [t.get_text() for t in fig.texts if t.get_rotation() == 90 and t.get_text().startswith("slice ")]


def _overlays(fig) -> list:
    """The heatmap images over the third panel of each row, top row first."""
    return [im for im in fig.images if im.get_cmap().name == "inferno"]


def _outlines(fig) -> list:
    """The cyan outlines of the above-threshold regions, top row first."""
    return [a for a in fig.artists if isinstance(a, PathPatch) and to_hex(a.get_edgecolor()) == to_hex("cyan")]


def _shown_slices(fig) -> list[int]:
    return [int(label.split("\n")[0].split()[1]) for label in _row_labels(fig)]


def _calibration(num_healthy: int, threshold: float = 0.2, voxel_threshold: float = 0.5) -> ScoreCalibration:
    healthy = np.linspace(0.05, threshold, num_healthy).tolist()
    return ScoreCalibration(
        healthy_scores=healthy,
        target_fpr=0.05,
        threshold=threshold,
        voxel_fpr=0.001,
        voxel_threshold=voxel_threshold,
        heatmap_vmax=1.0,
        scoring={"alpha": 0.9, "top_k_slices": 2, "score_top_fraction": None},
    )


def test_select_slices_spread():
    # a plateau of neighbours around the top slice and a second peak further away
    scores = [0.1, 0.2, 0.8, 0.9, 0.85, 0.7, 0.1, 0.1, 0.6, 0.1]
    assert select_slices(scores, 2) == [3, 4]  # neighbours: nearly the same picture twice
    assert select_slices(scores, 2, min_distance=3) == [3, 8]
    assert select_slices(scores, 3, min_distance=3) == [0, 3, 8]
    # priority slices first (e.g. the top slice of each above-threshold region), still spread
    assert select_slices(scores, 2, min_distance=3, priority=[9, 8]) == [3, 9]
    assert select_slices(scores, 2, min_distance=3, priority=[0]) == [0, 3]
    # fewer than asked when every other slice is too close
    assert select_slices([1.0, 2.0, 3.0], 3, min_distance=3) == [2]
    with pytest.raises(ValueError, match="min_distance"):
        select_slices(scores, 2, min_distance=0)


def test_sheet_spreads_slices_over_regions(tmp_path):
    image, recon, heatmap, scores = _case((32, 32, 24))
    # a second, smaller lesion far from the first one
    yy, xx = np.mgrid[:32, :32]
    heatmap[..., 18][(yy - 20) ** 2 + (xx - 12) ** 2 < 4] = 1.0
    scores = heatmap.mean(axis=(0, 1))
    assert select_slices(scores, 3) == list(BLOB_SLICES)  # the three neighbours of the first lesion
    fig, _ = _capture(
        render_review_sheet,
        image,
        recon,
        heatmap,
        scores,
        tmp_path / "a.png",
        title="t",
        heatmap_vmax=1.0,
        num_slices=3,
        threshold=0.5,
    )
    shown = _shown_slices(fig)
    assert len(shown) == 3 and int(np.argmax(scores)) in shown and 18 in shown  # the top slice and both lesions
    assert min(np.diff(sorted(shown))) >= 24 // (2 * 3)
    # an explicit distance
    fig, _ = _capture(
        render_review_sheet,
        image,
        recon,
        heatmap,
        scores,
        tmp_path / "b.png",
        title="t",
        heatmap_vmax=1.0,
        num_slices=4,
        min_slice_distance=5,
    )
    assert min(np.diff(sorted(_shown_slices(fig)))) >= 5


def test_above_threshold_regions():
    hm = np.zeros((8, 8, 4), dtype=np.float32)
    hm[1:3, 1:3, 0] = 1.0
    hm[5, 5, 2] = 0.6
    hm[6, 6, 3] = 0.7  # touches the previous voxel diagonally: one region (full connectivity)
    hm[0, 7, 3] = float("nan")
    labels, sizes = above_threshold_regions(hm, 0.5)
    assert sizes.tolist() == [4, 2] and labels.max() == 2 and (labels > 0).sum() == 6
    assert above_threshold_regions(hm, 0.5, min_voxels=3)[1].tolist() == [4]
    assert above_threshold_regions(hm, 2.0)[1].size == 0


def test_overlay_colours_only_voxels_at_the_voxel_threshold(tmp_path):
    image, recon, heatmap, scores = _case()
    # a broad low-level residual over the whole disc, as in most of a real brain, plus the blob
    heatmap = heatmap + 0.3 * (recon > 0)
    kwargs = {"title": "t", "heatmap_vmax": 1.0, "num_slices": 2, "threshold": 0.5}

    def coloured(fig) -> list[np.ndarray]:
        # the heatmap slice shown over each "heatmap over image" panel; masked voxels are not coloured
        assert all(im.get_alpha() == 0.6 for im in _overlays(fig))
        return [im.get_array() for im in _overlays(fig)]

    fig, _ = _capture(render_review_sheet, image, recon, heatmap, scores, tmp_path / "a.png", **kwargs)
    overlays = coloured(fig)
    assert len(overlays) == 2
    assert any(overlay.compressed().size for overlay in overlays)  # the blob's slice
    for overlay in overlays:
        # the blob only, not the tinted disc
        assert (~np.ma.getmaskarray(overlay)).sum() == (np.asarray(overlay.data) >= 0.5).sum()
    # the outline (one per row with voxels at the threshold) encloses exactly those voxels, over the third panel
    with_blob = [im for im in _overlays(fig) if im.get_array().compressed().size]
    outlines = _outlines(fig)
    assert len(outlines) == len(with_blob) >= 1
    for outline, im in zip(outlines, with_blob):
        above = np.asarray(im.get_array().data) >= 0.5
        rows, cols = np.indices(above.shape)
        inside = outline.get_path().contains_points(np.stack([cols.ravel(), rows.ravel()], axis=1))
        assert np.array_equal(inside.reshape(above.shape), above)
        # voxel coordinates to the figure: the voxel corners land on the corners of the overlay's box
        left, bottom, width, height = (v * fig.dpi for v in im.box)
        top_left, bottom_right = outline.get_transform().transform([(-0.5, -0.5), np.array(above.shape[::-1]) - 0.5])
        np.testing.assert_allclose([*top_left, *bottom_right], [left, bottom + height, left + width, bottom])
    assert "Coloured: heatmap \u2265 0.5 (the voxel threshold" in _drawn_text(fig)
    # a documented fraction of the threshold
    fig, _ = _capture(
        render_review_sheet, image, recon, heatmap, scores, tmp_path / "b.png", overlay_threshold=0.1, **kwargs
    )
    assert all(o.compressed().min() >= 0.1 and o.compressed().size > 100 for o in coloured(fig))
    assert "0.2 \u00d7 the voxel threshold" in _drawn_text(fig)
    # ReviewSheetd: from overlay_fraction x the calibration's voxel threshold
    item = _item()
    item["pred"][0] += 0.3 * torch.from_numpy(recon > 0)
    fig, _ = _capture(ReviewSheetd(tmp_path, calibration=_calibration(30), num_slices=2), item)
    assert all(o.compressed().min() >= 0.5 for o in coloured(fig) if o.compressed().size)
    fig, _ = _capture(ReviewSheetd(tmp_path, calibration=_calibration(30), num_slices=2, overlay_fraction=0.5), item)
    assert all(o.compressed().min() >= 0.25 and o.compressed().size > 100 for o in coloured(fig))
    # no threshold at all: half of the colour scale, said so
    fig, _ = _capture(render_review_sheet, image, recon, heatmap, scores, tmp_path / "c.png", title="t", heatmap_vmax=1)
    assert all(o.compressed().min() >= 0.5 for o in coloured(fig) if o.compressed().size)
    assert "no voxel threshold given" in _drawn_text(fig)


def test_flag_explanation(tmp_path):
    calibration = _calibration(6)  # healthy scores 0.05 ... 0.2, threshold 0.2
    transform = ReviewSheetd(tmp_path, calibration=calibration, num_slices=2)
    item = _item()
    item["score"], item["percentile"], item["flagged"] = torch.tensor([0.123]), 50.0, False
    lines = transform.info_lines(item)
    assert lines[0] == (
        "scan score 0.123 vs flag threshold 0.2 (the healthy validation scans' 95th percentile, target FPR 5 %) "
        "-> not flagged"
    )
    assert lines[1] == "percentile 50 of 6 healthy validation scans (scores at or above 3 of the 6)"
    item["score"], item["percentile"], item["flagged"] = torch.tensor([0.31]), 100.0, True
    fig, d = _capture(transform, item)
    text = _drawn_text(fig)
    assert (
        "scan score 0.31 vs flag threshold 0.2 (the healthy validation scans' 95th percentile, target FPR 5 %) "
        "-> FLAGGED for review" in text
    )
    assert "percentile 100 of 6 healthy validation scans" in text
    assert d["review_sheet"] == str(tmp_path / "case_01_review.png")
    # the F1-optimal threshold is explained as such
    f1 = _calibration(30)
    f1.threshold_f1, f1.num_anomalous = 0.15, 4
    line = ReviewSheetd(tmp_path, calibration=f1, threshold_mode="f1").info_lines(item)[0]
    assert line.startswith("scan score 0.31 vs flag threshold 0.15 (the F1-optimal threshold on the validation")
    assert "30 healthy, 4 labelled anomalous" in line and line.endswith("-> FLAGGED for review")


def test_slice_scores_are_labelled_and_explained(tmp_path):
    item = _item()
    # the per-slice score map of AnomalyScored (here with top_k 2, as the calibration records)
    item.update(AnomalyScored("pred", alpha=0.9, slice_dim=2, top_k=2, image_key=None)(item))
    fig, _ = _capture(ReviewSheetd(tmp_path, calibration=_calibration(30), num_slices=3), item)
    labels = _row_labels(fig)
    slice_scores = item["slice_map"][0, 0, 0].numpy()
    assert len(labels) == 3
    columns = ("image", "reconstruction G(E(x))", "heatmap over image")
    assert [t.get_text() for t in fig.texts if t.get_text() in columns] == list(columns)  # above the first row
    for label in labels:
        k = int(label.split()[1])
        assert label == f"slice {k}\nslice score {slice_scores[k]:.3g}"
    text = _drawn_text(fig)
    assert "Slice score: the anomaly score of that slice alone" in text
    assert "the scan score is the mean of the 2 highest slice scores" in text  # checked against item["score"]
    assert "only the scan score decides the flag" in text
    # without the map: the mean heatmap of the slice, said so
    del item["slice_map"]
    fig, _ = _capture(ReviewSheetd(tmp_path, num_slices=3), item)
    assert "Slice score: the mean heatmap value of that slice" in _drawn_text(fig)


def test_regions_below_flag_threshold_are_reported(tmp_path):
    transform = ReviewSheetd(tmp_path, calibration=_calibration(30), num_slices=2)
    item = _item()
    blob_voxels = int((item["pred"][0] >= 0.5).sum())
    item["score"], item["percentile"], item["flagged"] = torch.tensor([0.1]), 40.0, False
    note = (
        f"{blob_voxels} voxels above the voxel threshold 0.5 in 1 region, but the scan score is below the flag "
        "threshold: review the outlined regions"
    )
    assert transform.warning_lines(item) == [note]
    fig, _ = _capture(transform, item)
    assert note in _drawn_text(fig)
    # flagged: the regions are counted, without the warning
    item["score"], item["flagged"] = torch.tensor([0.3]), True
    assert transform.warning_lines(item) == []
    assert f"{blob_voxels} voxels above the voxel threshold 0.5 in 1 region, outlined in cyan" in transform.info_lines(
        item
    )
    # nothing above the voxel threshold: no warning either
    item["pred"][0] = item["pred"][0].clamp(max=0.4)
    item["flagged"] = False
    assert transform.warning_lines(item) == []
    assert transform.info_lines(item)[-1] == "no voxel above the voxel threshold 0.5"


def test_small_calibration_warning(tmp_path):
    item = _item()
    item["percentile"] = 100.0
    small = ReviewSheetd(tmp_path, calibration=_calibration(6), num_slices=2)
    warning = "percentiles from only 6 healthy scans: coarse (steps of 16.7 points)"
    assert small.warning_lines(item)[0].startswith(warning)
    assert "the flag threshold is the highest of the 6 healthy scores" in small.warning_lines(item)[0]
    fig, _ = _capture(small, item)
    assert warning in _drawn_text(fig)
    large = ReviewSheetd(tmp_path, calibration=_calibration(20), num_slices=2)
    assert not any("healthy scans" in line for line in large.warning_lines(item))
    assert "percentile 100 of 20 healthy validation scans" in large.info_lines(item)[1]
    assert not any("healthy scans" in line for line in ReviewSheetd(tmp_path, min_healthy_scans=50).warning_lines(item))


# ---------------------------------------------------------------------------------------------------------------------
# slice numbers in the input's own numbering

GRID = (24, 20, 16)  # the model grid of the test: RAS, cropped to the foreground, resized


def _preprocessing() -> Compose:
    """The bundle's scan transforms (bundles/bigan/common.json), on a small grid."""
    return Compose(
        [
            LoadImaged("image", image_only=True, ensure_channel_first=True),
            Orientationd("image", axcodes="RAS", labels=None),
            ScaleIntensityRangePercentilesd("image", 0.0, 99.5, -1.0, 1.0, clip=True),
            CropForegroundd("image", "image", select_fn=is_foreground, margin=1, allow_smaller=True),
            Resized("image", GRID, mode="trilinear", anti_aliasing=True),
            EnsureTyped("image", dtype="float32"),
        ]
    )


@pytest.fixture
def oblique_scan(tmp_path):
    """A NIfTI not in RAS: array axes point inferior (2.5 mm), left (1.2 mm) and posterior (1 mm); padded by zeros."""
    shape = (30, 40, 36)
    affine = np.array([[0, -1.2, 0, 10], [0, 0, -1.0, 20], [-2.5, 0, 0, 50], [0, 0, 0, 1.0]])
    assert nib.aff2axcodes(affine) == ("I", "L", "P")
    volume = np.zeros(shape, np.float32)
    volume[4:25, 6:33, 5:30] = 1.0 + np.random.default_rng(0).random((21, 27, 25)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "scan_lip.nii.gz")
    preprocessing = _preprocessing()
    item = preprocessing({"image": str(tmp_path / "scan_lip.nii.gz")})
    assert [op["class"] for op in item["image"].applied_operations] == ["Orientation", "CropForeground", "Resize"]
    return preprocessing, item


def _inverted_worst_slice(preprocessing, item, slice_map) -> int:
    """What scores.csv reports: worst_axial_slice of the slice map inverted to the input's geometry."""
    d = dict(item)
    d["slice_map"] = MetaTensor(slice_map, meta=item["image"].meta, applied_operations=item["image"].applied_operations)
    inverted = Invertd("slice_map", transform=preprocessing, orig_keys="image", nearest_interp=False)(d)
    assert tuple(inverted["slice_map"].shape[1:]) == (30, 40, 36)
    return worst_axial_slice(inverted["slice_map"])


def test_input_slice_numbers_match_the_report(oblique_scan):
    preprocessing, item = oblique_scan
    located = input_slice_numbers(item["image"], 2)
    assert located.axis == 0 and located.direction == "inferior"  # RAS superior = the input's axis 0, reversed
    assert len(located.numbers) == GRID[2]
    for k in range(GRID[2]):
        one_hot = torch.zeros((1, *GRID))
        one_hot[..., k] = 1.0
        assert located.numbers[k] == _inverted_worst_slice(preprocessing, item, one_hot), k
    assert located.numbers[0] > located.numbers[-1]  # flipped, cropped and resized: not the model-grid index
    # not a loaded MetaTensor: unknown
    assert input_slice_numbers(item["image"].as_tensor(), 2) is None
    assert input_slice_numbers(MetaTensor(torch.zeros(1, 4, 4, 4)), 2) is None


def test_review_sheetd_numbers_slices_like_scores_csv(oblique_scan, tmp_path):
    preprocessing, item = oblique_scan
    image = item["image"]
    rng = np.random.default_rng(1)
    heatmap = 0.05 * rng.random(GRID).astype(np.float32)
    heatmap[8:14, 6:12, 4:6] = 1.0  # the lesion, in model-grid slices 4 and 5
    heatmap[8:14, 6:12, 4] += 0.5  # slice 4 the worst
    recon = image[0].numpy()
    item["pred"] = MetaTensor(torch.from_numpy(np.stack([heatmap, recon, np.zeros_like(heatmap)])), meta=image.meta)
    item.update(AnomalyScored("pred", slice_dim=2, top_k=3)(item))
    assert int(item["worst_slice"]) == 4
    expected = _inverted_worst_slice(preprocessing, item, item["slice_map"].as_tensor())
    assert expected != 4
    fig, d = _capture(ReviewSheetd(tmp_path, threshold=0.5, num_slices=3), item)
    assert d["review_sheet"].endswith("scan_lip_review.png")
    top = [label for label in _row_labels(fig) if label.startswith(f"slice {expected}\n")]
    assert len(top) == 1  # the worst slice of scores.csv, under its own number
    slice_scores = item["slice_map"][0, 0, 0].numpy()
    assert top[0] == f"slice {expected}\nslice score {slice_scores.max():.3g}"
    assert "the input file's own 0-based index along its array axis 0, increasing towards inferior" in (
        _drawn_text(fig)
    )
    # a plain tensor has no geometry: the model grid's index, said so
    item["image"] = image.as_tensor()
    fig, _ = _capture(ReviewSheetd(tmp_path, threshold=0.5, num_slices=3), item)
    assert any(label.startswith("slice 4\n") for label in _row_labels(fig))
    assert "Slice numbers: index on the model grid" in _drawn_text(fig)


@pytest.mark.parametrize("stem, title", [("site_a/scan", "site_a/scan.nii.gz"), ("scan", "scan.nii.gz")])
def test_sheet_title_names_the_folder_of_repeated_file_names(tmp_path, stem, title):
    """In an archive, outputs are named by relative path: the sheet's title says which ``scan.nii.gz`` it shows."""

    class Batch:
        def stem(self, source):
            assert source == "/archive/site_a/scan.nii.gz"
            return stem

    layout = mock.Mock(batch=Batch())
    transform = ReviewSheetd(layout=layout)
    image = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": "/archive/site_a/scan.nii.gz"})
    assert transform.title({"image": image}) == title
    assert ReviewSheetd(tmp_path).title({"image": image}) == "scan.nii.gz"
