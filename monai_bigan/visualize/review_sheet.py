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
"""
Review sheets: one PNG per scanned volume showing its most anomalous slices, each as the image, the BiGAN
reconstruction G(E(x)) and the residual heatmap over the image, on a colour scale fixed by healthy reference data, so
that a radiologist can read it without further explanation.

Figures are drawn with :py:class:`matplotlib.figure.Figure` and the Agg canvas directly, so importing this module
never switches the global matplotlib backend.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from monai.config import NdarrayOrTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_numpy

from monai_bigan.io.atomic import atomic_save_figure

__all__ = ["render_review_sheet", "select_slices", "ReviewSheetd"]


def select_slices(slice_scores: NdarrayOrTensor | Sequence[float], num_slices: int) -> list[int]:
    """
    Indices of the ``num_slices`` highest ``slice_scores``, in increasing slice order.

    Ties are broken in favor of the lower index; NaN scores rank last.

    Args:
        slice_scores: one anomaly score per slice (any shape, flattened).
        num_slices: number of slices to pick; fewer are returned when there are fewer slices.

    Returns:
        the sorted slice indices.

    Raises:
        ValueError: when ``num_slices`` < 1 or there is no score.

    Example::

        select_slices([0.1, 0.9, 0.2, 0.8], 2)  # [1, 3]
    """
    if num_slices < 1:
        raise ValueError(f"num_slices must be at least 1, got {num_slices}.")
    scores = np.asarray(convert_to_numpy(slice_scores), dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError("slice_scores is empty.")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-scores, kind="stable")
    return sorted(int(i) for i in order[:num_slices])


def _as_spatial(x: Any, name: str) -> np.ndarray:
    """``x`` as a float32 numpy array of shape (H, W) or (H, W, D), a leading singleton channel removed."""
    arr = np.asarray(convert_to_numpy(x), dtype=np.float32)
    if arr.ndim in (3, 4) and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have shape (H, W), (H, W, D), (1, H, W) or (1, H, W, D), got {tuple(np.shape(arr))}."
        )
    return arr


def _fmt(value: float) -> str:
    """A short human-readable number."""
    return f"{value:.3g}"


def _is_flagged_text(lines: Sequence[str]) -> bool:
    """Whether the info lines report a flagged scan ("FLAGGED", but not "NOT FLAGGED")."""
    text = " ".join(lines)
    return bool(re.search(r"\bFLAGGED\b", text)) and not re.search(r"\bnot\s+flagged\b", text, flags=re.IGNORECASE)


def _intensity_window(image: np.ndarray) -> tuple[float, float]:
    """The 1st-99th percentile window of ``image``, widened when degenerate."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, (1.0, 99.0)))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _shrink_to_width(fig: Figure, texts: Sequence[Any], max_width: float, min_size: float = 6.0) -> None:
    """Reduce the font size of each text that is wider than ``max_width`` inches so that it fits."""
    renderer = fig.canvas.get_renderer()
    for text in texts:
        text_width = text.get_window_extent(renderer).width / fig.dpi
        if text_width > max_width:
            text.set_fontsize(max(min_size, text.get_fontsize() * max_width / text_width))


def _save_atomic(fig: Figure, output_path: Path, dpi: int) -> None:
    atomic_save_figure(fig, output_path, dpi=dpi, pil_kwargs={"compress_level": 3})


def render_review_sheet(
    image: NdarrayOrTensor,
    reconstruction: NdarrayOrTensor,
    heatmap: NdarrayOrTensor,
    slice_scores: NdarrayOrTensor | Sequence[float],
    output_path: str | os.PathLike,
    *,
    title: str,
    info_lines: Sequence[str] = (),
    heatmap_vmax: float,
    num_slices: int = 4,
    slice_dim: int = -1,
    threshold: float | None = None,
    dpi: int = 100,
    heatmap_label: str = "residual |x - G(E(x))|",
) -> Path:
    """
    Write a review sheet PNG of the ``num_slices`` most anomalous slices of one image.

    Each row shows one slice (labelled "slice k (score s)", rows in increasing slice order) as three panels:

        - the image, in gray, windowed to its 1st-99th intensity percentiles;
        - the reconstruction G(E(x)), in gray with the same window, so that intensities compare directly;
        - the image in gray with the residual heatmap overlaid (``"inferno"``, alpha 0.6), transparent where the
          residual is below 5 % of ``heatmap_vmax`` so that the anatomy shows through. The colour scale is fixed to
          [0, ``heatmap_vmax``], a value taken from healthy reference statistics and never from the image shown, so
          that colours mean the same on every sheet. When ``threshold`` is given, the region where the residual
          reaches it is outlined in cyan (and marked on the colorbar).

    The title and ``info_lines`` head the sheet; when the info reports "FLAGGED" (and not "NOT FLAGGED") the info is
    drawn in red and the sheet framed in red, otherwise the info is drawn in green.

    Display convention: each (H, W) slice taken along ``slice_dim`` is shown as ``np.rot90(slice)`` (rotated 90
    degrees counter-clockwise, ``origin="upper"``), i.e. the second array axis runs upwards and the first from left
    to right. For arrays in RAS orientation this shows axial and coronal slices with anterior/superior at the top and
    the patient's left on the left of the screen (neurological convention), and sagittal slices with superior at the
    top and anterior on the right. Square voxels are assumed. The convention is printed in the footer of the sheet.

    The PNG is written through a temporary file in the same folder and renamed atomically, so readers never see a
    partial sheet; the parent folder is created when needed.

    Args:
        image: the input image, (H, W), (H, W, D), (1, H, W) or (1, H, W, D), numpy array or torch tensor.
        reconstruction: G(E(x)), same shape as ``image``.
        heatmap: the residual map, same shape as ``image``.
        slice_scores: one anomaly score per slice along ``slice_dim`` (length D); a single score for 2D images.
        output_path: the PNG file to write.
        title: headline of the sheet, e.g. the file name.
        info_lines: lines shown below the title, e.g. the score, its healthy percentile and the decision.
        heatmap_vmax: upper end of the heatmap colour scale (from healthy statistics), > 0.
        num_slices: number of rows (most anomalous slices); fewer when the image has fewer slices.
        slice_dim: spatial axis of the slices for 3D images (-1: last axis, axial for RAS); ignored for 2D images.
        threshold: optional residual level outlined in cyan.
        dpi: resolution of the PNG.
        heatmap_label: label of the heatmap colorbar (what the heatmap holds).

    Returns:
        the path of the written PNG.

    Raises:
        ValueError: when the shapes of image, reconstruction and heatmap differ, the number of slice scores does not
            match the number of slices, or ``heatmap_vmax``/``num_slices``/``slice_dim`` are invalid.

    Example::

        vol = np.random.rand(64, 64, 40).astype(np.float32)
        recon = vol * 0.9
        residual = np.abs(vol - recon)
        render_review_sheet(
            vol, recon, residual, residual.mean(axis=(0, 1)), "/tmp/case_01_review.png",
            title="case_01.nii.gz", info_lines=["score 0.123  |  percentile 97.5 among healthy  |  FLAGGED"],
            heatmap_vmax=0.2, threshold=0.1,
        )
    """
    img = _as_spatial(image, "image")
    rec = _as_spatial(reconstruction, "reconstruction")
    hm = _as_spatial(heatmap, "heatmap")
    if not img.shape == rec.shape == hm.shape:
        raise ValueError(
            "image, reconstruction and heatmap must have the same shape (after removing a leading singleton channel), "
            f"got {img.shape}, {rec.shape} and {hm.shape}."
        )
    if not np.isfinite(heatmap_vmax) or heatmap_vmax <= 0:
        raise ValueError(f"heatmap_vmax must be a positive finite number, got {heatmap_vmax}.")
    if num_slices < 1:
        raise ValueError(f"num_slices must be at least 1, got {num_slices}.")
    if img.ndim == 2:
        img, rec, hm = img[..., None], rec[..., None], hm[..., None]
    else:
        if not -3 <= slice_dim < 3:
            raise ValueError(f"slice_dim must be in [-3, 2] for 3D images, got {slice_dim}.")
        img, rec, hm = (np.moveaxis(a, slice_dim, -1) for a in (img, rec, hm))
    scores = np.asarray(convert_to_numpy(slice_scores), dtype=np.float64).reshape(-1)
    if scores.size != img.shape[-1]:
        raise ValueError(
            f"slice_scores has {scores.size} values but the image has {img.shape[-1]} slice(s) along slice_dim "
            f"(shape {img.shape} with slices last)."
        )
    rows = select_slices(scores, num_slices)
    flagged = _is_flagged_text(info_lines)

    # layout in inches: header (title, info, column titles), rows of square panels, footer (legend, orientation)
    panel, gap, left, cbar_gap, cbar_w, cbar_pad = 2.1, 0.1, 0.5, 0.15, 0.18, 0.85
    header = 0.55 + 0.3 * len(info_lines) + 0.3
    footer = 0.85
    width = left + 3 * panel + 2 * gap + cbar_gap + cbar_w + cbar_pad
    height = header + len(rows) * panel + (len(rows) - 1) * gap + footer
    fig = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)

    def box(x0: float, y_top: float, w: float, h: float) -> list[float]:
        """Axes rectangle in figure fractions from inches measured from the top-left corner."""
        return [x0 / width, 1.0 - (y_top + h) / height, w / width, h / height]

    headlines = [fig.text(0.5, 1.0 - 0.12 / height, title, ha="center", va="top", fontsize=14, fontweight="bold")]
    info_color = "#c00000" if flagged else "#1a7f37"
    for i, line in enumerate(info_lines):
        headlines.append(
            fig.text(
                0.5,
                1.0 - (0.55 + 0.3 * i) / height,
                line,
                ha="center",
                va="top",
                fontsize=12 if flagged else 11,
                fontweight="bold",
                color=info_color,
            )
        )
    _shrink_to_width(fig, headlines, max_width=width - 0.3)

    lo, hi = _intensity_window(img)
    cmap = colormaps["inferno"]
    norm = Normalize(vmin=0.0, vmax=float(heatmap_vmax))
    floor = 0.05 * float(heatmap_vmax)
    column_titles = ("image", "reconstruction G(E(x))", "residual over image")
    for r, k in enumerate(rows):
        y = header + r * (panel + gap)
        sl_img, sl_rec, sl_hm = (np.rot90(a[..., k]) for a in (img, rec, hm))
        h, w = sl_img.shape
        axes = [fig.add_axes(box(left + c * (panel + gap), y, panel, panel)) for c in range(3)]
        for c, ax in enumerate(axes):
            ax.imshow(sl_img if c != 1 else sl_rec, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=11)
        overlay = np.ma.masked_where(~np.isfinite(sl_hm) | (sl_hm < floor), sl_hm)
        axes[2].imshow(overlay, cmap=cmap, norm=norm, alpha=0.6, interpolation="nearest")
        if threshold is not None:
            above = np.nan_to_num(sl_hm, nan=-np.inf) >= threshold
            if above.any() and not above.all():
                axes[2].contour(above.astype(np.float32), levels=[0.5], colors="cyan", linewidths=1.2)
        for ax in axes:
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        axes[0].set_ylabel(f"slice {k} (score {_fmt(scores[k])})", fontsize=10)

    rows_height = len(rows) * panel + (len(rows) - 1) * gap
    cax = fig.add_axes(box(left + 3 * panel + 2 * gap + cbar_gap, header, cbar_w, rows_height))
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, extend="max")
    cbar.set_label(heatmap_label, fontsize=10)
    if threshold is not None and 0.0 <= threshold <= heatmap_vmax:
        cax.axhline(threshold, color="cyan", linewidth=2.0)

    legend = (
        f"Colour scale fixed to [0, {_fmt(heatmap_vmax)}] from healthy reference scans; "
        f"residuals below {_fmt(floor)} (5 %) not coloured."
    )
    if threshold is not None:
        legend += f" Cyan outline: residual \u2265 {_fmt(threshold)}."
    orientation = (
        "Slices shown rotated (np.rot90); for RAS volumes: anterior/superior at top, "
        "patient's LEFT on screen left (neurological convention)."
    )
    footnotes = [
        fig.text(0.5, 0.42 / height, legend, ha="center", va="bottom", fontsize=8, color="#333333"),
        fig.text(0.5, 0.15 / height, orientation, ha="center", va="bottom", fontsize=8, color="#333333"),
    ]
    _shrink_to_width(fig, footnotes, max_width=width - 0.3)
    if flagged:
        fig.patches.append(
            Rectangle((0.0, 0.0), 1.0, 1.0, transform=fig.transFigure, fill=False, edgecolor="#c00000", linewidth=8)
        )

    output_path = Path(output_path)
    _save_atomic(fig, output_path, dpi)
    return output_path


def _to_float(value: Any) -> float:
    """First element of a tensor, array or number as a float."""
    return float(np.asarray(convert_to_numpy(value), dtype=np.float64).reshape(-1)[0])


class ReviewSheetd(MapTransform):
    """
    Dictionary transform writing a review sheet PNG (see :py:func:`render_review_sheet`) for one item of the
    inference post-processing (not a batch).

    Reads the channel-first image ``d[image_key]`` (first channel shown) and the scorer maps ``d[pred_key]`` of
    :py:class:`monai_bigan.inferers.AnomalyScorer` (channel 0: residual heatmap, 1: reconstruction, 2: discriminator
    term), ranks the slices along ``slice_dim`` by their mean residual and writes
    ``<output_dir>/<stem>_<postfix>.png``. The stem is the input file name without ``.nii.gz``/``.nii``/``.png``/
    ``.dcm`` (and a few other image extensions), from ``d[image_key].meta["filename_or_obj"]`` (for a DICOM series,
    the folder name), else ``d["filename"]``, else ``"image"``. The info line reports ``score``, ``percentile`` and
    ``flagged`` when present. The path of the sheet is stored as a string under ``d["review_sheet"]``.

    Args:
        output_dir: folder of the sheets (created when needed).
        image_key: key of the channel-first input image, (C, H, W[, D]).
        pred_key: key of the channel-first scorer maps, (3, H, W[, D]).
        heatmap_vmax: upper end of the heatmap colour scale, from healthy statistics (e.g. ``ScoreCalibration``).
        threshold: optional residual level outlined in cyan (e.g. the calibration's ``voxel_threshold``).
        num_slices: number of slices shown.
        slice_dim: spatial axis of the slices of (C, H, W, D) arrays, counted without the channel (2: last axis,
            axial for RAS); ignored for 2D images.
        postfix: appended to the stem of the output file name.
        score_keys: keys of the volume score, its healthy percentile and the flagged decision.
        allow_missing_keys: don't raise (and write nothing) when the image or the maps are missing.
        score_threshold: optional scan-level threshold, quoted next to the flagged decision.
        foreground_threshold: image intensity (scaled to [-1, 1]) above which a voxel is anatomy.
        min_foreground: slices with a smaller foreground fraction are never chosen as the most anomalous.
        heatmap_label: colorbar label, e.g. ``"normalized residual (healthy z)"`` for normalized heatmaps.

    Example::

        from monai.data import MetaTensor

        d = {
            "image": MetaTensor(torch.rand(1, 64, 64, 40), meta={"filename_or_obj": "/data/case_01.nii.gz"}),
            "pred": torch.rand(3, 64, 64, 40),
            "score": torch.tensor([0.123]), "percentile": 97.5, "flagged": True,
        }
        d = ReviewSheetd("/tmp/review", heatmap_vmax=1.0)(d)
        d["review_sheet"]  # "/tmp/review/case_01_review.png"
    """

    extensions: tuple[str, ...] = (".nii.gz", ".nii", ".png", ".dcm", ".mha", ".mhd", ".nrrd", ".jpg", ".jpeg", ".tif")

    def __init__(
        self,
        output_dir: str | os.PathLike,
        image_key: str = "image",
        pred_key: str = "pred",
        heatmap_vmax: float = 1.0,
        threshold: float | None = None,
        num_slices: int = 4,
        slice_dim: int = 2,
        postfix: str = "review",
        score_keys: Sequence[str] = ("score", "percentile", "flagged"),
        allow_missing_keys: bool = False,
        score_threshold: float | None = None,
        foreground_threshold: float = -0.9,
        min_foreground: float = 0.05,
        heatmap_label: str = "residual |x - G(E(x))|",
    ) -> None:
        super().__init__([image_key, pred_key], allow_missing_keys)
        self.heatmap_label = heatmap_label
        if len(score_keys) != 3:
            raise ValueError(f"score_keys must name the score, percentile and flagged keys, got {score_keys}.")
        if num_slices < 1:
            raise ValueError(f"num_slices must be at least 1, got {num_slices}.")
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.pred_key = pred_key
        self.heatmap_vmax = heatmap_vmax
        self.threshold = threshold
        self.num_slices = num_slices
        self.slice_dim = slice_dim
        self.postfix = postfix
        self.score_keys = tuple(score_keys)
        self.score_threshold = score_threshold
        self.foreground_threshold = foreground_threshold
        self.min_foreground = min_foreground

    def source_name(self, d: Mapping[Hashable, Any]) -> str:
        """The input file (or DICOM folder) name of the item, or ``""`` when unknown."""
        meta = getattr(d.get(self.image_key), "meta", None) or d.get(f"{self.image_key}_meta_dict") or {}
        source = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
        if isinstance(source, (list, tuple)):
            source = source[0] if source else None
        if not source:
            source = d.get("filename")
        return Path(str(source).rstrip("/\\")).name if source else ""

    def stem(self, name: str) -> str:
        """``name`` without a known image extension, ``"image"`` when empty."""
        for ext in self.extensions:
            if name.lower().endswith(ext) and len(name) > len(ext):
                return name[: -len(ext)]
        return name or "image"

    def info_lines(self, d: Mapping[Hashable, Any]) -> list[str]:
        """The line summarizing score, healthy percentile and decision."""
        score_key, percentile_key, flagged_key = self.score_keys
        parts = []
        if d.get(score_key) is not None:
            parts.append(f"score {_fmt(_to_float(d[score_key]))}")
        if d.get(percentile_key) is not None:
            parts.append(f"percentile {_to_float(d[percentile_key]):.1f} among healthy")
        if d.get(flagged_key) is not None:
            suffix = "" if self.score_threshold is None else f" (threshold {_fmt(self.score_threshold)})"
            parts.append(("FLAGGED for review" if _to_float(d[flagged_key]) else "not flagged") + suffix)
        return ["  |  ".join(parts)] if parts else []

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d or self.pred_key not in d:
            if self.allow_missing_keys:
                return d
            missing = [k for k in (self.image_key, self.pred_key) if k not in d]
            raise KeyError(f"ReviewSheetd: key(s) {missing} not found in the data dictionary.")
        maps = torch.as_tensor(convert_to_numpy(d[self.pred_key]), dtype=torch.float32)
        if maps.ndim not in (3, 4) or maps.shape[0] < 2:
            raise ValueError(f"expected channel-first scorer maps (3, H, W[, D]), got shape {tuple(maps.shape)}.")
        heatmap, reconstruction = maps[0], maps[1]
        image = np.asarray(convert_to_numpy(d[self.image_key]), dtype=np.float32)
        if image.ndim == heatmap.ndim + 1:
            image = image[0]
        if heatmap.ndim == 2:
            slice_scores = heatmap.mean().reshape(1)
            slice_dim = -1
        else:
            if not -3 <= self.slice_dim < 3:
                raise ValueError(f"slice_dim must be in [-3, 2] for 3D images, got {self.slice_dim}.")
            slice_dim = self.slice_dim % 3
            other = tuple(i for i in range(3) if i != slice_dim)
            slice_scores = heatmap.mean(dim=other)
            # like AnomalyScored: the near-empty ends of a volume are never shown as "most anomalous"
            foreground = (torch.as_tensor(image) > self.foreground_threshold).float().mean(dim=other)
            if bool((foreground >= self.min_foreground).any()):
                slice_scores = torch.where(foreground >= self.min_foreground, slice_scores, float("nan"))
        name = self.source_name(d)
        path = render_review_sheet(
            image,
            reconstruction,
            heatmap,
            slice_scores,
            self.output_dir / f"{self.stem(name)}_{self.postfix}.png",
            title=name or "image",
            info_lines=self.info_lines(d),
            heatmap_vmax=self.heatmap_vmax,
            num_slices=self.num_slices,
            slice_dim=slice_dim,
            threshold=self.threshold,
            heatmap_label=self.heatmap_label,
        )
        d["review_sheet"] = str(path)
        return d
