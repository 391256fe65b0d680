"""ValidationCriterion: AUROC with labelled anomalies, the negative healthy mean score without them."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from ignite.engine import Engine
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.transforms import Lambdad
from sklearn.metrics import roc_auc_score

from monai_bigan.metrics import CriterionKind, ValidationCriterion, ValidationCriterionMetric

LOGGER = "monai_bigan.metrics.criterion"
SCORES = [0.2, 0.9, 0.4, 0.35, 0.8, 0.1, 0.6, 0.3]
LABELS = [0, 1, 0, 1, 1, 0, 0, 0]


def _evaluate(items, batch_size=2, **kwargs):
    """Run an engine whose outputs are decollated lists of dicts (as a SupervisedEvaluator's), return its state."""
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    engine = Engine(lambda engine, batch: batch)
    metric = ValidationCriterion(**kwargs)
    metric.attach(engine, "val_criterion")
    engine.run(batches, max_epochs=1)
    return engine.state, metric


def _items(scores, labels):
    """Decollated outputs: 1-element score tensors and int labels (None: the key is left out)."""
    return [{"score": torch.tensor([s])} | ({} if y is None else {"label": y}) for s, y in zip(scores, labels)]


def test_auroc_when_both_classes_are_present(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    expected = roc_auc_score(LABELS, SCORES)
    state, metric = _evaluate(_items(SCORES, LABELS))
    assert state.metrics["val_criterion"] == pytest.approx(expected)
    assert metric.kind == CriterionKind.AUROC
    # the same with MONAI's from_engine output transform and batch tensors instead of lists
    state, _ = _evaluate(_items(SCORES, LABELS), output_transform=from_engine(["score", "label"]))
    assert state.metrics["val_criterion"] == pytest.approx(expected)
    m = ValidationCriterionMetric()
    m(torch.tensor(SCORES), torch.tensor(LABELS))
    assert m.aggregate() == pytest.approx(expected)
    assert any("AUROC" in r.getMessage() for r in caplog.records)


def test_healthy_only_returns_negative_mean_score(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    state, metric = _evaluate(_items(SCORES, [0] * len(SCORES)))
    assert state.metrics["val_criterion"] == pytest.approx(-sum(SCORES) / len(SCORES))
    assert metric.kind == CriterionKind.NEG_MEAN_HEALTHY_SCORE
    assert not math.isnan(state.metrics["val_criterion"])  # MONAI's ROCAUC would give NaN here
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 1 and "negative mean anomaly score" in messages[0]


def test_missing_or_none_labels_are_healthy():
    # no label key at all
    state, _ = _evaluate(_items(SCORES, [None] * len(SCORES)))
    assert state.metrics["val_criterion"] == pytest.approx(-sum(SCORES) / len(SCORES))
    # label None (SupervisedEvaluator's output without labels) with from_engine
    items = [{"score": torch.tensor([s]), "label": None} for s in SCORES]
    state, _ = _evaluate(items, output_transform=from_engine(["score", "label"]))
    assert state.metrics["val_criterion"] == pytest.approx(-sum(SCORES) / len(SCORES))
    # a mix of None and anomalous labels: None counts as healthy, so AUROC
    mixed = [None if y == 0 else y for y in LABELS]
    state, metric = _evaluate(_items(SCORES, mixed))
    assert state.metrics["val_criterion"] == pytest.approx(roc_auc_score(LABELS, SCORES))
    assert metric.kind == CriterionKind.AUROC


def test_higher_is_better_for_checkpoint_selection():
    """A model that scores unseen healthy scans lower ranks higher, with MONAI's default comparison."""
    good, _ = _evaluate(_items([0.1, 0.2], [0, 0]))
    bad, _ = _evaluate(_items([0.5, 0.6], [0, 0]))
    assert good.metrics["val_criterion"] > bad.metrics["val_criterion"]


def test_logged_once_over_epochs(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    items = _items(SCORES, [0] * len(SCORES))
    engine = Engine(lambda engine, batch: batch)
    ValidationCriterion().attach(engine, "val_criterion")
    engine.run([items[:4], items[4:]], max_epochs=3)
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1


def test_key_metric_of_a_supervised_evaluator_without_labels():
    """Healthy-only validation data without a label key: the evaluator's best metric is the negative mean score."""
    data = [{"image": torch.full((1, 4, 4), v)} for v in (0.1, 0.3, 0.2)]
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
        network=torch.nn.Identity(),
        postprocessing=Lambdad("pred", lambda x: x.mean().reshape(1), overwrite="score"),
        key_val_metric={"val_criterion": ValidationCriterion()},
    )
    evaluator.run()
    assert evaluator.state.metrics["val_criterion"] == pytest.approx(-0.2)
    assert evaluator.state.best_metric == pytest.approx(-0.2)
    assert evaluator.state.metric_details["val_criterion"] == {"kind": "neg_mean_healthy_score"}


def test_all_anomalous_is_nan_and_bad_labels_raise():
    m = ValidationCriterionMetric()
    m(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))
    with pytest.warns(UserWarning, match="no healthy"):
        assert math.isnan(m.aggregate())
    with pytest.raises(ValueError, match="0 \\(healthy\\), 1"):
        ValidationCriterionMetric()(torch.tensor([0.1]), torch.tensor([2]))
    with pytest.raises(ValueError, match="single score"):
        ValidationCriterionMetric()(torch.rand(2, 3), None)


def test_no_items_is_not_computable():
    from ignite.exceptions import NotComputableError

    with pytest.raises(NotComputableError):
        ValidationCriterionMetric().aggregate()
