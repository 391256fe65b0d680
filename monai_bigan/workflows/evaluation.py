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
from monai.data import DataLoader
from monai.inferers import Inferer, SimpleInferer, SliceInferer
from monai.transforms import Compose, Invertd, SaveImaged, SplitDimd

from monai_bigan.data.batch import InferenceBatch, OutputLayout, open_inference_batch
from monai_bigan.data.datalist import load_datalist
from monai_bigan.data.guarded import GuardedDataset
from monai_bigan.data.inputs import inference_datalist
from monai_bigan.data.outputs import output_stem
from monai_bigan.data.preflight import preflight_check
from monai_bigan.engines.evaluator import AnomalyEvaluator
from monai_bigan.handlers.calibration import CalibrationHandler
from monai_bigan.handlers.progress import TrainingProgress, progress_bar
from monai_bigan.handlers.report import AnomalyReportHandler
from monai_bigan.io import AtomicNibabelWriter
from monai_bigan.io.atomic import atomic_write_text
from monai_bigan.metrics import (
    VoxelMetricAccumulator,
    image_level_metrics,
    plot_case_grid,
    plot_roc_pr,
    plot_score_histograms,
)
from monai_bigan.transforms.calibration import ScoreCalibrationd
from monai_bigan.transforms.scoring import AnomalyScored
from monai_bigan.utils.calibration import ScoreCalibration
from monai_bigan.utils.enums import AnomalyKeys

__all__ = ["BaselineEvaluation", "compute_metrics", "metrics_summary", "output_stem"]

logger = logging.getLogger(__name__)


class BaselineEvaluation:
    """
    Fit a parameter-free baseline (e.g. :py:class:`monai_bigan.baselines.ZScoreBaseline` or ``PCABaseline``) on the
    healthy training split, calibrate it on the validation split and score the test split, writing heatmaps in each
    input's space and a ``scores.json`` like the BiGAN's, so :py:func:`compute_metrics` treats every method alike. The
    outputs are named as the BiGAN's (:py:class:`monai_bigan.data.OutputNames`); the baseline is fitted again by
    every run, so its output folder is always rescored (:py:class:`monai_bigan.data.InferenceBatch` with ``rescore``:
    the files of its previous batch are removed, never mixed with new ones).

    The baseline is scored exactly like the BiGAN: it is the ``network`` of a
    :py:class:`monai_bigan.engines.AnomalyEvaluator` (it returns the scorer's maps ``(B, 3, *spatial)``), run through
    ``inferer``, post-processed by ``heatmap_postprocessing`` and :py:class:`monai_bigan.transforms.AnomalyScored`.

        - calibration: an evaluator over the validation split with a :py:class:`monai_bigan.handlers.CalibrationHandler`
          (same voxel cap and ``scoring`` record as the BiGAN's) writes ``calibration.json``;
        - scoring: an evaluator over ``split`` adds :py:class:`monai_bigan.transforms.ScoreCalibrationd` (percentile,
          flag and threshold), inverts the heatmap to the input's space and writes it as ``<output>_heatmap.nii.gz``;
          its :py:class:`monai_bigan.handlers.AnomalyReportHandler` writes ``scores.csv`` and ``scores.json``.

    An input that cannot be loaded or scored becomes an error row and the others are still scored; a bad training
    file stops the fit with one message listing every bad file (:py:func:`monai_bigan.data.preflight_check`).

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
        heatmap_postprocessing: dictionary transform applied to the evaluator's output (``"image"``, ``"pred"``, ...)
            before scoring, e.g. the smoothing and masking of :py:class:`monai_bigan.transforms.HeatmapPostprocessd`
            that the BiGAN gets, so that the methods are compared on the same post-processing.
        top_fraction: score with the mean of this fraction of the largest foreground voxels, see
            :py:class:`monai_bigan.transforms.AnomalyScored`.
        split: the datalist split to score (``"test"``; ``"validation"`` to compare settings without the test split,
            the calibration then being fitted on the scans it scores).
        inferer: how the baseline is called on a preprocessed batch: by default a ``SimpleInferer`` (the whole grid
            at once); with a ``SliceInferer`` the baseline is fitted on the training slices along its ``spatial_dim``
            (its ``roi_size`` the slice size) and scores the volumes slice by slice, like the 2D BiGAN.
        scoring: the model's :py:class:`monai_bigan.bundle.ScoringSettings`: the baseline is then post-processed and
            scored as the model is, by ``scoring.for_baselines()`` (same smoothing, mask, polarity and aggregation,
            no healthy residual normalization, alpha 1), which replaces ``alpha``, ``top_k``, ``top_fraction`` and
            ``heatmap_postprocessing`` and is recorded in ``calibration.json``. A plain mapping is only recorded.
        max_voxels_per_scan: cap on the healthy residual samples kept per validation scan for the voxel threshold,
            see :py:class:`monai_bigan.handlers.CalibrationHandler`.
        progress: show progress bars with an ETA for the input check, the fit (one step per training scan) and the
            calibration and scoring passes, see :py:func:`monai_bigan.handlers.progress_bar`.

    Example::

        evaluation = BaselineEvaluation("zscore", ZScoreBaseline(), preprocessing, "data/demo", "evaluation/zscore")
        rows = evaluation.run()  # also in evaluation/zscore/scores.json
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
        inferer: Inferer | None = None,
        scoring: Mapping[str, Any] | None = None,
        max_voxels_per_scan: int = 200_000,
        progress: bool = True,
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
        self.inferer = SimpleInferer() if inferer is None else inferer
        if hasattr(scoring, "for_baselines"):
            scoring = scoring.for_baselines()
            self.heatmap_postprocessing = scoring.heatmap_postprocessing()
            self.scored = scoring.score_transform(slice_dim)
        self.scoring = scoring
        self.max_voxels_per_scan = max_voxels_per_scan
        self.progress = bool(progress)
        self.calibration: ScoreCalibration | None = None

    @property
    def calibration_file(self) -> Path:
        """Where the validation calibration is written."""
        return self.output_dir / "calibration.json"

    def _images(self, entries: Sequence[Mapping]) -> Any:
        """The preprocessed training items: whole grids, or their slices when the inferer scores slice by slice."""
        spatial_dim = self.inferer.spatial_dim if isinstance(self.inferer, SliceInferer) else None
        with progress_bar(entries, desc=f"{self.name}: fitting", unit="scan", enabled=self.progress) as bar:
            for entry in bar:
                image = self.preprocessing({"image": entry["image"]})["image"]
                if spatial_dim is None:
                    yield image
                else:
                    yield from torch.as_tensor(image).as_subclass(torch.Tensor).unbind(spatial_dim + 1)

    def _scoring_transforms(self) -> list[Callable]:
        """Heatmap post-processing and scan score, the same for calibration and scoring."""
        return ([] if self.heatmap_postprocessing is None else [self.heatmap_postprocessing]) + [self.scored]

    def make_evaluator(
        self, entries: Sequence[Mapping], postprocessing: Compose, handlers: Sequence[Any], phase: str = "scoring"
    ) -> AnomalyEvaluator:
        """
        An :py:class:`AnomalyEvaluator` scoring ``entries`` with the baseline, as the BiGAN bundles build theirs, with a
        progress bar named after ``phase`` when ``progress`` is set.
        """
        loader = DataLoader(
            GuardedDataset(list(entries), transform=self.preprocessing), batch_size=1, shuffle=False, num_workers=0
        )
        handlers = list(handlers)
        if self.progress:
            handlers.append(TrainingProgress(desc=f"{self.name}: {phase}", unit="scan"))
        return AnomalyEvaluator(
            device=self.device,
            val_data_loader=loader,
            network=self.baseline,
            inferer=self.inferer,
            postprocessing=postprocessing,
            val_handlers=handlers,
        )

    def calibration_evaluator(self, entries: Sequence[Mapping]) -> tuple[AnomalyEvaluator, CalibrationHandler]:
        """The evaluator over the validation ``entries`` and its handler that fits and writes the calibration."""
        handler = CalibrationHandler(
            self.calibration_file,
            target_fpr=self.target_fpr,
            voxel_fpr=self.voxel_fpr,
            foreground_threshold=self.foreground_threshold,
            max_voxels_per_scan=self.max_voxels_per_scan,
            scoring=self.scoring,
        )
        # image and label only: the calibration needs no masks
        data = [{k: e[k] for k in ("image", "label") if k in e} for e in entries]
        return self.make_evaluator(data, Compose(self._scoring_transforms()), [handler], "calibration"), handler

    def scoring_evaluator(
        self,
        entries: Sequence[Mapping],
        calibration: ScoreCalibration | None = None,
        batch: InferenceBatch | None = None,
    ) -> tuple[AnomalyEvaluator, AnomalyReportHandler]:
        """
        The evaluator over ``entries`` (image paths only) that scores, calibrates, inverts and writes the heatmaps, and
        its report handler that writes ``scores.csv`` and ``scores.json``; the outputs are named and recorded by
        ``batch`` (default: a batch of ``entries`` in ``output_dir``, its folder not checked).
        """
        batch = InferenceBatch(self.output_dir, entries, distributed=False) if batch is None else batch
        postprocessing = self._scoring_transforms()
        if calibration is not None:
            postprocessing.append(ScoreCalibrationd(calibration))
        postprocessing += [
            SplitDimd("pred", output_postfixes=["heatmap", "reconstruction", "discriminator"], dim=0),
            # 2D images have no slices, hence no slice map
            Invertd(
                ["pred_heatmap", "slice_map"],
                transform=self.preprocessing,
                orig_keys="image",
                nearest_interp=False,
                to_tensor=True,
                allow_missing_keys=True,
            ),
            SaveImaged(
                "pred_heatmap",
                output_ext=".nii.gz",
                output_dtype=np.float32,
                resample=False,
                print_log=False,
                writer=AtomicNibabelWriter,
                folder_layout=OutputLayout(batch, "heatmap", ".nii.gz"),
            ),
        ]
        report = AnomalyReportHandler(heatmap_key=AnomalyKeys.SLICE_MAP, batch=batch)
        evaluator = self.make_evaluator(batch.pending, Compose(postprocessing), [report], f"scoring {self.split}")
        return evaluator, report

    def run(self) -> list[dict[str, Any]]:
        """Fit, calibrate and score; returns the report rows (also written to ``scores.json`` and ``scores.csv``)."""
        training = load_datalist(self.dataset_dir, "training")
        validation = load_datalist(self.dataset_dir, "validation", required=False)
        # only the image paths: the labels and masks of the scored split are read by compute_metrics alone
        test = inference_datalist(self.dataset_dir, self.split)
        # a bad training file stops the fit with one message listing every bad file, as training does
        preflight_check(training, self.preprocessing, progress=self.progress)
        # refitted every run: the previous results of the folder are replaced, never mixed with these; scored by this
        # process alone (rank 0 of a distributed evaluation)
        settings = {"baseline": self.name, "scoring": self.scoring}
        batch = open_inference_batch(self.output_dir, test, settings=settings, rescore=True, distributed=False)
        logger.info(f"{self.name}: fitting on {len(training)} healthy training scans")
        self.baseline.fit(self._images(training))
        self.baseline.to(self.device)
        self.calibration = None
        if validation:
            evaluator, handler = self.calibration_evaluator(validation)
            evaluator.run()
            if handler.calibration is None:
                raise ValueError(
                    f"{self.name}: no calibration could be fitted on the {len(validation)} validation scans of "
                    f"{self.dataset_dir} (see the log above)."
                )
            self.calibration = handler.calibration
        evaluator, report = self.scoring_evaluator(test, self.calibration, batch)
        evaluator.run()
        return report.rows


def _load_rows(folder: Path) -> dict[str, dict]:
    rows = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
    return {os.path.abspath(r["input"]): r for r in rows}


def _read(path: str | None) -> np.ndarray | None:
    return None if path is None else np.asanyarray(nib.load(path).dataobj)


def _heatmap_file(folder: Path, row: Mapping[str, Any], image: str) -> Path:
    """The heatmap of an input: named by the report's ``output`` column (reports without it: the file name stem)."""
    return folder / f"{row.get('output') or output_stem(image)}_heatmap.nii.gz"


def compute_metrics(
    dataset_dir: str | os.PathLike,
    methods: Mapping[str, str | os.PathLike],
    output_dir: str | os.PathLike,
    split: str = "test",
    primary: str = "bigan",
    num_cases: int = 4,
    calibration_files: Mapping[str, str | os.PathLike] | None = None,
    progress: bool | Callable[[str], None] = True,
) -> dict[str, Any]:
    """
    Image- and voxel-level metrics of every method, from the outputs it wrote while scoring, against the labels and
    masks of ``split``, which are read here for the first time. Writes ``metrics.json`` and plots into
    ``output_dir``, then logs a summary: the headline metrics of each method and where the outputs are.

    Besides :py:func:`monai_bigan.metrics.image_level_metrics` and
    :py:meth:`monai_bigan.metrics.VoxelMetricAccumulator.compute`, a method with a validation voxel threshold gets
    ``dice_at_validation_threshold``: the Dice of the voxels above that threshold and the lesion masks, pooled over
    all the scans with a mask (inside their brain masks when given), an operating point chosen without test data,
    unlike the oracle ``dice_best``.

    Args:
        dataset_dir: data set folder with ``datalist.json``.
        methods: method name -> folder holding its ``scores.json``, ``<output>_heatmap.nii.gz`` files and
            ``calibration.json`` (or the model's calibration next to it); the first or ``primary`` method is the
            main model, the others are reported under ``baselines``.
        output_dir: where ``metrics.json`` and the PNGs go.
        split: the labelled split that was scored.
        primary: name of the main method.
        num_cases: best and worst cases shown in the case grid.
        calibration_files: method name -> its validation calibration, where it is not ``<folder>/calibration.json``.
        progress: True shows a progress bar with an ETA over the scans of every method (see
            :py:func:`monai_bigan.handlers.progress_bar`); a callable is called with each method name instead.

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
    bar = progress_bar(total=len(methods) * len(labelled), desc="metrics", unit="scan", enabled=progress is True)
    for name, folder in methods.items():
        folder = Path(folder)
        if callable(progress):
            progress(name)
        bar.set_postfix_str(name, refresh=False)
        rows = _load_rows(folder)
        scores, labels, failed = [], [], 0
        voxels = VoxelMetricAccumulator()
        calibration_file = Path((calibration_files or {}).get(name, folder / "calibration.json"))
        calibration = ScoreCalibration.load(calibration_file) if calibration_file.is_file() else None
        voxel_threshold = None if calibration is None else calibration.voxel_threshold
        for entry in labelled:
            bar.update()
            row = rows.get(os.path.abspath(entry["image"]))
            if row is None or row.get("status") != "ok":
                failed += 1
                continue
            scores.append(float(row["score"]))
            labels.append(int(entry["label"]))
            heatmap_file = _heatmap_file(folder, row, entry["image"])
            if "mask" in entry and heatmap_file.is_file():
                heatmap, mask = _read(str(heatmap_file)), _read(entry["mask"]) > 0
                region = None if "brainmask" not in entry else _read(entry["brainmask"]) > 0
                voxels.add(heatmap, mask, region=region, lesion_threshold=voxel_threshold)
        threshold = None if calibration is None else calibration.threshold
        metrics: dict[str, Any] = image_level_metrics(scores, labels, threshold=threshold)
        metrics.update(num_failed=failed, threshold_source="validation" if threshold is not None else None)
        if voxels.num_pooled:
            voxel = voxels.compute(dice_threshold=voxel_threshold)
            if voxel_threshold is not None:
                voxel["voxel_threshold_validation"] = voxel_threshold
                voxel["dice_at_validation_threshold"] = voxel.pop("dice_at_threshold")
            metrics.update(voxel)
        if name == primary:
            results[name] = metrics
        else:
            results["baselines"][name] = metrics
        curves[name] = (scores, labels)
        calibrations[name] = calibration
    bar.close()
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
    logger.info(metrics_summary(results, output_dir, primary=primary))
    return results


# headline metrics of the summary: (column title, metrics key)
SUMMARY_COLUMNS = (
    ("image AUROC", "auroc"),
    ("voxel AUPRC", "voxel_auprc"),
    ("Dice @ val. threshold", "dice_at_validation_threshold"),
    ("failed", "num_failed"),
)
OUTPUT_FILES = ("metrics.json", "roc_pr.png", "score_histograms.png", "cases.png")


def metrics_summary(results: Mapping[str, Any], output_dir: str | os.PathLike, primary: str = "bigan") -> str:
    """
    A short text table of the headline metrics of every method in ``results`` (as returned by
    :py:func:`compute_metrics`) and the paths of the outputs found in ``output_dir``; "-" marks a metric that was
    not computed (no masks, no validation voxel threshold).

    Example::

        print(metrics_summary(json.loads(Path("evaluation/metrics.json").read_text()), "evaluation"))
    """
    output_dir = Path(output_dir)
    methods = {primary: results[primary]} if primary in results else {}
    methods.update(results.get("baselines", {}))
    header = ["method", *(title for title, _ in SUMMARY_COLUMNS)]
    table = [header]
    for name, metrics in methods.items():
        cells = [name]
        for _, key in SUMMARY_COLUMNS:
            value = metrics.get(key)
            cells.append("-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"evaluation of the {results.get('split')!r} split ({results.get('num_scans')} labelled scans):"]
    for row in table:
        lines.append(
            "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
    lines.append(f"  metrics: {os.path.abspath(output_dir / OUTPUT_FILES[0])}")
    plots = [name for name in OUTPUT_FILES[1:] if (output_dir / name).is_file()]
    if plots:
        lines.append(f"  plots: {', '.join(plots)} in {os.path.abspath(output_dir)}")
    return "\n".join(lines)


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
        heatmap_file = _heatmap_file(folder, row, entry["image"])
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
                "name": f"{row.get('output') or output_stem(entry['image'])} z={k}",
                "row": "best" if rank < num_cases else "worst",
                "mask": _read(entry["mask"])[..., k] if "mask" in entry else None,
                "score": float(row["score"]),
                "label": int(entry["label"]),
                "vmax": vmax if vmax else float(np.percentile(heatmap, 99.9)),
            }
        )
    if cases:
        plot_case_grid(cases, output_dir / "cases.png", title="best and worst cases (test)")
