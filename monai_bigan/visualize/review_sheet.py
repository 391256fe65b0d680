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
that a radiologist can read it without further explanation: the sheet states how the flag was decided, how the scan
ranks among the healthy validation scans (and how coarse that ranking is), how many voxels exceed the voxel threshold,
and numbers its slices as the input file does.

Figures are drawn with :py:class:`matplotlib.figure.Figure` and the Agg canvas directly, so importing this module
never switches the global matplotlib backend. The slice panels are figure images (no Axes each: an Axes' tick and grid
artists cost most of a sheet's time), drawn pixel for pixel as ``imshow(interpolation="nearest")`` would.
"""

from __future__ import annotations

import functools
import os
import re
import textwrap
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from monai.config import NdarrayOrTensor
from monai.data import FolderLayoutBase
from monai.transforms import MapTransform
from monai.utils import convert_to_numpy, optional_import

from monai_bigan.data.outputs import IMAGE_EXTENSIONS, output_stem
from monai_bigan.io.atomic import atomic_save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "render_review_sheet",
    "select_slices",
    "above_threshold_regions",
    "input_slice_numbers",
    "InputSlices",
    "ReviewSheetd",
]

#: share of ``heatmap_vmax`` below which nothing is coloured when no voxel threshold is known
FALLBACK_OVERLAY_FRACTION = 0.5

_DIRECTIONS = {"S": "superior", "I": "inferior", "L": "left", "R": "right", "A": "anterior", "P": "posterior"}


def select_slices(
    slice_scores: NdarrayOrTensor | Sequence[float],
    num_slices: int,
    min_distance: int = 1,
    priority: Sequence[int] = (),
) -> list[int]:
    """
    Indices of up to ``num_slices`` slices with high ``slice_scores``, at least ``min_distance`` slices apart, in
    increasing slice order.

    The ``priority`` slices are taken first, in their order (e.g. the top slice of each above-threshold region); then
    slices are taken by decreasing score. A slice closer than ``min_distance`` to one already taken is skipped, so
    that with ``min_distance`` > 1 the picks spread over different regions instead of showing neighbours of the top
    slice; fewer than ``num_slices`` are returned when no slice is left outside these neighbourhoods.
    ``min_distance=1`` takes the ``num_slices`` highest scores. Ties are broken in favor of the lower index; NaN
    scores rank last.

    Args:
        slice_scores: one anomaly score per slice (any shape, flattened).
        num_slices: number of slices to pick; fewer are returned when there are fewer slices.
        min_distance: smallest index difference between two picked slices, >= 1.
        priority: slice indices to pick before the others (out-of-range ones are ignored).

    Returns:
        the sorted slice indices.

    Raises:
        ValueError: when ``num_slices`` or ``min_distance`` < 1 or there is no score.

    Example::

        select_slices([0.1, 0.9, 0.2, 0.8], 2)  # [1, 3]
        select_slices([0.1, 0.9, 0.85, 0.8, 0.2, 0.3], 2, min_distance=3)  # [1, 5]: 2 and 3 are too close to 1
    """
    if num_slices < 1:
        raise ValueError(f"num_slices must be at least 1, got {num_slices}.")
    if min_distance < 1:
        raise ValueError(f"min_distance must be at least 1, got {min_distance}.")
    scores = np.asarray(convert_to_numpy(slice_scores), dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError("slice_scores is empty.")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-scores, kind="stable")
    candidates = [int(i) for i in priority if 0 <= int(i) < scores.size] + [int(i) for i in order]
    picked: list[int] = []
    for i in candidates:
        if len(picked) == num_slices:
            break
        if all(abs(i - j) >= min_distance for j in picked):
            picked.append(i)
    return sorted(picked)


def above_threshold_regions(
    heatmap: NdarrayOrTensor, threshold: float, min_voxels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """
    The connected regions of voxels at or above ``threshold`` (full connectivity: 26-connected in 3D, 8 in 2D).

    Args:
        heatmap: the heatmap, (H, W[, D]); NaN voxels are never above the threshold.
        threshold: the voxel threshold (the level of the anomaly mask and of the cyan outlines).
        min_voxels: smaller regions are dropped (their voxels get label 0).

    Returns:
        ``(labels, sizes)``: an int array of the heatmap's shape, 0 outside the regions and ``i + 1`` in the ``i``-th
        region, regions numbered by decreasing size; and the number of voxels of each region.

    Example::

        hm = np.zeros((8, 8)); hm[1:3, 1:3] = 1.0; hm[6, 6] = 1.0
        labels, sizes = above_threshold_regions(hm, 0.5)  # sizes [4, 1]
    """
    ndimage, _ = optional_import("scipy.ndimage")
    hm = np.asarray(convert_to_numpy(heatmap), dtype=np.float32)
    above = np.nan_to_num(hm, nan=-np.inf) >= threshold
    if not above.any():
        return np.zeros(hm.shape, dtype=np.int32), np.zeros(0, dtype=np.int64)
    labels, num = ndimage.label(above, structure=ndimage.generate_binary_structure(hm.ndim, hm.ndim))
    sizes = np.bincount(labels.reshape(-1), minlength=num + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    order = order[sizes[order] >= max(1, int(min_voxels))]
    relabel = np.zeros(num + 1, dtype=np.int32)
    relabel[order + 1] = np.arange(1, order.size + 1, dtype=np.int32)
    return relabel[labels], sizes[order].astype(np.int64)


class InputSlices(NamedTuple):
    """Where the slices of the model grid lie in the input file (see :py:func:`input_slice_numbers`)."""

    #: for each model-grid slice along ``slice_dim``, the input's own 0-based slice index
    numbers: np.ndarray
    #: the input's array axis (spatial, without the channel) those indices run along
    axis: int
    #: the anatomical direction the input's index increases towards, e.g. ``"superior"`` ("" when unknown)
    direction: str


def input_slice_numbers(image: Any, slice_dim: int) -> InputSlices | None:
    """
    The input file's own slice index of every model-grid slice along ``slice_dim``.

    The preprocessed image is a MONAI ``MetaTensor`` whose ``affine`` maps its (model-grid) voxels to world
    coordinates after every spatial transform (orientation, crop, resize, ...), while ``meta["original_affine"]`` is
    the affine of the file as loaded. The centre voxel of each model-grid slice is mapped through
    ``inv(original_affine) @ affine`` to the input's voxel coordinates; the input axis is the one most parallel to
    ``slice_dim``, and the index is rounded to the nearest input slice (clipped to the input's ``spatial_shape`` when
    recorded). This is the slice ``Invertd`` brings a model-grid slice back to, so the number of the most anomalous
    slice equals ``worst_slice`` of :py:func:`monai_bigan.handlers.report.worst_axial_slice` on the inverted
    ``slice_map``.

    Args:
        image: the channel-first preprocessed image, (C, H, W, D), a ``MetaTensor``.
        slice_dim: the spatial axis (without the channel) of the slices, 0-2.

    Returns:
        an :py:class:`InputSlices`, or None when ``image`` is not a 3D ``MetaTensor`` with both affines.
    """
    affine = getattr(image, "affine", None)
    meta = getattr(image, "meta", None)
    if affine is None or not isinstance(meta, Mapping) or meta.get("original_affine") is None:
        return None
    if len(image.shape) != 4 or not 0 <= slice_dim < 3:
        return None
    try:
        model = np.asarray(convert_to_numpy(affine), dtype=np.float64)
        original = np.asarray(convert_to_numpy(meta["original_affine"]), dtype=np.float64)
        if model.shape != (4, 4) or original.shape != (4, 4):
            return None
        to_input = np.linalg.inv(original) @ model
    except (ValueError, TypeError, np.linalg.LinAlgError):
        return None
    shape = np.asarray(image.shape[1:], dtype=np.float64)
    num = int(shape[slice_dim])
    points = np.tile(np.append((shape - 1.0) / 2.0, 1.0), (num, 1))
    points[:, slice_dim] = np.arange(num)
    coords = points @ to_input.T
    axis = int(np.argmax(np.abs(to_input[:3, slice_dim])))
    numbers = np.floor(coords[:, axis] + 0.5).astype(np.int64)
    spatial_shape = meta.get("spatial_shape")
    if spatial_shape is not None and np.size(spatial_shape) == 3:
        numbers = np.clip(numbers, 0, int(np.asarray(convert_to_numpy(spatial_shape)).reshape(-1)[axis]) - 1)
    direction = ""
    nib, has_nib = optional_import("nibabel")
    if has_nib:
        codes = nib.aff2axcodes(original)
        direction = _DIRECTIONS.get(str(codes[axis]), "")
    return InputSlices(numbers, axis, direction)


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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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


def _wrap(text: str, width_in: float, fontsize: float, bold: bool = False) -> list[str]:
    """``text`` wrapped into lines that fit about ``width_in`` inches at ``fontsize`` points."""
    char_width = fontsize / 72.0 * (0.62 if bold else 0.55)
    return textwrap.wrap(text, width=max(20, int(width_in / char_width))) or [""]


def _shrink_to_width(fig: Figure, texts: Sequence[Any], max_width: float, min_size: float = 6.0) -> None:
    """Reduce the font size of each text that is wider than ``max_width`` inches so that it fits."""
    renderer = fig.canvas.get_renderer()
    for text in texts:
        text_width = text.get_window_extent(renderer).width / fig.dpi
        if text_width > max_width:
            text.set_fontsize(max(min_size, text.get_fontsize() * max_width / text_width))


def _save_atomic(fig: Figure, output_path: Path, dpi: int) -> None:
    atomic_save_figure(fig, output_path, dpi=dpi, pil_kwargs={"compress_level": 3})


def _region_slices(heatmap: np.ndarray, threshold: float, min_voxels: int) -> list[int]:
    """For each above-threshold region of a (H, W, D) heatmap, largest first, the slice (last axis) holding most of it."""
    labels, sizes = above_threshold_regions(heatmap, threshold, min_voxels)
    if sizes.size == 0:
        return []
    depth = heatmap.shape[-1]
    inside = np.flatnonzero(labels)  # only the regions' voxels; slices on the last axis: flat index % depth
    pairs = (labels.reshape(-1)[inside].astype(np.int64) - 1) * depth + inside % depth  # (region, slice) pairs
    per_slice = np.bincount(pairs, minlength=sizes.size * depth).reshape(sizes.size, depth)
    return [int(i) for i in np.argmax(per_slice, axis=1)]


#: the text properties of an Axes title (``set_title(fontsize=11)``) and y label (``set_ylabel(fontsize=10)``)
_COLUMN_TITLE = {"ha": "center", "va": "baseline", "fontsize": 11}
_ROW_LABEL = {"ha": "center", "va": "bottom", "rotation": 90, "rotation_mode": "anchor", "fontsize": 10}


def _nearest_indices(num_voxels: int, start: float, stop: float, first_pixel: int, num_pixels: int) -> np.ndarray:
    """
    For each of ``num_pixels`` pixels from ``first_pixel``, the voxel under its centre when ``num_voxels`` voxels span
    the pixel coordinates [``start``, ``stop``) (nearest neighbour, as ``imshow(interpolation="nearest")`` draws).
    """
    centres = first_pixel + np.arange(num_pixels) + 0.5
    position = (centres - start) * (num_voxels / (stop - start))
    # a centre on a voxel border takes the lower voxel, like matplotlib's (Agg's) resampling
    return np.clip(np.floor(position - 1e-6).astype(np.intp), 0, num_voxels - 1)


def _outline_path(mask: np.ndarray) -> Any:
    """
    The outline of the ``True`` voxels of a 2D mask as ``Axes.contour(mask, levels=[0.5])`` draws it: one compound
    matplotlib path in voxel coordinates (x along the columns, y along the rows, voxel centres at integers).
    """
    contourpy, _ = optional_import("contourpy")
    MplPath, _ = optional_import("matplotlib.path", name="Path")
    generator = contourpy.contour_generator(
        z=mask.astype(np.float64), name="mpl2014", corner_mask=True, line_type=contourpy.LineType.SeparateCode
    )
    points, codes = generator.lines(0.5)
    if not points:
        return MplPath(np.zeros((0, 2)))
    return MplPath(np.concatenate(points), np.concatenate(codes))


@functools.cache
def _panel_image_type() -> type:
    """The class of :py:func:`_add_panel_image`'s artists (created on first use, with matplotlib)."""
    FigureImage, _ = optional_import("matplotlib.image", name="FigureImage")
    IdentityTransform, _ = optional_import("matplotlib.transforms", name="IdentityTransform")

    class PanelImage(FigureImage):  # type: ignore[misc, valid-type]
        """
        A figure image filling a box given in inches, its array (first row at the top) colour-mapped at its own
        resolution and then enlarged by nearest neighbour to the box's pixels: what ``imshow(interpolation="nearest")``
        shows in an Axes of that box, without the Axes.
        """

        def __init__(self, fig: Figure, box: tuple[float, float, float, float], **kwargs: Any) -> None:
            super().__init__(fig, origin="upper", **kwargs)
            #: (left, bottom, width, height) in inches from the figure's bottom-left corner
            self.box = box

        def make_image(self, renderer: Any, magnification: float = 1.0, unsampled: bool = False) -> tuple:
            data = self.get_array()
            left, bottom, width, height = (v * renderer.dpi * magnification for v in self.box)
            # the pixels covered, rounded as matplotlib rounds an Axes image's extent
            x0, x1 = int(np.floor(left + 0.5)), int(np.floor(left + width + 0.5 + 1e-8))
            y0, y1 = int(np.ceil(bottom - 0.5 - 1e-8)), int(np.ceil(bottom + height - 0.5))
            if x1 <= x0 or y1 <= y0:
                return None, 0, 0, None
            # the first row at the top; the renderer takes the bottom row first
            rows = _nearest_indices(data.shape[0], -(bottom + height), -bottom, -y1, y1 - y0)[::-1]
            cols = _nearest_indices(data.shape[1], left, left + width, x0, x1 - x0)
            rgba = np.ascontiguousarray(self.to_rgba(data, alpha=self.get_alpha(), bytes=True))
            # one 32-bit word per RGBA pixel: a quarter of the elements to gather
            pixels = rgba.view(np.uint32)[..., 0].take(rows, axis=0).take(cols, axis=1)
            return (
                pixels.view(np.uint8).reshape(*pixels.shape, 4),
                x0 / magnification,
                y0 / magnification,
                IdentityTransform(),
            )

    return PanelImage


def _add_panel_image(
    fig: Figure, data: np.ndarray, box: tuple[float, float, float, float], alpha: float | None = None, **kwargs: Any
) -> Any:
    """
    Show the 2D ``data`` (first row at the top) in ``box`` = (left, bottom, width, height) inches of ``fig``, as
    ``imshow(data, interpolation="nearest", alpha=alpha, **kwargs)`` in an Axes of that box with the axis off would
    (``kwargs``: ``cmap`` and ``norm`` or ``vmin``/``vmax``). The artist is one of ``fig.images``.
    """
    norm = kwargs.pop("norm", None)
    vmin, vmax = kwargs.pop("vmin", None), kwargs.pop("vmax", None)
    image = _panel_image_type()(fig, box, norm=norm, **kwargs)
    image.set_array(data)
    image.set_alpha(alpha)
    if norm is None:
        image.set_clim(vmin, vmax)
    fig.images.append(image)
    return image


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
    flagged: bool | None = None,
    warning_lines: Sequence[str] = (),
    footnote_lines: Sequence[str] = (),
    slice_numbers: Sequence[int] | NdarrayOrTensor | None = None,
    slice_score_label: str = "slice score",
    overlay_threshold: float | None = None,
    min_slice_distance: int | None = None,
    min_region_voxels: int = 1,
) -> Path:
    """
    Write a review sheet PNG of the most anomalous slices of one image.

    Slices are chosen by :py:func:`select_slices`, spread over the image: first the slice with the highest score,
    then (with ``threshold``) the slice holding most of each region above the threshold, largest region first, then
    the remaining slices by decreasing score, never two closer than ``min_slice_distance`` slices. Each row shows
    one slice (labelled "slice n" and its score, ``slice_score_label``; rows in increasing slice number) as three
    panels:

        - the image, in gray, windowed to its 1st-99th intensity percentiles;
        - the reconstruction G(E(x)), in gray with the same window, so that intensities compare directly;
        - the image in gray with the heatmap overlaid (``"inferno"``, alpha 0.6) only where it reaches
          ``overlay_threshold`` (by default the voxel ``threshold``; without one, half of ``heatmap_vmax``), so that
          only meaningful deviations are tinted and the anatomy shows through elsewhere. The colour scale is fixed to
          [0, ``heatmap_vmax``], a value taken from healthy reference statistics and never from the image shown, so
          that colours mean the same on every sheet; the part of the colorbar below ``overlay_threshold`` is hatched.
          When ``threshold`` is given, the region where the heatmap reaches it is outlined in cyan (and marked on the
          colorbar).

    The title and ``info_lines`` head the sheet (the first info line in bold), then ``warning_lines`` in bold
    orange on a yellow band. The first info line and the frame are red when the scan is ``flagged``, the first line
    is green when it is not (when ``flagged`` is None, it is read from the info lines: "FLAGGED" but not "not
    flagged"). The footer holds the colour legend, ``footnote_lines`` and the display convention. Long lines are
    wrapped.

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
        info_lines: lines shown below the title, e.g. the decision, the score and its healthy percentile.
        heatmap_vmax: upper end of the heatmap colour scale (from healthy statistics), > 0.
        num_slices: number of rows (most anomalous slices); fewer when the image has fewer slices.
        slice_dim: spatial axis of the slices for 3D images (-1: last axis, axial for RAS); ignored for 2D images.
        threshold: optional voxel threshold, outlined in cyan.
        dpi: resolution of the PNG.
        heatmap_label: label of the heatmap colorbar (what the heatmap holds).
        flagged: whether the scan was flagged (red first line and frame), None to read it from ``info_lines``.
        warning_lines: cautions drawn prominently below the info lines.
        footnote_lines: explanations drawn in the footer, e.g. what the slice numbers and scores are.
        slice_numbers: the number shown for each slice along ``slice_dim`` (length D), e.g. the input file's own
            slice index (:py:func:`input_slice_numbers`); by default the array index.
        slice_score_label: what ``slice_scores`` are, shown before each slice's score.
        overlay_threshold: heatmap level from which voxels are coloured; default ``threshold``, else
            ``FALLBACK_OVERLAY_FRACTION * heatmap_vmax``.
        min_slice_distance: smallest index difference between two slices shown; default
            ``max(1, D // (2 * num_slices))``, e.g. 6 for 48 slices and 4 rows.
        min_region_voxels: above-threshold regions smaller than this get no row of their own.

    Returns:
        the path of the written PNG.

    Raises:
        ValueError: when the shapes of image, reconstruction and heatmap differ, the number of slice scores or slice
            numbers does not match the number of slices, or ``heatmap_vmax``/``num_slices``/``slice_dim`` are invalid.

    Example::

        vol = np.random.rand(64, 64, 40).astype(np.float32)
        recon = vol * 0.9
        residual = np.abs(vol - recon)
        render_review_sheet(
            vol, recon, residual, residual.mean(axis=(0, 1)), "/tmp/case_01_review.png",
            title="case_01.nii.gz", info_lines=["scan score 0.123 vs flag threshold 0.11 -> FLAGGED for review"],
            heatmap_vmax=0.2, threshold=0.1, flagged=True,
        )
    """
    # matplotlib is imported on first use, not with this module
    colormaps, _ = optional_import("matplotlib", name="colormaps")
    FigureCanvasAgg, _ = optional_import("matplotlib.backends.backend_agg", name="FigureCanvasAgg")
    ScalarMappable, _ = optional_import("matplotlib.cm", name="ScalarMappable")
    Normalize, _ = optional_import("matplotlib.colors", name="Normalize")
    Figure, _ = optional_import("matplotlib.figure", name="Figure")
    Rectangle, _ = optional_import("matplotlib.patches", name="Rectangle")
    PathPatch, _ = optional_import("matplotlib.patches", name="PathPatch")
    PathType, _ = optional_import("matplotlib.path", name="Path")
    Affine2D, _ = optional_import("matplotlib.transforms", name="Affine2D")
    rc_params, _ = optional_import("matplotlib", name="rcParams")
    img = _as_spatial(image, "image")
    rec = _as_spatial(reconstruction, "reconstruction")
    hm = _as_spatial(heatmap, "heatmap")
    if not img.shape == rec.shape == hm.shape:
        raise ValueError(
            "image, reconstruction and heatmap must have the same shape (after removing a leading singleton channel), "
            f"got {img.shape}, {rec.shape} and {hm.shape}."
        )
    if heatmap_vmax is None or not np.isfinite(heatmap_vmax) or heatmap_vmax <= 0:
        raise ValueError(f"heatmap_vmax must be a positive finite number, got {heatmap_vmax}.")
    if num_slices < 1:
        raise ValueError(f"num_slices must be at least 1, got {num_slices}.")
    is_2d = img.ndim == 2
    if is_2d:
        img, rec, hm = img[..., None], rec[..., None], hm[..., None]
    else:
        if not -3 <= slice_dim < 3:
            raise ValueError(f"slice_dim must be in [-3, 2] for 3D images, got {slice_dim}.")
        img, rec, hm = (np.moveaxis(a, slice_dim, -1) for a in (img, rec, hm))
    depth = img.shape[-1]
    scores = np.asarray(convert_to_numpy(slice_scores), dtype=np.float64).reshape(-1)
    if scores.size != depth:
        raise ValueError(
            f"slice_scores has {scores.size} values but the image has {depth} slice(s) along slice_dim "
            f"(shape {img.shape} with slices last)."
        )
    numbers = np.arange(depth) if slice_numbers is None else np.asarray(convert_to_numpy(slice_numbers)).reshape(-1)
    if numbers.size != depth:
        raise ValueError(f"slice_numbers has {numbers.size} values but the image has {depth} slice(s).")
    if min_slice_distance is None:
        min_slice_distance = max(1, depth // (2 * num_slices))
    ranked = np.where(np.isnan(scores), -np.inf, scores)
    priority = [int(np.argmax(ranked))] if np.isfinite(ranked).any() else []
    if threshold is not None:
        priority += _region_slices(hm, threshold, min_region_voxels)
    rows = select_slices(scores, num_slices, min_distance=max(1, int(min_slice_distance)), priority=priority)
    rows = sorted(rows, key=lambda k: (int(numbers[k]), k))
    if flagged is None:
        flagged = _is_flagged_text(info_lines)
    floor = float(overlay_threshold) if overlay_threshold is not None else None
    if floor is None:
        floor = float(threshold) if threshold is not None else FALLBACK_OVERLAY_FRACTION * float(heatmap_vmax)

    # footer text: colour legend, caller's notes, display convention
    if threshold is not None and np.isclose(floor, threshold):
        coloured = f"Coloured: heatmap \u2265 {_fmt(floor)} (the voxel threshold, outlined in cyan)."
    elif threshold is not None:
        coloured = (
            f"Coloured: heatmap \u2265 {_fmt(floor)} ({floor / threshold:.2g} \u00d7 the voxel threshold); "
            f"cyan outline: heatmap \u2265 the voxel threshold {_fmt(threshold)}."
        )
    elif overlay_threshold is None:
        coloured = (
            f"Coloured: heatmap \u2265 {_fmt(floor)} ({FALLBACK_OVERLAY_FRACTION:.0%} of the colour scale; "
            "no voxel threshold given)."
        )
    else:
        coloured = f"Coloured: heatmap \u2265 {_fmt(floor)}."
    legend = (
        f"{coloured} Colour scale fixed to [0, {_fmt(heatmap_vmax)}] from healthy reference scans "
        "(hatched on the bar: not coloured)."
    )
    orientation = (
        "Slices shown rotated (np.rot90); for RAS volumes: anterior/superior at top, "
        "patient's LEFT on screen left (neurological convention)."
    )

    # layout in inches: header (title, info, warnings, column titles), rows of square panels, footer
    panel, gap, left, cbar_gap, cbar_w, cbar_pad = 2.1, 0.1, 0.62, 0.15, 0.18, 0.85
    width = left + 3 * panel + 2 * gap + cbar_gap + cbar_w + cbar_pad
    text_width = width - 0.4
    # (text, fontsize, weight, colour) of every header line after wrapping
    decision_color = "#c00000" if flagged else "#1a7f37"
    header_lines: list[tuple[str, float, str, str]] = []
    for i, line in enumerate(info_lines):
        size, weight, color = (12.0, "bold", decision_color) if i == 0 else (10.5, "normal", "#222222")
        header_lines += [(t, size, weight, color) for t in _wrap(line, text_width, size, weight == "bold")]
    warning_wrapped = [
        (t, 10.5, "bold", "#a04000")
        for line in warning_lines
        for t in _wrap("\u26a0 " + line, text_width - 0.2, 10.5, bold=True)
    ]
    footer_wrapped = [t for line in (legend, *footnote_lines, orientation) for t in _wrap(line, text_width, 8.0)]
    line_h = 1.45 / 72.0
    title_h = 0.5
    info_h = sum(size * line_h for _, size, _, _ in header_lines)
    warn_h = sum(size * line_h for _, size, _, _ in warning_wrapped) + (0.16 if warning_wrapped else 0.0)
    header = title_h + info_h + warn_h + 0.42
    footer = 0.2 + len(footer_wrapped) * 8.0 * line_h + 0.1
    rows_height = len(rows) * panel + (len(rows) - 1) * gap
    height = header + rows_height + footer
    fig = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)

    def box(x0: float, y_top: float, w: float, h: float) -> list[float]:
        """Axes rectangle in figure fractions from inches measured from the top-left corner."""
        return [x0 / width, 1.0 - (y_top + h) / height, w / width, h / height]

    headlines = [fig.text(0.5, 1.0 - 0.12 / height, title, ha="center", va="top", fontsize=14, fontweight="bold")]
    y = title_h
    for text, size, weight, color in header_lines:
        headlines.append(
            fig.text(0.5, 1.0 - y / height, text, ha="center", va="top", fontsize=size, fontweight=weight, color=color)
        )
        y += size * line_h
    if warning_wrapped:
        y += 0.06
        band = Rectangle(
            (0.1 / width, 1.0 - (y + warn_h - 0.12) / height),
            (width - 0.2) / width,
            (warn_h - 0.1) / height,
            transform=fig.transFigure,
            facecolor="#fff3cd",
            edgecolor="#a04000",
            linewidth=1.0,
        )
        fig.patches.append(band)
        for text, size, weight, color in warning_wrapped:
            headlines.append(
                fig.text(
                    0.5, 1.0 - y / height, text, ha="center", va="top", fontsize=size, fontweight=weight, color=color
                )
            )
            y += size * line_h
    _shrink_to_width(fig, headlines, max_width=width - 0.3)

    # Each panel is a figure image in its box: one Axes per panel (with imshow) cost most of the sheet's time, on
    # tick and grid artists created and drawn for nothing. What the Axes did is kept: the panel is shrunk to the
    # slice's aspect ratio (square voxels) and centred in its square, framed as by spines, titled ``axes.titlepad``
    # points above and labelled ``axes.labelpad`` points left of it, the outline drawn as ``contour`` draws it.
    lo, hi = _intensity_window(img)
    gray, cmap = colormaps["gray"], colormaps["inferno"]  # one lookup table each for all panels
    norm = Normalize(vmin=0.0, vmax=float(heatmap_vmax))
    column_titles = ("image", "reconstruction G(E(x))", "heatmap over image")
    inches = fig.dpi_scale_trans
    shown_rows, shown_cols = img.shape[1], img.shape[0]  # np.rot90 shows an (H, W) slice as (W, H)
    panel_w = panel * min(1.0, shown_cols / shown_rows)
    panel_h = panel * min(1.0, shown_rows / shown_cols)
    frames: list[tuple[float, float]] = []  # bottom-left corners of the panels
    for r, k in enumerate(rows):
        sl_img, sl_rec, sl_hm = (np.rot90(a[..., k]) for a in (img, rec, hm))
        # the panels' bottom-left corners in inches from the figure's bottom-left corner
        bottom = height - header - r * (panel + gap) - (panel + panel_h) / 2
        lefts = [left + c * (panel + gap) + (panel - panel_w) / 2 for c in range(3)]
        for c, sl in enumerate((sl_img, sl_rec, sl_img)):
            _add_panel_image(fig, sl, (lefts[c], bottom, panel_w, panel_h), cmap=gray, vmin=lo, vmax=hi)
            frames.append((lefts[c], bottom))
            if r == 0:
                title_y = bottom + panel_h + rc_params["axes.titlepad"] / 72.0
                fig.text(lefts[c] + panel_w / 2, title_y, column_titles[c], transform=inches, **_COLUMN_TITLE)
        overlay = np.ma.masked_where(~np.isfinite(sl_hm) | (sl_hm < floor), sl_hm)
        _add_panel_image(fig, overlay, (lefts[2], bottom, panel_w, panel_h), cmap=cmap, norm=norm, alpha=0.6)
        if threshold is not None:
            above = np.nan_to_num(sl_hm, nan=-np.inf) >= threshold
            if above.any() and not above.all():
                # voxel centres at integers, the first row at the top of the panel
                scale_x, scale_y = panel_w / shown_cols, panel_h / shown_rows
                voxels_to_inches = (
                    Affine2D()
                    .scale(scale_x, -scale_y)
                    .translate(lefts[2] + 0.5 * scale_x, bottom + panel_h - 0.5 * scale_y)
                )
                outline = PathPatch(_outline_path(above), fill=False, transform=voxels_to_inches + inches, zorder=2)
                outline.set(edgecolor="cyan", linewidth=1.2)
                fig.add_artist(outline)
        if not is_2d:
            score = "n/a" if not np.isfinite(scores[k]) else _fmt(scores[k])
            label_x = lefts[0] - rc_params["axes.labelpad"] / 72.0
            label = f"slice {int(numbers[k])}\n{slice_score_label} {score}"
            fig.text(label_x, bottom + panel_h / 2, label, transform=inches, **_ROW_LABEL)

    # the panels' frames, drawn like Axes spines, as one path
    corners = np.array([(0.0, 0.0), (panel_w, 0.0), (panel_w, panel_h), (0.0, panel_h), (0.0, 0.0)])
    frame_path = PathType(
        np.concatenate([corners + corner for corner in frames]),
        np.tile([PathType.MOVETO, *[PathType.LINETO] * 3, PathType.CLOSEPOLY], len(frames)),
    )
    frame = PathPatch(frame_path, fill=False, transform=inches, zorder=2.5)
    frame.set(edgecolor=rc_params["axes.edgecolor"], linewidth=rc_params["axes.linewidth"])
    fig.add_artist(frame)

    cax = fig.add_axes(box(left + 3 * panel + 2 * gap + cbar_gap, header, cbar_w, rows_height))
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, extend="max")
    cbar.set_label(heatmap_label, fontsize=10)
    if floor > 0:
        cax.axhspan(0.0, min(floor, heatmap_vmax), facecolor="white", alpha=0.75, hatch="//", edgecolor="#888888")
    if threshold is not None and 0.0 <= threshold <= heatmap_vmax:
        cax.axhline(threshold, color="cyan", linewidth=2.0)

    footnotes = []
    for i, text in enumerate(footer_wrapped):
        footnotes.append(
            fig.text(
                0.5,
                (0.15 + (len(footer_wrapped) - 1 - i) * 8.0 * line_h) / height,
                text,
                ha="center",
                va="bottom",
                fontsize=8,
                color="#333333",
            )
        )
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


def _scoring_record(calibration: Any) -> Mapping[str, Any]:
    """The scoring settings a calibration records, as a mapping (empty when unknown)."""
    record = getattr(calibration, "scoring", None)
    if record is None:
        return {}
    if isinstance(record, Mapping):
        return record
    to_dict = getattr(record, "to_dict", None)
    return to_dict() if callable(to_dict) else {}


class ReviewSheetd(MapTransform):
    """
    Dictionary transform writing a review sheet PNG (see :py:func:`render_review_sheet`) for one item of the
    inference post-processing (not a batch), on the model grid (before ``Invertd``).

    Reads the channel-first image ``d[image_key]`` (first channel shown) and the scorer maps ``d[pred_key]`` of
    :py:class:`monai_bigan.inferers.AnomalyScorer` (channel 0: heatmap, 1: reconstruction, 2: discriminator term)
    and writes ``<output_dir>/<stem>_<postfix>.png``. The stem is the input file name without
    ``.nii.gz``/``.nii``/``.png``/``.dcm`` (and a few other image extensions, see
    :py:func:`monai_bigan.data.output_stem`), from ``d[image_key].meta["filename_or_obj"]`` (for a DICOM series, the
    folder name), else ``d["filename"]``, else ``"image"``. With a ``layout`` (the
    :py:class:`monai_bigan.data.OutputLayout` of a batch) the sheet is named like the batch's other outputs instead:
    ``layout.filename(subject=<input path>)``, e.g. ``<output_dir>/<folder>/<stem>_review.png``. The path of the sheet
    is stored as a string under ``d["review_sheet"]``.

    What the sheet shows:

        - the decision: "scan score S vs flag threshold T (how T was chosen) -> FLAGGED for review / not flagged";
        - the healthy percentile with the size of the calibration set ("percentile 83 of 6 healthy validation
          scans"), and a warning when fewer than ``min_healthy_scans`` healthy scans back it;
        - how many voxels reach the voxel threshold, in how many connected regions; for a scan that is not flagged
          although it has such regions, a warning to review the outlined regions;
        - rows of slices spread over the most abnormal regions (the top slice, the top slice of each
          above-threshold region, then the next best slices, at least ``min_slice_distance`` apart), each labelled
          with the input file's own slice number (:py:func:`input_slice_numbers`, the numbering of ``worst_slice`` in
          ``scores.csv``) and its slice score. Slice scores are read from ``d[slice_score_key]`` (the ``slice_map``
          of :py:class:`monai_bigan.transforms.AnomalyScored`: the scan score's formula on each slice) when present,
          else they are the slices' mean heatmap; slices with less than ``min_foreground`` anatomy are not chosen.
        - the heatmap coloured only from ``overlay_fraction`` x the voxel threshold.

    Args:
        output_dir: folder of the sheets (created when needed); not needed with a ``layout``.
        image_key: key of the channel-first input image, (C, H, W[, D]).
        pred_key: key of the channel-first scorer maps, (3, H, W[, D]).
        heatmap_vmax: upper end of the heatmap colour scale, from healthy statistics (e.g. ``ScoreCalibration``).
        threshold: optional voxel threshold, outlined in cyan (e.g. the calibration's ``voxel_threshold``).
        num_slices: number of slices shown.
        slice_dim: spatial axis of the slices of (C, H, W, D) arrays, counted without the channel (2: last axis,
            axial for RAS); ignored for 2D images.
        postfix: appended to the stem of the output file name.
        score_keys: keys of the scan score, its healthy percentile and the flagged decision.
        allow_missing_keys: don't raise (and write nothing) when the image or the maps are missing.
        score_threshold: optional scan-level flag threshold, quoted next to the decision (else ``d["threshold"]``).
        foreground_threshold: image intensity (scaled to [-1, 1]) above which a voxel is anatomy.
        min_foreground: slices with a smaller foreground fraction are never chosen as the most anomalous.
        heatmap_label: colorbar label, e.g. ``"normalized residual (healthy z)"`` for normalized heatmaps.
        calibration: a :py:class:`monai_bigan.utils.ScoreCalibration`; when given, ``heatmap_vmax``, ``threshold``
            and ``score_threshold`` are taken from it (colour scale, voxel threshold and flag threshold, where it has
            them), and the sheet explains the threshold and the percentile with the size of the healthy set.
        threshold_mode: which flag threshold of ``calibration`` to quote, ``"fpr"`` or ``"f1"``.
        overlay_fraction: voxels are coloured from ``overlay_fraction * threshold`` (1: only voxels at or above the
            voxel threshold); without a threshold, from ``FALLBACK_OVERLAY_FRACTION * heatmap_vmax``.
        min_slice_distance: smallest distance, in model-grid slices, between two slices shown (default: the number
            of slices divided by ``2 * num_slices``).
        min_region_voxels: above-threshold regions with fewer voxels are not counted nor given a row.
        min_healthy_scans: percentiles resting on fewer healthy validation scans are marked coarse.
        slice_score_key: key of the per-slice score map (``"slice_map"``), None to use the mean heatmap.
        layout: names the sheet from the input path, as ``SaveImaged(folder_layout=...)`` names the other outputs
            (its postfix and extension replace ``postfix``); used when the item's input path is known.

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

    extensions: tuple[str, ...] = IMAGE_EXTENSIONS

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
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
        calibration: Any = None,
        threshold_mode: str = "fpr",
        overlay_fraction: float = 1.0,
        min_slice_distance: int | None = None,
        min_region_voxels: int = 1,
        min_healthy_scans: int = 20,
        slice_score_key: str | None = "slice_map",
        layout: FolderLayoutBase | None = None,
    ) -> None:
        super().__init__([image_key, pred_key], allow_missing_keys)
        if output_dir is None and layout is None:
            raise ValueError("ReviewSheetd needs an output_dir or a layout.")
        self.heatmap_label = heatmap_label
        if len(score_keys) != 3:
            raise ValueError(f"score_keys must name the score, percentile and flagged keys, got {score_keys}.")
        if num_slices < 1:
            raise ValueError(f"num_slices must be at least 1, got {num_slices}.")
        if not overlay_fraction > 0:
            raise ValueError(f"overlay_fraction must be positive, got {overlay_fraction}.")
        if threshold_mode not in ("fpr", "f1"):
            raise ValueError(f"threshold_mode must be 'fpr' or 'f1', got {threshold_mode!r}.")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.layout = layout
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
        self.calibration = calibration
        self.threshold_mode = threshold_mode
        self.overlay_fraction = float(overlay_fraction)
        self.min_slice_distance = min_slice_distance
        self.min_region_voxels = int(min_region_voxels)
        self.min_healthy_scans = int(min_healthy_scans)
        self.slice_score_key = slice_score_key
        if calibration is not None:
            if calibration.heatmap_vmax is not None:
                self.heatmap_vmax = calibration.heatmap_vmax
            if calibration.voxel_threshold is not None:
                self.threshold = calibration.voxel_threshold
            self.score_threshold = calibration.flag_threshold(threshold_mode)

    def source(self, d: Mapping[Hashable, Any]) -> str:
        """The input path of the item (``filename_or_obj`` of its metadata, else ``d["filename"]``), ``""`` if unknown."""
        meta = getattr(d.get(self.image_key), "meta", None) or d.get(f"{self.image_key}_meta_dict") or {}
        source = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
        if isinstance(source, (list, tuple)):
            source = source[0] if source else None
        if not source:
            source = d.get("filename")
        return str(source) if source else ""

    def source_name(self, d: Mapping[Hashable, Any]) -> str:
        """The input file (or DICOM folder) name of the item, or ``""`` when unknown."""
        source = self.source(d)
        return Path(source.rstrip("/\\")).name if source else ""

    def title(self, d: Mapping[Hashable, Any]) -> str:
        """
        The sheet's title: the input's name, preceded by its folder relative to the batch's data root when the
        ``layout`` names outputs by relative path (so two ``scan.nii.gz`` of an archive are told apart on the sheet).
        """
        name = self.source_name(d) or "image"
        source = self.source(d)
        batch = getattr(self.layout, "batch", None)
        if batch is None or not source:
            return name
        folder = Path(batch.stem(source)).parent.as_posix()
        return name if folder in ("", ".") else f"{folder}/{name}"

    def stem(self, name: str) -> str:
        """``name`` without a known image extension (:py:func:`monai_bigan.data.output_stem`), ``"image"`` if empty."""
        return output_stem(name) if name else "image"

    def sheet_path(self, d: Mapping[Hashable, Any]) -> Path:
        """Where the sheet of the item is written: named by the ``layout`` when there is one, else by :py:meth:`stem`."""
        source = self.source(d)
        if self.layout is not None and source:
            return Path(self.layout.filename(subject=source))
        if self.output_dir is None:
            raise ValueError("ReviewSheetd: the item names no input file, and there is no output_dir to fall back on.")
        return self.output_dir / f"{self.stem(self.source_name(d))}_{self.postfix}.png"

    @property
    def num_healthy(self) -> int | None:
        """Number of healthy validation scans behind the percentiles (None without a calibration)."""
        if self.calibration is None:
            return None
        return len(self.calibration.healthy_scores)

    def _flag_threshold(self, d: Mapping[Hashable, Any]) -> float | None:
        if self.score_threshold is not None:
            return float(self.score_threshold)
        return _to_float(d["threshold"]) if d.get("threshold") is not None else None

    def threshold_description(self) -> str:
        """How the flag threshold was chosen, e.g. "the healthy validation scans' 95th percentile, target FPR 5 %"."""
        cal = self.calibration
        if cal is None:
            return ""
        if self.threshold_mode == "f1":
            return (
                f"the F1-optimal threshold on the validation scans: {self.num_healthy} healthy, "
                f"{cal.num_anomalous} labelled anomalous"
            )
        fpr = 100.0 * float(cal.target_fpr)
        return f"the healthy validation scans' {100.0 - fpr:g}th percentile, target FPR {fpr:g} %"

    def _regions(self, d: Mapping[Hashable, Any]) -> np.ndarray | None:
        """Voxel counts of the regions at or above the voxel threshold on the model grid, None without a threshold."""
        if self.threshold is None or self.pred_key not in d:
            return None
        heatmap = np.asarray(convert_to_numpy(d[self.pred_key]), dtype=np.float32)[0]
        return above_threshold_regions(heatmap, float(self.threshold), self.min_region_voxels)[1]

    def _regions_text(self, d: Mapping[Hashable, Any], sizes: np.ndarray) -> str:
        """E.g. "1315 voxels (15 mL) above the voxel threshold 1.24 in 95 regions (largest 160, 121, 5 voxels)"."""
        text = f"{self._voxel_text(d, int(sizes.sum()))} above the voxel threshold {_fmt(self.threshold)} in "
        text += _plural(int(sizes.size), "region")  # type: ignore[arg-type]
        if sizes.size > 1:
            text += f" (largest {', '.join(str(int(s)) for s in sizes[:3])} voxels)"
        return text

    def _voxel_ml(self, d: Mapping[Hashable, Any]) -> float | None:
        """Volume of one model-grid voxel in mL, when the image has an affine."""
        image = d.get(self.image_key)
        affine = getattr(image, "affine", None)
        meta = getattr(image, "meta", None)
        # a default (identity) affine says nothing about the voxel size: only trust a loaded file's geometry
        if affine is None or not isinstance(meta, Mapping) or meta.get("original_affine") is None:
            return None
        a = np.asarray(convert_to_numpy(affine), dtype=np.float64)
        if a.shape != (4, 4):
            return None
        return abs(float(np.linalg.det(a[:3, :3]))) / 1000.0

    def _flagged(self, d: Mapping[Hashable, Any]) -> bool | None:
        flagged_key = self.score_keys[2]
        return None if d.get(flagged_key) is None else bool(_to_float(d[flagged_key]))

    def info_lines(self, d: Mapping[Hashable, Any]) -> list[str]:
        """
        The header lines: the decision ("scan score S vs flag threshold T (how T was chosen) -> FLAGGED for review"
        or "-> not flagged"), the healthy percentile with the size of the calibration set, and the voxels above the
        voxel threshold (for a scan that is not flagged although it has such voxels, see :py:meth:`warning_lines`).
        """
        score_key, percentile_key, _ = self.score_keys
        lines = []
        score = _to_float(d[score_key]) if d.get(score_key) is not None else None
        flagged = self._flagged(d)
        threshold = self._flag_threshold(d)
        parts = []
        if score is not None:
            parts.append(f"scan score {_fmt(score)}")
        if threshold is not None and (score is not None or flagged is not None):
            how = self.threshold_description()
            parts.append(f"vs flag threshold {_fmt(threshold)}" + (f" ({how})" if how else ""))
        line = " ".join(parts)
        if flagged is not None:
            decision = "FLAGGED for review" if flagged else "not flagged"
            line = f"{line} -> {decision}" if line else decision
        if line:
            lines.append(line)
        if d.get(percentile_key) is not None:
            percentile = _to_float(d[percentile_key])
            n = self.num_healthy
            if n:
                below = int(round(percentile * n / 100.0))
                lines.append(
                    f"percentile {percentile:.{0 if n < 200 else 1}f} of {_plural(n, 'healthy validation scan')} "
                    f"(scores at or above {below} of the {n})"
                )
            else:
                lines.append(f"percentile {percentile:.1f} among healthy validation scans")
        sizes = self._regions(d)
        if sizes is not None and not (sizes.size and flagged is False):
            if sizes.size:
                lines.append(f"{self._regions_text(d, sizes)}, outlined in cyan")
            else:
                lines.append(f"no voxel above the voxel threshold {_fmt(self.threshold)}")  # type: ignore[arg-type]
        return lines

    def _voxel_text(self, d: Mapping[Hashable, Any], voxels: int) -> str:
        ml = self._voxel_ml(d)
        text = _plural(voxels, "voxel")
        return text if ml is None else f"{text} ({voxels * ml:.2g} mL)"

    def warning_lines(self, d: Mapping[Hashable, Any]) -> list[str]:
        """
        Cautions drawn prominently: percentiles resting on fewer than ``min_healthy_scans`` healthy scans, and a scan
        that is not flagged although voxels reach the voxel threshold.
        """
        lines = []
        n = self.num_healthy
        if n is not None and 0 < n < self.min_healthy_scans:
            line = f"percentiles from only {_plural(n, 'healthy scan')}: coarse (steps of {100.0 / n:.3g} points)"
            healthy = np.asarray(self.calibration.healthy_scores, dtype=np.float64)
            threshold = self._flag_threshold(d)
            if self.threshold_mode == "fpr" and threshold is not None and threshold >= healthy.max():
                line += "; the flag threshold is " + (
                    f"the highest of the {n} healthy scores" if n > 1 else "the only healthy score"
                )
            lines.append(line)
        sizes = self._regions(d)
        if sizes is not None and sizes.size and self._flagged(d) is False:
            score_key = self.score_keys[0]
            threshold = self._flag_threshold(d)
            relation = "below"
            if d.get(score_key) is not None and threshold is not None and _to_float(d[score_key]) >= threshold:
                relation = "not above"
            lines.append(
                f"{self._regions_text(d, sizes)}, but the scan score is {relation} the flag threshold: "
                "review the outlined regions"
            )
        return lines

    def _slice_scores(self, d: Mapping[Hashable, Any], heatmap: np.ndarray, slice_dim: int) -> tuple[np.ndarray, bool]:
        """Per-slice scores along ``slice_dim`` and whether they came from the slice score map."""
        other = tuple(i for i in range(3) if i != slice_dim)
        key = self.slice_score_key
        if key is not None and d.get(key) is not None:
            smap = np.asarray(convert_to_numpy(d[key]), dtype=np.float64)
            if smap.ndim == 4 and smap.shape[0] == 1:
                smap = smap[0]
            # usable when it holds one value per slice along slice_dim
            if smap.shape == heatmap.shape and np.allclose(smap.max(axis=other), smap.min(axis=other)):
                return smap.mean(axis=other), True
        return heatmap.astype(np.float64).mean(axis=other), False

    def _scan_score_rule(self, d: Mapping[Hashable, Any], slice_scores: np.ndarray) -> str:
        """How the scan score relates to the slice scores, checked against the item's score where possible."""
        record = _scoring_record(self.calibration)
        score_key = self.score_keys[0]
        top_k = record.get("top_k_slices")
        if top_k and d.get(score_key) is not None and record.get("score_top_fraction") is None:
            finite = np.sort(slice_scores[np.isfinite(slice_scores)])[::-1]
            k = min(int(top_k), finite.size)
            if k and np.isclose(finite[:k].mean(), _to_float(d[score_key]), rtol=1e-3, atol=1e-6):
                return f"the scan score is the mean of the {k} highest slice scores"
        if record.get("score_top_fraction"):
            return (
                f"the scan score uses the highest {100.0 * float(record['score_top_fraction']):g} % of the "
                "heatmap's foreground voxels"
            )
        return "the scan score is computed over the whole scan"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d or self.pred_key not in d:
            if self.allow_missing_keys:
                return d
            missing = [k for k in (self.image_key, self.pred_key) if k not in d]
            raise KeyError(f"ReviewSheetd: key(s) {missing} not found in the data dictionary.")
        maps = np.asarray(convert_to_numpy(d[self.pred_key]), dtype=np.float32)
        if maps.ndim not in (3, 4) or maps.shape[0] < 2:
            raise ValueError(f"expected channel-first scorer maps (3, H, W[, D]), got shape {tuple(maps.shape)}.")
        heatmap, reconstruction = maps[0], maps[1]
        image = np.asarray(convert_to_numpy(d[self.image_key]), dtype=np.float32)
        if image.ndim == heatmap.ndim + 1:
            image = image[0]
        footnotes = []
        numbers = None
        if self.calibration is not None and self.threshold is not None:
            voxel_fpr = getattr(self.calibration, "voxel_fpr", None)
            if voxel_fpr is not None and self.calibration.voxel_threshold is not None:
                expected = float(voxel_fpr) * float((image > self.foreground_threshold).sum())
                footnotes.append(
                    f"Voxel threshold {_fmt(self.threshold)}: the {100.0 * (1.0 - float(voxel_fpr)):g}th percentile "
                    "of the healthy validation scans' foreground heatmap voxels, which about "
                    f"{100.0 * float(voxel_fpr):g} % of a healthy scan's foreground reaches (here about "
                    f"{_plural(int(round(expected)), 'voxel')})."
                )
        if heatmap.ndim == 2:
            slice_scores = np.array([heatmap.mean()], dtype=np.float64)
            slice_dim = -1
        else:
            if not -3 <= self.slice_dim < 3:
                raise ValueError(f"slice_dim must be in [-3, 2] for 3D images, got {self.slice_dim}.")
            slice_dim = self.slice_dim % 3
            other = tuple(i for i in range(3) if i != slice_dim)
            slice_scores, from_map = self._slice_scores(d, heatmap, slice_dim)
            # like AnomalyScored: the near-empty ends of a volume are never shown as "most anomalous"
            foreground = (image > self.foreground_threshold).mean(axis=other)
            if bool((foreground >= self.min_foreground).any()):
                slice_scores = np.where(foreground >= self.min_foreground, slice_scores, np.nan)
            if from_map:
                footnotes.append(
                    "Slice score: the anomaly score of that slice alone (on the model grid), used to choose the "
                    f"slices shown; {self._scan_score_rule(d, slice_scores)}; only the scan score decides the flag."
                )
            else:
                footnotes.append(
                    "Slice score: the mean heatmap value of that slice (on the model grid), used to choose the slices "
                    "shown; it is not the scan score, which alone decides the flag."
                )
            located = input_slice_numbers(d[self.image_key], slice_dim)
            if located is not None:
                numbers = located.numbers
                towards = f", increasing towards {located.direction}" if located.direction else ""
                footnotes.append(
                    f"Slice numbers: the input file's own 0-based index along its array axis {located.axis}{towards}, "
                    "as worst_slice in scores.csv."
                )
            else:
                footnotes.append("Slice numbers: index on the model grid (the input's own numbering is not recorded).")
        overlay = None if self.threshold is None else self.overlay_fraction * float(self.threshold)
        path = render_review_sheet(
            image,
            reconstruction,
            heatmap,
            slice_scores,
            self.sheet_path(d),
            title=self.title(d),
            info_lines=self.info_lines(d),
            heatmap_vmax=self.heatmap_vmax,
            num_slices=self.num_slices,
            slice_dim=slice_dim,
            threshold=self.threshold,
            heatmap_label=self.heatmap_label,
            flagged=self._flagged(d),
            warning_lines=self.warning_lines(d),
            footnote_lines=footnotes,
            slice_numbers=numbers,
            overlay_threshold=overlay,
            min_slice_distance=self.min_slice_distance,
            min_region_voxels=self.min_region_voxels,
        )
        d["review_sheet"] = str(path)
        return d
