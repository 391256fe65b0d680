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
Evaluation of a trained model on a labelled test split, beside simple baselines on the same pre-processing.

Hygiene: scores, heatmaps and thresholds are produced first (thresholds from the validation split only); the test
labels and masks are read by :py:func:`compute_metrics` only after all scoring is finished.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks import eval_mode
from monai.transforms import Compose, Invertd, SaveImage

from monai_bigan.data.datalist import load_datalist
from monai_bigan.data.guarded import describe_error
from monai_bigan.data.preflight import preflight_check
from monai_bigan.handlers.report import worst_axial_slice
from monai_bigan.io import AtomicNibabelWriter
from monai_bigan.io.atomic import atomic_write_text
from monai_bigan.metrics import (
    VoxelMetricAccumulator,
    image_level_metrics,
    plot_case_grid,
    plot_roc_pr,
    plot_score_histograms,
)
from monai_bigan.transforms.scoring import AnomalyScored
from monai_bigan.utils.calibration import ScoreCalibration

__all__ = ["BaselineEvaluation", "compute_metrics", "output_stem"]

logger = logging.getLogger(__name__)


def output_stem(path: str) -> str:
    """File name stem used for the outputs of an input (as ``SaveImage`` names them)."""
    name = Path(path.rstrip("/")).name
    for ext in (".nii.gz", ".nii", ".png", ".dcm"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


class BaselineEvaluation:
    """
    Fit a parameter-free baseline (e.g. :py:class:`monai_bigan.baselines.ZScoreBaseline` or ``PCABaseline``) on the
    healthy training split, calibrate it on the validation split and score the test split, writing heatmaps in each
    input's space and a ``scores.json`` like the BiGAN's, so :py:func:`compute_metrics` treats every method alike.

    Args:
        name: method name, used as the output sub-folder.
        baseline: the baseline module, called as ``baseline(x) -> (B, 3, *spatial)`` maps.
        preprocessing: deterministic pre-processing onto a grid that is the same for every scan (the baselines
            compare voxels across subjects).
        dataset_dir: data set folder with ``datalist.json``.
        output_dir: folder for this method's outputs.
        alpha: weight of the residual in the score (the baselines have no discriminator term, so 1).
        slice_dim: score slice by slice along this axis like the 2D BiGAN (None: whole volume).
        top_k: slices averaged into the volume score.
        target_fpr: false-positive rate of the validation threshold.
        voxel_fpr: fraction of healthy voxels above the voxel threshold.
        device: device to score on.
        foreground_threshold: intensity (scaled to [-1, 1]) above which a voxel counts for the voxel threshold.
        heatmap_postprocessing: dictionary transform applied to ``{"image", "pred"}`` before scoring, e.g. the
            smoothing and masking of :py:class:`monai_bigan.transforms.HeatmapPostprocessd` that the BiGAN gets, so
            that the methods are compared on the same post-processing.
        top_fraction: score with the mean of this fraction of the largest foreground voxels, see
            :py:class:`monai_bigan.transforms.AnomalyScored`.
        split: the datalist split to score (``"test"``; ``"validation"`` to compare settings without the test split,
            the calibration then being fitted on the scans it scores).
    """

    def __init__(
        self,
        name: str,
        baseline: torch.nn.Module,
        preprocessing: Compose,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        alpha: float = 1.0,
        slice_dim: int | None = 2,
        top_k: int = 8,
        target_fpr: float = 0.05,
        voxel_fpr: float = 0.001,
        device: str | torch.device = "cpu",
        foreground_threshold: float = -0.9,
        heatmap_postprocessing: Callable | None = None,
        top_fraction: float | None = None,
        split: str = "test",
    ) -> None:
        self.name = name
        self.split = split
        self.heatmap_postprocessing = heatmap_postprocessing
        self.foreground_threshold = foreground_threshold
        self.baseline = baseline
        self.preprocessing = preprocessing
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = Path(output_dir)
        self.scored = AnomalyScored("pred", alpha=alpha, slice_dim=slice_dim, top_k=top_k, top_fraction=top_fraction)
        self.target_fpr = target_fpr
        self.voxel_fpr = voxel_fpr
        self.device = torch.device(device)
        self.invert = Invertd(
            ["pred", "slice_map"],
            transform=preprocessing,
            orig_keys="image",
            nearest_interp=False,
            allow_missing_keys=True,
        )
        self.saver = SaveImage(
            output_dir=str(self.output_dir),
            output_postfix="heatmap",
            output_dtype=np.float32,
            separate_folder=False,
            print_log=False,
            writer=AtomicNibabelWriter,
        )

    def _images(self, entries: Sequence[Mapping]) -> Any:
        for entry in entries:
            yield self.preprocessing({"image": entry["image"]})["image"]

    def _score(self, entry: Mapping, save: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"input": str(entry["image"])}
        try:
            data = self.preprocessing({"image": entry["image"]})
            image = data["image"]
            with eval_mode(self.baseline), torch.no_grad():
                maps = self.baseline(image.as_tensor()[None].to(self.device))[0].cpu()
            if self.heatmap_postprocessing is not None:
                maps = torch.as_tensor(self.heatmap_postprocessing({"image": image, "pred": maps})["pred"])
                maps = maps.as_subclass(torch.Tensor)
            item = self.scored({"image": image, "pred": MetaTensor(maps, meta=image.meta)})
            row.update(score=float(item["score"][0]), status="ok", message="")
            # foreground residuals, for the voxel threshold when this is a healthy validation scan
            row["_residuals"] = maps[0][image.as_tensor()[0] > self.foreground_threshold].numpy()
            if save:
                # MetaTensors, so that Invertd takes the geometry from the image's applied operations
                heatmap = MetaTensor(maps[:1], meta=image.meta)
                # 2D images have no slices, hence no slice map
                slice_map = item.get("slice_map")
                data = {"image": image, "pred": heatmap, **({} if slice_map is None else {"slice_map": slice_map})}
                inverted = self.invert(data)
                self.saver(inverted["pred"])
                row["worst_slice"] = -1 if slice_map is None else worst_axial_slice(inverted["slice_map"])
        except Exception as e:  # one bad input must not stop the evaluation
            row.update(status="error", message=describe_error(e, str(entry["image"])))
            logger.error(row["message"])
        return row

    def run(self) -> list[dict[str, Any]]:
        """Fit, calibrate and score; returns the test rows (also written to ``scores.json``)."""
        training = load_datalist(self.dataset_dir, "training")
        validation = load_datalist(self.dataset_dir, "validation", required=False)
        test = [{"image": e["image"]} for e in load_datalist(self.dataset_dir, self.split, check_files=False)]
        # a bad training file stops the fit with one message listing every bad file, as training does
        preflight_check(training, self.preprocessing)
        logger.info(f"{self.name}: fitting on {len(training)} healthy training scans")
        self.baseline.fit(self._images(training))
        self.baseline.to(self.device)
        calibration = None
        if validation:
            val_rows = [self._score(entry, save=False) for entry in validation]
            ok = [(r, e.get("label")) for r, e in zip(val_rows, validation) if r["status"] == "ok"]
            calibration = ScoreCalibration.fit(
                [r["score"] for r, _ in ok],
                [lab for _, lab in ok],
                healthy_residuals=[r["_residuals"] for r, lab in ok if lab in (None, 0)],
                target_fpr=self.target_fpr,
                voxel_fpr=self.voxel_fpr,
            )
            calibration.save(self.output_dir / "calibration.json")
        rows = [self._score(entry, save=True) for entry in test]
        for row in rows:
            row.pop("_residuals", None)
            if calibration is not None and row["status"] == "ok":
                row.update(
                    percentile=calibration.percentile(row["score"]),
                    flagged=calibration.is_flagged(row["score"]),
                    threshold=calibration.threshold,
                )
        atomic_write_text(self.output_dir / "scores.json", json.dumps(rows, indent=2))
        return rows


def _load_rows(folder: Path) -> dict[str, dict]:
    rows = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
    return {os.path.abspath(r["input"]): r for r in rows}


def _read(path: str | None) -> np.ndarray | None:
    return None if path is None else np.asanyarray(nib.load(path).dataobj)


def compute_metrics(
    dataset_dir: str | os.PathLike,
    methods: Mapping[str, str | os.PathLike],
    output_dir: str | os.PathLike,
    split: str = "test",
    primary: str = "bigan",
    num_cases: int = 4,
    calibration_files: Mapping[str, str | os.PathLike] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """
    Image- and voxel-level metrics of every method, from the outputs it wrote while scoring, against the labels and
    masks of ``split``, which are read here for the first time. Writes ``metrics.json`` and plots into
    ``output_dir``.

    Args:
        dataset_dir: data set folder with ``datalist.json``.
        methods: method name -> folder holding its ``scores.json``, ``<stem>_heatmap.nii.gz`` files and
            ``calibration.json`` (or the model's calibration next to it); the first or ``primary`` method is the
            main model, the others are reported under ``baselines``.
        output_dir: where ``metrics.json`` and the PNGs go.
        split: the labelled split that was scored.
        primary: name of the main method.
        num_cases: best and worst cases shown in the case grid.
        calibration_files: method name -> its validation calibration, where it is not ``<folder>/calibration.json``.
        progress: optional callable receiving one message per method.

    Returns:
        the metrics dictionary written to ``metrics.json``.
    """
    output_dir = Path(output_dir)
    entries = load_datalist(dataset_dir, split, check_files=False)
    labelled = [e for e in entries if "label" in e]
    if not labelled:
        raise ValueError(f"the {split!r} split of {dataset_dir} has no labels: nothing to evaluate against.")
    results: dict[str, Any] = {"split": split, "num_scans": len(labelled), "baselines": {}}
    curves: dict[str, tuple[list[float], list[int]]] = {}
    calibrations: dict[str, ScoreCalibration | None] = {}
    for name, folder in methods.items():
        folder = Path(folder)
        if progress is not None:
            progress(name)
        rows = _load_rows(folder)
        scores, labels, failed = [], [], 0
        voxels = VoxelMetricAccumulator()
        calibration_file = Path((calibration_files or {}).get(name, folder / "calibration.json"))
        calibration = ScoreCalibration.load(calibration_file) if calibration_file.is_file() else None
        for entry in labelled:
            row = rows.get(os.path.abspath(entry["image"]))
            if row is None or row.get("status") != "ok":
                failed += 1
                continue
            scores.append(float(row["score"]))
            labels.append(int(entry["label"]))
            heatmap_file = folder / f"{output_stem(entry['image'])}_heatmap.nii.gz"
            if "mask" in entry and heatmap_file.is_file():
                voxels.add(
                    _read(str(heatmap_file)),
                    _read(entry["mask"]) > 0,
                    region=None if "brainmask" not in entry else _read(entry["brainmask"]) > 0,
                    lesion_threshold=None if calibration is None else calibration.voxel_threshold,
                )
        threshold = None if calibration is None else calibration.threshold
        metrics: dict[str, Any] = image_level_metrics(scores, labels, threshold=threshold)
        metrics.update(num_failed=failed, threshold_source="validation" if threshold is not None else None)
        if voxels.num_pooled:
            voxel = voxels.compute()
            metrics.update(voxel)
            if calibration is not None and calibration.voxel_threshold is not None:
                metrics["voxel_threshold_validation"] = calibration.voxel_threshold
        if name == primary:
            results[name] = metrics
        else:
            results["baselines"][name] = metrics
        curves[name] = (scores, labels)
        calibrations[name] = calibration
    atomic_write_text(output_dir / "metrics.json", json.dumps(results, indent=2))
    main_scores, main_labels = curves[primary]
    others = {k: v for k, v in curves.items() if k != primary}
    plot_roc_pr(main_scores, main_labels, output_dir / "roc_pr.png", title=f"{primary} on {split}", baselines=others)
    main_cal = calibrations[primary]
    plot_score_histograms(
        main_scores,
        main_labels,
        output_dir / "score_histograms.png",
        threshold=None if main_cal is None else main_cal.threshold,
        target_fpr=None if main_cal is None else main_cal.target_fpr,
        title=f"{primary}: healthy vs anomalous {split} scans",
    )
    vmax = None if main_cal is None else main_cal.heatmap_vmax
    _case_grid(labelled, _load_rows(Path(methods[primary])), Path(methods[primary]), output_dir, num_cases, vmax)
    return results


def _case_grid(
    entries: list[dict], rows: dict[str, dict], folder: Path, output_dir: Path, num_cases: int, vmax: float | None
) -> None:
    """Best and worst cases: anomalous scans ranked by score, healthy ones by minus score."""
    ranked = []
    for entry in entries:
        row = rows.get(os.path.abspath(entry["image"]))
        if row is None or row.get("status") != "ok":
            continue
        score = float(row["score"])
        ranked.append((score if entry["label"] == 1 else -score, entry, row))
    ranked.sort(key=lambda t: t[0], reverse=True)
    picks = ranked[:num_cases] + ranked[-num_cases:] if len(ranked) > 2 * num_cases else ranked
    cases = []
    for rank, (_, entry, row) in enumerate(picks):
        heatmap_file = folder / f"{output_stem(entry['image'])}_heatmap.nii.gz"
        if not heatmap_file.is_file() or not str(entry["image"]).endswith((".nii", ".nii.gz")):
            continue
        image, heatmap = _read(entry["image"]), _read(str(heatmap_file))
        if image is None or heatmap is None or image.ndim != 3:
            continue
        k = int(row.get("worst_slice") or image.shape[2] // 2)
        k = min(max(k, 0), image.shape[2] - 1)
        cases.append(
            {
                "image": image[..., k],
                "heatmap": heatmap[..., k],
                "name": f"{output_stem(entry['image'])} z={k}",
                "row": "best" if rank < num_cases else "worst",
                "mask": _read(entry["mask"])[..., k] if "mask" in entry else None,
                "score": float(row["score"]),
                "label": int(entry["label"]),
                "vmax": vmax if vmax else float(np.percentile(heatmap, 99.9)),
            }
        )
    if cases:
        plot_case_grid(cases, output_dir / "cases.png", title="best and worst cases (test)")
