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
"""Tests of the image-level and voxel-level anomaly detection metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import auc, average_precision_score, f1_score, precision_recall_curve, roc_auc_score

from monai_bigan.metrics import (
    VoxelMetricAccumulator,
    best_dice_threshold,
    dice_at_threshold,
    image_level_metrics,
    lesion_detection,
)


def _brute_force_best_dice(scores: np.ndarray, mask: np.ndarray) -> float:
    """Best Dice over every candidate threshold, one full pass per threshold."""
    candidates = np.concatenate(([-np.inf], np.unique(scores)))
    return max(dice_at_threshold(scores, mask, float(t)) for t in candidates)


@pytest.fixture
def scan_scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 12)
    scores = rng.normal(0, 1, labels.size) + 1.2 * labels
    return scores, labels


def test_image_level_matches_sklearn(scan_scores):
    scores, labels = scan_scores
    m = image_level_metrics(scores, labels)
    precision, recall, _ = precision_recall_curve(labels, scores)
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m["auprc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert m["auprc_trapezoid"] == pytest.approx(auc(recall, precision), abs=1e-12)
    assert 0.5 < m["auroc"] < 1.0  # the fixture is informative but not perfect
    assert (m["num_anomalous"], m["num_healthy"]) == (12, 30)
    assert "f1" not in m and "tp" not in m  # no threshold, no decision metrics
    # torch tensors and lists give the same numbers
    m_torch = image_level_metrics(torch.as_tensor(scores), torch.as_tensor(labels).bool())
    assert m_torch == pytest.approx(m)
    assert image_level_metrics(scores.tolist(), labels.tolist()) == pytest.approx(m)


def test_image_level_hand_example():
    # AUROC: of the 4 (anomalous, healthy) pairs, 3 are ordered correctly
    m = image_level_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert m["auroc"] == pytest.approx(0.75)
    # AP: ranks 0.8 (TP, P=1, R=.5), 0.4 (FP), 0.35 (TP, P=2/3, R=1) -> 0.5 * 1 + 0.5 * 2/3
    assert m["auprc"] == pytest.approx(0.5 + 1 / 3)


def test_sensitivity_at_95_specificity_hand_example():
    # 20 healthy scans: one false positive is allowed at FPR <= 0.05 (the healthy 0.19 flagged, cut just below it)
    healthy = np.arange(20) / 100.0
    anomalous = np.array([0.3, 0.25, 0.185, 0.175, 0.05])  # 0.175 would need a second false positive
    scores = np.concatenate([healthy, anomalous])
    labels = np.array([0] * 20 + [1] * 5)
    m = image_level_metrics(scores, labels)
    assert m["sensitivity_at_95_specificity"] == pytest.approx(3 / 5)
    # without the 0.185 anomaly, 0.175 needs FPR 0.1: only 0.3 and 0.25 of the 4 anomalies are found at FPR 0.05
    m2 = image_level_metrics(np.delete(scores, 22), np.delete(labels, 22))
    assert m2["sensitivity_at_95_specificity"] == pytest.approx(2 / 4)


def test_decision_metrics_at_threshold_from_hand_counts():
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.4, 0.9])  # 0.5 equals the threshold: not flagged
    m = image_level_metrics(scores, labels, threshold=0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 3, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["f1"] == pytest.approx(f1_score(labels, scores > 0.5))
    assert m["threshold"] == 0.5


def test_nothing_flagged_gives_zero_precision():
    m = image_level_metrics([0.1, 0.2, 0.3], [0, 1, 1], threshold=10.0)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 2)
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["specificity"] == 1.0


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, 0.2, 0.3], [0, 0, 0], "single class"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "single class"),
        ([0.1, 0.2, 0.3], [0, 1], "same length"),
        ([0.1, float("nan"), 0.3], [0, 1, 1], "NaN"),
        ([0.1, float("inf"), 0.3], [0, 1, 1], "infinite"),
        ([0.1, 0.2, 0.3], [0, 1, 2], "0 \\(healthy\\) or 1"),
        ([], [], "empty"),
    ],
)
def test_image_level_invalid_inputs_raise(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        image_level_metrics(scores, labels)


def test_nan_threshold_raises():
    with pytest.raises(ValueError, match="threshold"):
        image_level_metrics([0.1, 0.2], [0, 1], threshold=float("nan"))


def test_best_dice_matches_brute_force_on_random_data():
    rng = np.random.default_rng(1)
    for _ in range(3):
        mask = rng.random(400) < 0.15
        # coarse scores make many ties, which the sweep must treat as one cut
        scores = np.round(rng.normal(0, 1, 400) + 1.0 * mask, 1).astype(np.float32)
        dice, threshold = best_dice_threshold(scores, mask)
        assert dice == pytest.approx(_brute_force_best_dice(scores, mask), abs=1e-12)
        # the returned threshold reproduces the best Dice with the "score > threshold" convention
        assert dice_at_threshold(scores, mask, threshold) == pytest.approx(dice, abs=1e-12)
        assert 0.0 < dice < 1.0


def test_best_dice_perfect_threshold_and_flag_everything():
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.85], dtype=np.float32)
    dice, threshold = best_dice_threshold(scores, [0, 1, 1, 0, 1])
    assert dice == 1.0
    assert 0.2 <= threshold < 0.8
    assert dice_at_threshold(scores, [0, 1, 1, 0, 1], threshold) == 1.0
    # when the lesion is the lowest-scoring voxel, flagging everything is best: the threshold is below the minimum
    dice, threshold = best_dice_threshold([0.5, 0.6, 0.1], [0, 0, 1])
    assert dice == pytest.approx(2 / 4)
    assert threshold < 0.1
    assert dice_at_threshold([0.5, 0.6, 0.1], [0, 0, 1], threshold) == pytest.approx(0.5)


def test_dice_at_threshold_hand_example():
    assert dice_at_threshold([0.1, 0.9, 0.8, 0.2], [0, 1, 0, 0], 0.5) == pytest.approx(2 / 3)
    assert dice_at_threshold([0.1, 0.2], [0, 0], 0.5) == 1.0  # both empty
    # the region drops the false positive
    assert dice_at_threshold([0.1, 0.9, 0.8, 0.2], [0, 1, 0, 0], 0.5, region=[1, 1, 0, 1]) == 1.0


def _two_lesion_volume() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((12, 10, 8), dtype=np.uint8)
    mask[1:4, 1:4, 1:4] = 1  # lesion A
    mask[7:10, 5:8, 4:7] = 1  # lesion B
    heatmap = np.zeros(mask.shape, dtype=np.float32)
    heatmap[2, 2, 2] = 1.0  # a hot spot inside lesion A only
    heatmap[6, 1, 6] = 1.0  # a false-positive hot spot away from both lesions
    return heatmap, mask


def test_lesion_detection_one_of_two():
    heatmap, mask = _two_lesion_volume()
    assert lesion_detection(heatmap, mask, threshold=0.5) == (1, 2)
    assert lesion_detection(heatmap, mask, threshold=1.0) == (0, 2)  # strictly above the threshold
    # the single hot voxel is not enough when two are required; a second one inside lesion A is
    assert lesion_detection(heatmap, mask, 0.5, min_overlap_voxels=2) == (0, 2)
    heatmap[3, 3, 3] = 0.9
    assert lesion_detection(heatmap, mask, 0.5, min_overlap_voxels=2) == (1, 2)
    # a channel axis and torch tensors are accepted
    assert lesion_detection(torch.as_tensor(heatmap)[None], torch.as_tensor(mask), 0.5) == (1, 2)


def test_lesion_detection_full_connectivity_and_region():
    mask = np.zeros((6, 6, 6), dtype=np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1  # touch by a corner only: one lesion with full connectivity
    mask[4, 4, 4] = 1
    heatmap = np.zeros(mask.shape, dtype=np.float32)
    heatmap[2, 2, 2] = 1.0
    assert lesion_detection(heatmap, mask, 0.5) == (1, 2)
    # a region leaving out the second lesion: it is not counted at all
    region = np.ones(mask.shape, dtype=bool)
    region[4:, 4:, 4:] = False
    assert lesion_detection(heatmap, mask, 0.5, region=region) == (1, 1)
    # a region leaving out the hot voxel: the first lesion is still counted but missed
    region = np.ones(mask.shape, dtype=bool)
    region[2, 2, 2] = False
    assert lesion_detection(heatmap, mask, 0.5, region=region) == (0, 2)
    with pytest.raises(ValueError, match="min_overlap_voxels"):
        lesion_detection(heatmap, mask, 0.5, min_overlap_voxels=0)


def _random_cases(rng: np.random.Generator, n: int = 3, shape: tuple[int, ...] = (16, 14, 12)):
    cases = []
    for _ in range(n):
        mask = np.zeros(shape, dtype=np.uint8)
        c = rng.integers(4, 8, size=3)
        mask[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 2] = 1
        heatmap = (rng.random(shape) + 0.8 * mask).astype(np.float32)
        cases.append((heatmap, mask))
    return cases


def test_accumulator_pools_voxels_like_sklearn():
    rng = np.random.default_rng(2)
    cases = _random_cases(rng)
    acc = VoxelMetricAccumulator()
    for i, (heatmap, mask) in enumerate(cases):
        # alternate numpy/torch and with/without channel axis
        acc.add(torch.as_tensor(heatmap)[None] if i % 2 else heatmap, mask[None] if i == 2 else mask)
    m = acc.compute()
    scores = np.concatenate([h.reshape(-1) for h, _ in cases])
    truth = np.concatenate([g.reshape(-1) for _, g in cases])
    assert m["voxel_auroc"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-9)
    assert m["voxel_auprc"] == pytest.approx(average_precision_score(truth, scores), abs=1e-9)
    assert m["dice_best"] == pytest.approx(_brute_force_best_dice(scores, truth), abs=1e-12)
    assert dice_at_threshold(scores, truth, m["dice_best_threshold"]) == pytest.approx(m["dice_best"], abs=1e-12)
    assert (m["num_volumes"], m["num_voxels"], m["num_lesion_voxels"]) == (3, truth.size, int(truth.sum()))
    assert "lesion_detection_rate" not in m  # no lesion threshold anywhere
    assert acc.num_pooled == truth.size and acc.keep_probability == 1.0
    acc.reset()
    with pytest.raises(ValueError, match="no volume"):
        acc.compute()


def test_accumulator_region_restriction():
    rng = np.random.default_rng(3)
    shape = (20, 20, 10)
    brain = np.zeros(shape, dtype=bool)
    brain[3:17, 3:17, :] = True
    mask = np.zeros(shape, dtype=np.uint8)
    mask[8:12, 8:12, 3:7] = 1
    heatmap = np.where(mask > 0, 0.8, 0.2).astype(np.float32) + 0.05 * rng.random(shape).astype(np.float32)
    heatmap[~brain] = 0.95  # bright artifacts outside the brain
    without = VoxelMetricAccumulator()
    without.add(heatmap, mask)
    within = VoxelMetricAccumulator()
    within.add(heatmap, mask, region=brain)
    m_without, m_within = without.compute(), within.compute()
    assert m_within["num_voxels"] == int(brain.sum())
    assert m_without["num_voxels"] == mask.size
    # inside the brain the lesion is perfectly separable; the background artifacts spoil it otherwise
    assert m_within["voxel_auroc"] == 1.0 and m_within["dice_best"] == 1.0
    assert m_without["voxel_auroc"] < 0.5
    assert m_without["dice_best"] < 0.5


def test_accumulator_lesion_detection_thresholds():
    heatmap, mask = _two_lesion_volume()
    acc = VoxelMetricAccumulator()
    acc.add(heatmap, mask)
    acc.add(heatmap[None], mask)
    assert "lesion_detection_rate" not in acc.compute()
    m = acc.compute(lesion_threshold=0.5)
    assert (m["lesions_detected"], m["lesions_total"], m["lesion_detection_rate"]) == (2, 4, 0.5)
    assert acc.compute(lesion_threshold=1.5)["lesion_detection_rate"] == 0.0
    # thresholds given per volume at add time
    acc2 = VoxelMetricAccumulator()
    acc2.add(heatmap, mask, lesion_threshold=0.5)
    acc2.add(heatmap, mask, lesion_threshold=1.5)
    assert acc2.compute()["lesion_detection_rate"] == pytest.approx(1 / 4)
    assert acc2.compute(lesion_threshold=0.5)["lesion_detection_rate"] == pytest.approx(2 / 4)  # override
    # a volume without an add-time threshold is left out, with a warning
    acc2.add(heatmap, mask)
    with pytest.warns(UserWarning, match="left out"):
        assert acc2.compute()["lesions_total"] == 4


def test_accumulator_subsampling_bounds_memory():
    rng = np.random.default_rng(4)
    cases = _random_cases(rng, n=6)
    full = VoxelMetricAccumulator()
    small = VoxelMetricAccumulator(max_voxels=5000, seed=7)
    again = VoxelMetricAccumulator(max_voxels=5000, seed=7)
    for heatmap, mask in cases:
        for acc in (full, small, again):
            acc.add(heatmap, mask, lesion_threshold=0.9)
    assert small.num_voxels_seen == full.num_pooled == 6 * heatmap.size
    assert small.num_pooled < 5000 * 1.15
    assert small.keep_probability < 5000 / small.num_voxels_seen * 1.15
    m_full, m_small = full.compute(), small.compute()
    assert m_small["num_voxels"] == small.num_pooled
    assert m_small["voxel_auroc"] == pytest.approx(m_full["voxel_auroc"], abs=0.03)
    assert m_small["dice_best"] == pytest.approx(m_full["dice_best"], abs=0.05)
    # lesion detection uses the full volumes, whatever the subsampling
    assert m_small["lesion_detection_rate"] == m_full["lesion_detection_rate"]
    assert again.compute() == m_small  # the seeded generator makes it reproducible


def test_accumulator_invalid_inputs_raise():
    acc = VoxelMetricAccumulator()
    with pytest.raises(ValueError, match="same spatial shape"):
        acc.add(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        acc.add(np.full((4, 4), np.nan), np.zeros((4, 4)))
    acc.add(np.random.default_rng(0).random((4, 4)), np.zeros((4, 4)))  # a healthy volume only
    with pytest.raises(ValueError, match="no lesion voxel"):
        acc.compute()
    with pytest.raises(ValueError, match="max_voxels"):
        VoxelMetricAccumulator(max_voxels=0)


def test_accumulator_dice_at_a_given_threshold_pools_all_volumes():
    rng = np.random.default_rng(3)
    heatmaps = [rng.random((6, 7, 5)) for _ in range(3)]
    masks = [(h > 0.8).astype(np.uint8) for h in heatmaps]
    masks[1][0, 0, 0] = 1 - masks[1][0, 0, 0]  # not trivially perfect
    acc = VoxelMetricAccumulator()
    for heatmap, mask in zip(heatmaps, masks):
        acc.add(heatmap, mask)
    pooled = dice_at_threshold(
        np.concatenate([h.ravel() for h in heatmaps]), np.concatenate([m.ravel() for m in masks]), 0.6
    )
    assert acc.compute(dice_threshold=0.6)["dice_at_threshold"] == pytest.approx(pooled)
    assert "dice_at_threshold" not in acc.compute()
