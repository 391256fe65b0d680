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
Model-selection criterion computed on the validation split only: the AUROC when the split has both healthy and
anomalous scans, otherwise the negative mean anomaly score of its healthy scans.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Number
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric, compute_roc_auc
from monai.utils import IgniteInfo, StrEnum, min_version, optional_import

from monai_bigan.utils.enums import AnomalyKeys

NotComputableError, _ = optional_import(
    "ignite.exceptions", IgniteInfo.OPT_IMPORT_VERSION, min_version, "NotComputableError", as_type="base"
)
if TYPE_CHECKING:
    from ignite.metrics.metric import reinit__is_reduced
else:
    reinit__is_reduced, _ = optional_import(
        "ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced", as_type="decorator"
    )

__all__ = ["CriterionKind", "ValidationCriterion", "ValidationCriterionMetric", "score_label_transform"]


class CriterionKind(StrEnum):
    """Which value :py:class:`ValidationCriterionMetric` returned last."""

    AUROC = "auroc"
    NEG_MEAN_HEALTHY_SCORE = "neg_mean_healthy_score"
    UNDEFINED = "undefined"


def _scalar(value: Any, what: str) -> float:
    """One number from a tensor, array or number with exactly one element."""
    t = torch.as_tensor(value)
    if t.numel() != 1:
        raise ValueError(f"each validation item needs a single {what}, got shape {tuple(t.shape)}.")
    return float(t.reshape(()).item())


def _as_column(values: Any, what: str, missing: float | None = None, device: Any = None) -> torch.Tensor:
    """
    A (N, 1) float tensor from a batch-first tensor or a list of per-item values, on the device of the input tensors
    (or ``device``), so that distributed gathering works with any backend; with ``missing`` given, None entries take
    that value.
    """
    if isinstance(values, torch.Tensor):
        n = values.shape[0] if values.ndim else 1
        if values.numel() != n:
            raise ValueError(f"each validation item needs a single {what}, got a batch of shape {tuple(values.shape)}.")
        return values.detach().float().reshape(n, 1).to(device or values.device)
    out = []
    for v in values:
        if v is None:
            if missing is None:
                raise ValueError(f"a validation item has no {what}.")
            out.append(missing)
        else:
            if device is None and isinstance(v, torch.Tensor):
                device = v.device
            out.append(_scalar(v, what))
    return torch.tensor(out, dtype=torch.float32, device=device).reshape(-1, 1)


def score_label_transform(
    score_key: str = AnomalyKeys.SCORE, label_key: str = "label"
) -> Callable[[Any], tuple[list, list]]:
    """
    Output transform for :py:class:`ValidationCriterion`: like ``monai.handlers.from_engine([score_key, label_key])``
    on a decollated output (a list of dicts, or one dict), but an item without ``label_key`` gets the label None
    (healthy) instead of raising, and items without ``score_key`` (e.g. error outputs of
    :py:class:`monai_bigan.engines.AnomalyEvaluator`) are skipped.

    Args:
        score_key: key of the per-item anomaly score.
        label_key: key of the per-item label (0 healthy, 1 anomalous).
    """

    def _transform(output: Any) -> tuple[list, list]:
        items = [output] if isinstance(output, Mapping) else list(output or [])
        items = [i for i in items if isinstance(i, Mapping) and i.get(score_key) is not None]
        return [i[score_key] for i in items], [i.get(label_key) for i in items]

    return _transform


class ValidationCriterionMetric(CumulativeIterationMetric):
    """
    Checkpoint-selection criterion from validation data only, higher is better:

    - the AUROC of the scores against the labels when both healthy (label 0) and anomalous (label 1) items were seen;
    - otherwise, when all items are healthy, the negative mean score of the healthy items: a model that gives healthy
      scans it was not trained on lower anomaly scores generalizes better.

    The two values are on different scales, so compare checkpoints only on one fixed validation split (as a
    training run does). Scores and labels are buffered like MONAI's ``ROCAUCMetric`` and gathered across ranks in
    distributed runs (``Cumulative.get_buffer``), so every rank computes the same value from all items.
    ``kind`` tells which criterion the last :py:meth:`aggregate` used.

    Call it with ``y_pred`` the scores and ``y`` the labels, as batch-first tensors (N,) or (N, 1), or lists of
    per-item values; a None label, or ``y`` None, means healthy.

    Raises:
        ValueError: when a label is not 0 or 1 (or None), or an item has more than one score or label.

    Example::

        metric = ValidationCriterionMetric()
        metric(torch.tensor([0.1, 0.2, 0.9]), torch.tensor([0, 0, 1]))
        metric.aggregate()  # 1.0 (AUROC)
        metric.reset()
        metric(torch.tensor([0.1, 0.3]))  # healthy only
        metric.aggregate()  # -0.2
    """

    def __init__(self) -> None:
        super().__init__()
        self.kind = CriterionKind.UNDEFINED

    def __call__(self, y_pred: Any, y: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        scores = _as_column(y_pred, "score")
        labels = torch.zeros_like(scores) if y is None else _as_column(y, "label", missing=0.0, device=scores.device)
        if labels.shape[0] != scores.shape[0]:
            raise ValueError(f"got {scores.shape[0]} scores but {labels.shape[0]} labels.")
        bad = labels[(labels != 0) & (labels != 1)]
        if bad.numel():
            raise ValueError(f"labels must be 0 (healthy), 1 (anomalous) or None (healthy), got {bad[0].item():g}.")
        return super().__call__(scores, labels, **kwargs)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> Any:
        return y_pred, y

    def aggregate(self) -> float:
        """
        The criterion over all buffered items (of all ranks); sets :py:attr:`kind`.

        Raises:
            NotComputableError: when no item was seen.
        """
        buffers = self.get_buffer()
        if buffers is None or buffers[0] is None or buffers[0].numel() == 0:
            raise NotComputableError("ValidationCriterionMetric needs at least one validation item.")
        scores, labels = (b.reshape(-1).float() for b in buffers)
        healthy = labels == 0
        if healthy.any() and not healthy.all():
            self.kind = CriterionKind.AUROC
            return float(compute_roc_auc(scores, labels.long()))
        if healthy.all():
            self.kind = CriterionKind.NEG_MEAN_HEALTHY_SCORE
            return -float(scores[healthy].mean())
        self.kind = CriterionKind.UNDEFINED
        warnings.warn("all validation items are anomalous: no healthy items to compute the criterion; returning NaN.")
        return math.nan


class ValidationCriterion(IgniteMetricHandler):
    """
    Ignite metric for choosing the best checkpoint (e.g. ``model_best.pt`` with ``save_key_metric=True``) from the
    validation split alone, higher is better, so MONAI's default metric comparison applies. It computes
    :py:class:`ValidationCriterionMetric`: the AUROC when the validation split holds both healthy (label 0) and
    anomalous (label 1) scans, otherwise (healthy-only validation: labels all 0, None or missing) the negative mean
    anomaly score of the healthy scans. Which one is in use is logged at INFO level the first time it is computed
    and whenever it changes; it is also stored as ``engine.state.metric_details[name]`` (a dict with ``"kind"``).

    It needs no test data and no anomalous scans. In distributed evaluation the scores of all ranks are gathered, as
    MONAI's ``ROCAUC`` does, so all ranks compute the same value.

    Args:
        output_transform: callable returning ``(scores, labels)`` from ``engine.state.output``, each a batch-first
            tensor or a list of per-item values; a None label means healthy. Default: :py:func:`score_label_transform`
            with ``score_key`` and ``label_key``, which, unlike ``monai.handlers.from_engine(["score", "label"])``,
            accepts outputs without a label.
        score_key: key of the anomaly score, used by the default ``output_transform``.
        label_key: key of the label, used by the default ``output_transform``.
        name: name of the logger, default ``monai_bigan.metrics.criterion``.

    Example::

        evaluator = SupervisedEvaluator(..., key_val_metric={"val_criterion": ValidationCriterion()})
    """

    def __init__(
        self,
        output_transform: Callable | None = None,
        score_key: str = AnomalyKeys.SCORE,
        label_key: str = "label",
        name: str | None = None,
    ) -> None:
        if output_transform is None:
            output_transform = score_label_transform(score_key, label_key)
        super().__init__(metric_fn=ValidationCriterionMetric(), output_transform=output_transform, save_details=False)
        self.logger = logging.getLogger(name or __name__)
        self._logged_kind: str | None = None

    @property
    def kind(self) -> str:
        """The criterion of the last computation, a :py:class:`CriterionKind`."""
        return self.metric_fn.kind

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        """
        Args:
            output: ``(scores, labels)``; ``labels`` may be None or contain None.

        Raises:
            ValueError: when ``output`` does not have length 2.
        """
        if len(output) != 2:
            raise ValueError(f"output must be (scores, labels), got length {len(output)}.")
        scores, labels = output
        if isinstance(scores, Number) or (isinstance(scores, torch.Tensor) and scores.ndim == 0):
            scores, labels = [scores], [labels]
        if isinstance(scores, (list, tuple)) and not scores:
            return
        self.metric_fn(scores, labels)

    def compute(self) -> float:
        """The criterion over the epoch's validation items, logging which one is used."""
        value = self.metric_fn.aggregate()
        self._is_reduced = True
        kind = self.metric_fn.kind
        if self._engine is not None and self._name is not None:
            if not hasattr(self._engine.state, "metric_details"):
                self._engine.state.metric_details = {}  # type: ignore[attr-defined]
            self._engine.state.metric_details[self._name] = {"kind": str(kind)}  # type: ignore[attr-defined]
        if kind != self._logged_kind:
            self._logged_kind = kind
            scores, labels = self.metric_fn.get_buffer()
            n_anomalous = int((labels == 1).sum())
            n_healthy = int(labels.numel()) - n_anomalous
            what = {
                CriterionKind.AUROC: "AUROC of the validation scores (healthy vs anomalous scans)",
                CriterionKind.NEG_MEAN_HEALTHY_SCORE: (
                    "negative mean anomaly score of the healthy validation scans (no anomalous scans in the "
                    "validation split; labels all 0 or missing)"
                ),
                CriterionKind.UNDEFINED: "undefined (NaN): the validation split has no healthy scans",
            }[kind]
            self.logger.info(
                f"validation criterion{'' if self._name is None else f' {self._name!r}'}: {what}; "
                f"{n_healthy} healthy and {n_anomalous} anomalous item(s), higher is better."
            )
        return value
