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
Evaluation figures: ROC and precision-recall curves, score histograms of healthy and anomalous scans, and a grid of
example cases with their heatmaps.

Figures are drawn with :py:class:`matplotlib.figure.Figure` and the Agg canvas directly, so drawing never switches the
global matplotlib backend; matplotlib and scikit-learn are imported on first use, not with this module. Every PNG is
written through a temporary file in the same folder and an atomic rename, so readers never see a partial file. The
positive class is the anomaly (label 1).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.utils import convert_to_numpy, optional_import

from monai_bigan.io.atomic import atomic_save_figure
from monai_bigan.metrics.anomaly import ArrayLike, check_scores_labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_roc_pr", "plot_score_histograms", "plot_case_grid"]

# the BiGAN first, then the baselines; colors of matplotlib's colorblind-friendlier "tab10" cycle
_CURVE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
_HEALTHY_COLOR = "tab:blue"
_ANOMALOUS_COLOR = "tab:red"


def _save_atomic(fig: Figure, output_path: str | os.PathLike, dpi: int) -> Path:
    return atomic_save_figure(fig, output_path, dpi=dpi)


def _new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global backend)."""
    Figure, _ = optional_import("matplotlib.figure", name="Figure")
    FigureCanvasAgg, _ = optional_import("matplotlib.backends.backend_agg", name="FigureCanvasAgg")
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _close(fig: Figure) -> None:
    """Release the figure's artists (it was never registered with pyplot, so nothing else holds it)."""
    fig.clear()


def plot_roc_pr(
    scores: ArrayLike,
    labels: ArrayLike,
    output_path: str | os.PathLike,
    title: str = "",
    baselines: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    name: str = "BiGAN",
    dpi: int = 100,
) -> Path:
    """
    Write one PNG with the ROC curve (left) and the precision-recall curve (right) of the anomaly scores.

    The legend gives the AUROC (ROC panel) and the average precision AP (PR panel) of each curve. The BiGAN is drawn
    first in blue, each baseline in its own color; the chance level is dashed gray (the diagonal on the ROC panel, the
    prevalence of anomalous scans in ``labels`` on the PR panel). PR curves are drawn as steps, as average precision
    integrates them.

    Args:
        scores: one anomaly score per scan, higher = more anomalous.
        labels: 0 healthy / 1 anomalous, aligned with ``scores``.
        output_path: the PNG file to write (its folder is created when needed).
        title: optional figure title.
        baselines: optional ``{name: (scores, labels)}`` of other methods, e.g. on the same test scans.
        name: legend name of the main curve.
        dpi: resolution of the PNG.

    Returns:
        the path of the PNG.

    Raises:
        ValueError: as :py:func:`monai_bigan.metrics.image_level_metrics` for invalid scores/labels (of any curve).

    Example::

        plot_roc_pr(scores, labels, "eval/roc_pr.png", title="test split", baselines={"AE": (ae_scores, labels)})
    """
    curves = [(name, *check_scores_labels(scores, labels))]
    for base_name, (base_scores, base_labels) in (baselines or {}).items():
        curves.append((str(base_name), *check_scores_labels(base_scores, base_labels)))
    prevalence = float(curves[0][2].mean())
    sk_metrics, _ = optional_import("sklearn.metrics")

    fig = _new_figure(11.0, 5.0)
    try:
        ax_roc, ax_pr = fig.subplots(1, 2)
        for i, (curve_name, s, y) in enumerate(curves):
            color = _CURVE_COLORS[i % len(_CURVE_COLORS)]
            width = 2.0 if i == 0 else 1.5
            fpr, tpr, _ = sk_metrics.roc_curve(y, s)
            ax_roc.plot(
                fpr, tpr, color=color, lw=width, label=f"{curve_name} (AUROC {sk_metrics.roc_auc_score(y, s):.3f})"
            )
            precision, recall, _ = sk_metrics.precision_recall_curve(y, s)
            ax_pr.step(
                recall,
                precision,
                where="post",
                color=color,
                lw=width,
                label=f"{curve_name} (AP {sk_metrics.average_precision_score(y, s):.3f})",
            )
        ax_roc.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="chance")
        ax_pr.axhline(prevalence, ls="--", color="gray", lw=1, label=f"chance (prevalence {prevalence:.2f})")
        ax_roc.set(
            xlabel="false-positive rate (1 - specificity)",
            ylabel="true-positive rate (sensitivity)",
            title="ROC",
            xlim=(-0.01, 1.01),
            ylim=(-0.01, 1.01),
            aspect="equal",
        )
        ax_pr.set(
            xlabel="recall (sensitivity)",
            ylabel="precision",
            title="precision-recall (positive = anomaly)",
            xlim=(-0.01, 1.01),
            ylim=(-0.01, 1.01),
            aspect="equal",
        )
        for ax in (ax_roc, ax_pr):
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=9)
        n_anom = int(curves[0][2].sum())
        subtitle = f"{n_anom} anomalous / {curves[0][2].size - n_anom} healthy scans"
        fig.suptitle(f"{title}\n{subtitle}" if title else subtitle)
        fig.tight_layout()
        return _save_atomic(fig, output_path, dpi)
    finally:
        _close(fig)


def plot_score_histograms(
    scores: ArrayLike,
    labels: ArrayLike,
    output_path: str | os.PathLike,
    threshold: float | None = None,
    title: str = "",
    target_fpr: float | None = None,
    bins: int | str = "auto",
    dpi: int = 100,
) -> Path:
    """
    Write a PNG with overlaid histograms of the scores of healthy (blue) and anomalous (red) scans.

    Both histograms are densities on shared bins, so that groups of different sizes compare. When ``threshold`` is
    given, it is drawn as a vertical dashed line labelled "threshold (validation, x% FPR)" with ``x`` from
    ``target_fpr`` (or "threshold (validation)" without it). One class alone is allowed, e.g. the healthy validation
    scores.

    Args:
        scores: one anomaly score per scan.
        labels: 0 healthy / 1 anomalous, aligned with ``scores``.
        output_path: the PNG file to write.
        threshold: optional decision threshold, fitted on validation data.
        title: optional figure title.
        target_fpr: false-positive rate the threshold was fitted for, in (0, 1), e.g. 0.05.
        bins: number of shared bins or a numpy bin rule; capped at 100 bins.
        dpi: resolution of the PNG.

    Returns:
        the path of the PNG.

    Raises:
        ValueError: when scores/labels are invalid (see :py:func:`monai_bigan.metrics.image_level_metrics`).

    Example::

        plot_score_histograms(scores, labels, "eval/hist.png", threshold=cal.threshold, target_fpr=cal.target_fpr)
    """
    s, y = check_scores_labels(scores, labels, require_both=False)
    lo, hi = float(s.min()), float(s.max())
    if threshold is not None:
        lo, hi = min(lo, float(threshold)), max(hi, float(threshold))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.histogram_bin_edges(s, bins=bins, range=(lo, hi))
    if edges.size > 101:
        edges = np.linspace(lo, hi, 101)

    fig = _new_figure(7.0, 4.5)
    try:
        ax = fig.add_subplot(1, 1, 1)
        for value, group, color in ((0, "healthy", _HEALTHY_COLOR), (1, "anomalous", _ANOMALOUS_COLOR)):
            group_scores = s[y == value]
            if group_scores.size:
                ax.hist(
                    group_scores,
                    bins=edges,
                    density=True,
                    alpha=0.5,
                    color=color,
                    edgecolor=color,
                    label=f"{group} (n={group_scores.size})",
                )
        if threshold is not None:
            text = "threshold (validation"
            if target_fpr is not None:
                text += f", {100 * float(target_fpr):g}% FPR"
            ax.axvline(float(threshold), ls="--", color="black", lw=1.5, label=f"{text}) = {float(threshold):.4g}")
        ax.set(xlabel="anomaly score", ylabel="density", title=title or "anomaly scores")
        ax.legend(fontsize=9, framealpha=0.9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return _save_atomic(fig, output_path, dpi)
    finally:
        _close(fig)


def _slice(x: Any, name: str) -> np.ndarray:
    """``x`` as a float32 2D array (leading singleton axes dropped)."""
    arr = np.asarray(convert_to_numpy(x), dtype=np.float32)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D slice, got shape {tuple(np.shape(x))}.")
    return arr


def _window(image: np.ndarray) -> tuple[float, float]:
    """Gray window: the 1st-99th percentiles of the finite nonzero intensities (of all when none is nonzero)."""
    finite = image[np.isfinite(image)]
    values = finite[finite != 0] if np.any(finite != 0) else finite
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, [1, 99]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _label_text(label: Any) -> str:
    """'anomalous' for 1, 'healthy' for 0, else the value as text."""
    if label is None:
        return "unlabelled"
    try:
        value = float(label)
    except (TypeError, ValueError):
        return str(label)
    return {0.0: "healthy", 1.0: "anomalous"}.get(value, str(label))


def _score_text(score: Any) -> str:
    """The score with 4 significant digits, or its text when it is not a number."""
    try:
        return f"{float(score):.4g}"
    except (TypeError, ValueError):
        return str(score)


def plot_case_grid(
    cases: Sequence[Mapping[str, Any]],
    output_path: str | os.PathLike,
    title: str = "",
    ncols: int | None = None,
    panel_size: float = 2.6,
    dpi: int = 100,
) -> Path:
    """
    Write a PNG grid of example cases: each panel shows one slice in gray with its heatmap overlaid.

    Each case is a mapping with:

        - ``image`` and ``heatmap``: 2D arrays of one slice (numpy or torch, a leading singleton axis is dropped);
        - ``name``, ``score`` and ``label`` (0 healthy / 1 anomalous, or None): the panel caption;
        - ``vmax``: upper end of the heatmap color scale, a fixed value such as
          :py:attr:`monai_bigan.utils.ScoreCalibration.heatmap_vmax` so that colors mean the same in every panel; when
          missing, the largest heatmap value of all cases is used;
        - optional ``row``: the row the case goes to (e.g. ``"best"`` / ``"worst"``, chosen by the caller); cases are
          grouped by it in order of first appearance and the row name is written left of the row;
        - optional ``mask``: a ground-truth lesion mask of the slice, outlined in cyan.

    The display follows :py:func:`monai_bigan.visualize.render_review_sheet`: slices are shown as ``np.rot90(slice)``,
    the image windowed to its 1st-99th percentiles, the heatmap in ``"inferno"`` with alpha 0.6 over [0, vmax],
    transparent below 5 % of vmax. One colorbar is drawn when all cases share ``vmax``, otherwise one per panel.

    Args:
        cases: the cases, in display order.
        output_path: the PNG file to write.
        title: optional figure title.
        ncols: maximum number of panels per figure row; a longer row group wraps. None: each group on one row.
        panel_size: size of one panel in inches.
        dpi: resolution of the PNG.

    Returns:
        the path of the PNG.

    Raises:
        ValueError: when there is no case, a case misses a key, a slice is not 2D, image and heatmap shapes differ or
            a ``vmax`` is not positive.

    Example::

        cases = [dict(image=img[..., k], heatmap=hm[..., k], name="sub-01", score=3.2, label=1, vmax=0.4, row="best")]
        plot_case_grid(cases, "eval/cases.png", title="most and least anomalous test scans")
    """
    if not cases:
        raise ValueError("cases is empty.")
    if ncols is not None and ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}.")
    prepared = []
    for i, case in enumerate(cases):
        missing = [k for k in ("image", "heatmap", "name", "score", "label") if k not in case]
        if missing:
            raise ValueError(f"case {i} misses the key(s) {missing}.")
        image, heatmap = _slice(case["image"], f"case {i} image"), _slice(case["heatmap"], f"case {i} heatmap")
        if image.shape != heatmap.shape:
            raise ValueError(f"case {i}: image {image.shape} and heatmap {heatmap.shape} differ in shape.")
        mask = None if case.get("mask") is None else _slice(case["mask"], f"case {i} mask") != 0
        prepared.append((case, image, heatmap, mask))
    largest = max(float(np.max(h[np.isfinite(h)])) if np.isfinite(h).any() else 0.0 for _, _, h, _ in prepared)
    fallback = largest if largest > 0 else 1.0
    vmaxes = [float(c["vmax"]) if c.get("vmax") is not None else fallback for c, _, _, _ in prepared]
    for i, v in enumerate(vmaxes):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"case {i}: vmax must be positive and finite, got {v}.")

    # group by "row" in order of first appearance, wrap at ncols
    groups: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault(str(case.get("row", "")), []).append(i)
    lines: list[tuple[str, list[int]]] = []
    for row_name, members in groups.items():
        step = ncols or len(members)
        for start in range(0, len(members), step):
            lines.append((row_name if start == 0 else "", members[start : start + step]))
    nrows, width = len(lines), max(len(m) for _, m in lines)
    shared = len(set(vmaxes)) == 1
    has_row_names = any(name for name, _ in lines)

    colormaps, _ = optional_import("matplotlib", name="colormaps")
    Normalize, _ = optional_import("matplotlib.colors", name="Normalize")
    ScalarMappable, _ = optional_import("matplotlib.cm", name="ScalarMappable")
    cmap = colormaps["inferno"]
    left = 0.45 if has_row_names else 0.1
    right = 1.0 if shared else 0.1
    slot = panel_size + (0.0 if shared else 0.7)  # room for a colorbar beside each panel when the scales differ
    top = 0.6 if title else 0.2
    caption = 0.55
    fig_w = left + width * slot + right
    fig_h = top + nrows * (panel_size + caption) + 0.1
    fig = _new_figure(fig_w, fig_h)
    try:
        if title:
            fig.suptitle(title, y=1 - 0.3 / fig_h, va="center", fontsize=12)
        for r, (row_name, members) in enumerate(lines):
            y0 = fig_h - top - (r + 1) * (panel_size + caption) + caption
            if row_name:
                fig.text(
                    0.25 / fig_w,
                    (y0 + panel_size / 2) / fig_h,
                    row_name,
                    rotation=90,
                    ha="center",
                    va="center",
                    fontsize=12,
                    fontweight="bold",
                )
            for c, idx in enumerate(members):
                case, image, heatmap, mask = prepared[idx]
                vmax = vmaxes[idx]
                ax = fig.add_axes(
                    [(left + c * slot + 0.05) / fig_w, y0 / fig_h, (panel_size - 0.1) / fig_w, panel_size / fig_h]
                )
                lo, hi = _window(image)
                ax.imshow(np.rot90(image), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                hm = np.rot90(heatmap)
                overlay = np.ma.masked_where(~np.isfinite(hm) | (hm < 0.05 * vmax), hm)
                norm = Normalize(vmin=0.0, vmax=vmax)
                ax.imshow(overlay, cmap=cmap, norm=norm, alpha=0.6, interpolation="nearest")
                if mask is not None and mask.any() and not mask.all():
                    ax.contour(np.rot90(mask).astype(np.float32), levels=[0.5], colors="cyan", linewidths=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                label = _label_text(case["label"])
                ax.set_xlabel(
                    f"{case['name']}\nscore {_score_text(case['score'])} | {label}",
                    fontsize=8,
                    color=_ANOMALOUS_COLOR if label == "anomalous" else "black",
                )
                if not shared:
                    x_bar = left + c * slot + panel_size + 0.02
                    cax = fig.add_axes([x_bar / fig_w, (y0 + 0.1) / fig_h, 0.12 / fig_w, (panel_size - 0.2) / fig_h])
                    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, extend="max")
                    cax.tick_params(labelsize=7)
        if shared:
            cax = fig.add_axes(
                [(fig_w - 0.75) / fig_w, (fig_h - top - nrows * (panel_size + caption) + caption) / fig_h, 0.15 / fig_w]
                + [(nrows * (panel_size + caption) - caption) / fig_h]
            )
            fig.colorbar(
                ScalarMappable(norm=Normalize(vmin=0.0, vmax=vmaxes[0]), cmap=cmap), cax=cax, extend="max"
            ).set_label("heatmap")
        return _save_atomic(fig, output_path, dpi)
    finally:
        _close(fig)
