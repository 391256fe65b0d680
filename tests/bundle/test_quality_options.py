"""Bundle-level tests of the detection-quality switches: each is a config key that changes what is trained or scored."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import RandAffined

from tests.bundle.test_inference_bundle import _infer
from tests.bundle.test_train_bundle import TINY_2D, TRAIN
from tests.conftest import REPO_ROOT, train_tiny_bundle


@pytest.fixture(scope="module")
def normalized_bundle(tmp_path_factory, tiny_dataset):
    return train_tiny_bundle(tmp_path_factory.mktemp("normalized"), tiny_dataset, TRAIN, **TINY_2D)


def _scores(output_dir):
    with open(output_dir / "scores.csv") as f:
        return {row["input"]: row for row in csv.DictReader(f)}


def test_residual_statistics_are_stored_with_each_checkpoint(normalized_bundle):
    for name in ("model.pt", "model_best.pt"):
        ckpt = torch.load(normalized_bundle / "models" / name, weights_only=True)
        stats = ckpt["residual_statistics"]
        assert stats["mean"].shape == (1, 16, 16, 12)  # the fixed model grid of TINY_2D
        assert int(stats["num_samples"]) == 4  # the 4 healthy training volumes, no validation or test scan
    health = json.loads((normalized_bundle / "logs" / "training_health.json").read_text())
    assert isinstance(health, (list, dict))  # the stability monitor reported, even with nothing to report


def test_training_without_normalization_stores_no_statistics(tmp_path, tiny_dataset):
    root = train_tiny_bundle(tmp_path / "plain", tiny_dataset, TRAIN, heatmap_normalize=False, **TINY_2D)
    assert "residual_statistics" not in torch.load(root / "models" / "model.pt", weights_only=True)
    with pytest.raises(Exception) as info:
        wf, run = _infer(root, tiny_dataset, tmp_path / "out")
        run()
    text = str(info.value) + str(info.value.__cause__ or "")
    assert "heatmap_normalize" in text


def test_test_time_switches_change_the_scores(normalized_bundle, tiny_dataset, tmp_path):
    runs = {}
    for name, override in {
        "default": {},
        "no_normalization": {"heatmap_normalize": False},
        "no_smoothing": {"heatmap_sigma": 0.0},
        "no_mask": {"heatmap_mask": False},
        "refinement": {"refine_steps": 3, "refine_lr": 0.05},
        "negative_polarity": {"heatmap_polarity": "negative"},
    }.items():
        _, run = _infer(normalized_bundle, tiny_dataset, tmp_path / name, **override)
        run()
        runs[name] = _scores(tmp_path / name)
    default = runs.pop("default")
    for name, rows in runs.items():
        assert rows.keys() == default.keys() and all(r["status"] == "ok" for r in rows.values())
        assert any(rows[k]["score_residual"] != default[k]["score_residual"] for k in rows), name


def test_polarity_reaches_the_statistics_and_the_zscore_baseline():
    bundle = REPO_ROOT / "bundles" / "bigan"
    for configs in (["train.json"], ["inference.json"], ["inference.json", "evaluate.json"]):
        parser = ConfigParser()
        parser.read_config([str(bundle / config) for config in configs])
        parser["heatmap_polarity"] = "negative"
        assert parser.get_parsed_content("residual_statistics").mode == "negative", configs
        if "evaluate.json" in configs:
            assert parser.get_parsed_content("zscore#baseline").mode == "negative"


def test_best_checkpoint_selection_never_reads_the_test_split(tmp_path, tiny_dataset):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    datalist = json.loads((data / "datalist.json").read_text())
    for entry in datalist["test"]:
        (data / entry["image"]).write_bytes(b"not an image")  # any read of a test image would fail
    # and a healthy-only validation split: the criterion falls back to the healthy validation scores
    datalist["validation"] = [dict(e, label=0) for e in datalist["validation"] if e.get("label", 0) == 0]
    (data / "datalist.json").write_text(json.dumps(datalist))
    root = train_tiny_bundle(tmp_path / "bundle", data, TRAIN, max_epochs=2, **TINY_2D)
    assert (root / "models" / "model_best.pt").is_file()


def test_alad_switches_train_the_extra_discriminators_and_score_with_dxx(tmp_path, tiny_dataset):
    root = train_tiny_bundle(tmp_path / "alad", tiny_dataset, TRAIN, alad_dxx=True, alad_dzz=True, **TINY_2D)
    ckpt = torch.load(root / "models" / "model.pt", weights_only=True)
    keys = set(ckpt["ema_network"])
    assert any(k.startswith("discriminator_xx.") for k in keys) and any(k.startswith("discriminator_zz.") for k in keys)
    # the D optimizer holds the parameters of all three discriminators
    d_params = sum(len(group["params"]) for group in ckpt["d_optimizer"]["param_groups"])
    net_d = [
        k
        for k in ckpt["network"]
        if k.startswith("discriminator") and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert d_params == len(net_d)
    _, run = _infer(
        root, tiny_dataset, tmp_path / "out", alad_dxx=True, alad_dzz=True, discriminator_term="feature_matching_xx"
    )
    run()
    rows = _scores(tmp_path / "out")
    assert rows and all(r["status"] == "ok" and float(r["score_discriminator"]) > 0 for r in rows.values())


def test_boolean_switches_accept_command_line_strings(tmp_path, tiny_dataset):
    """``--key false`` reaches the config as the string "false" (Python Fire only parses ``False``)."""
    root = train_tiny_bundle(
        tmp_path / "strings",
        tiny_dataset,
        TRAIN,
        heatmap_normalize="false",
        alad_dxx="false",
        spectral_norm="no",
        **TINY_2D,
    )
    ckpt = torch.load(root / "models" / "model.pt", weights_only=True)
    assert "residual_statistics" not in ckpt
    assert not any(k.startswith("discriminator_xx.") for k in ckpt["network"])
    assert not any("parametrizations" in k for k in ckpt["network"])  # no spectral normalization
    _, run = _infer(root, tiny_dataset, tmp_path / "out", heatmap_normalize="False", heatmap_mask="false")
    run()
    assert all(r["status"] == "ok" for r in _scores(tmp_path / "out").values())


def test_recalibration_refits_statistics_and_thresholds_for_test_time_refinement(tmp_path, tiny_dataset):
    root = train_tiny_bundle(tmp_path / "bundle", tiny_dataset, TRAIN, **TINY_2D)
    models = root / "models"
    before = torch.load(models / "model.pt", weights_only=True)
    best_bytes = (models / "model_best.pt").read_bytes()
    calibration_before = json.loads((models / "calibration.json").read_text())
    train_tiny_bundle(root, tiny_dataset, TRAIN, run_id="calibrating", refine_steps=10, refine_lr=0.5, **TINY_2D)
    after = torch.load(models / "model.pt", weights_only=True)
    # the weights are kept; the statistics are refitted on the same scans with the refined residuals
    for key in ("network", "ema_network"):
        assert all(torch.equal(before[key][k], after[key][k]) for k in before[key])
    stats_before, stats_after = before["residual_statistics"], after["residual_statistics"]
    assert int(stats_after["num_samples"]) == int(stats_before["num_samples"])
    assert not torch.allclose(stats_after["mean"], stats_before["mean"])
    calibration_after = json.loads((models / "calibration.json").read_text())
    assert calibration_after["healthy_scores"] != calibration_before["healthy_scores"]
    # each records the scorer it was fitted with, so that inference can warn when it scores differently
    assert calibration_before["scoring"]["refine_steps"] == 0
    assert calibration_after["scoring"]["refine_steps"] == 10 and calibration_after["scoring"]["refine_lr"] == 0.5
    assert (models / "model_best.pt").read_bytes() == best_bytes  # other checkpoints are left alone


def test_training_with_refinement_ends_with_a_recalibration(tmp_path, tiny_dataset):
    root = train_tiny_bundle(tmp_path / "bundle", tiny_dataset, TRAIN, refine_steps=10, refine_lr=0.5, **TINY_2D)
    final = torch.load(root / "models" / "model.pt", weights_only=True)["residual_statistics"]
    # the epoch checkpoint holds the statistics of the (unrefined) validation scorer, the final model refitted ones
    last_epoch = torch.load(root / "models" / "checkpoint_epoch=1.pt", weights_only=True)["residual_statistics"]
    assert not torch.allclose(final["mean"], last_epoch["mean"])
    plain = train_tiny_bundle(tmp_path / "plain", tiny_dataset, TRAIN, **TINY_2D)
    plain_final = torch.load(plain / "models" / "model.pt", weights_only=True)["residual_statistics"]
    plain_epoch = torch.load(plain / "models" / "checkpoint_epoch=1.pt", weights_only=True)["residual_statistics"]
    assert torch.equal(plain_final["mean"], plain_epoch["mean"])  # without refinement nothing is refitted


def test_only_the_recalibration_scorer_refines_and_the_2d_image_preset_does():
    for files, steps in (([], 0), (["configs/images_2d.json"], 20)):
        parser = ConfigParser()
        parser.read_config([str(REPO_ROOT / "bundles" / "bigan" / "train.json")] + [str(REPO_ROOT / f) for f in files])
        parser["dataset_dir"] = "unused"
        assert parser.get_parsed_content("validate#scorer", lazy=True).refine_steps == 0  # costly at every epoch
        assert parser.get_parsed_content("calibrate#scorer", lazy=True).refine_steps == steps
        # and each calibration records the scorer it was fitted with
        assert parser.get_parsed_content("validation_scoring").refine_steps == 0
        assert parser.get_parsed_content("scoring").refine_steps == steps
        scoring = parser.get_parsed_content("scoring")
        assert (scoring != scoring.for_validation()) == (steps > 0)  # what makes TrainingRun recalibrate


def test_recalibration_without_a_trained_model_says_what_to_do(tmp_path, tiny_dataset):
    with pytest.raises(Exception) as info:
        train_tiny_bundle(tmp_path / "empty", tiny_dataset, TRAIN, run_id="calibrating", refine_steps=5, **TINY_2D)
    text = str(info.value) + str(info.value.__cause__ or "")
    assert "model.pt not found" in text and "train the model first" in text


@pytest.mark.parametrize("mode, spatial_dims", [("slices", 2), ("volume3d", 3)])
def test_training_augmentation_is_a_switch(mode, spatial_dims):
    def preprocessing(**overrides):
        parser = ConfigParser()
        parser.read_config(str(TRAIN))
        parser.update({"dataset_dir": "unused", "mode": mode, "image_size": None, **overrides})
        return parser.get_parsed_content("train#preprocessing", lazy=True).transforms

    assert not any(isinstance(t, RandAffined) for t in preprocessing())  # off by default
    augment = [t for t in preprocessing(augment_prob=1.0, augment_rotate=0.3) if isinstance(t, RandAffined)]
    assert len(augment) == 1 and augment[0] is not None
    image = torch.zeros((1,) + (16,) * spatial_dims)
    image[(slice(None),) + (slice(4, 10),) * spatial_dims] = 1.0  # an off-centre block: any rotation moves it
    augment[0].set_random_state(0)
    moved = augment[0]({"image": image})["image"]
    assert moved.shape == image.shape and not torch.allclose(torch.as_tensor(moved), image, atol=1e-3)


def test_training_with_augmentation(tmp_path, tiny_dataset):
    root = train_tiny_bundle(tmp_path / "augmented", tiny_dataset, TRAIN, augment_prob=1.0, **TINY_2D)
    reference = train_tiny_bundle(tmp_path / "plain", tiny_dataset, TRAIN, **TINY_2D)
    augmented = torch.load(root / "models" / "model.pt", weights_only=True)["network"]
    plain = torch.load(reference / "models" / "model.pt", weights_only=True)["network"]
    assert any(not torch.equal(augmented[k], plain[k]) for k in plain)  # same seed, other training images


def test_the_2d_image_preset_augments_its_training_images():
    parser = ConfigParser()
    parser.read_config([str(TRAIN), str(REPO_ROOT / "configs" / "images_2d.json")])
    parser["dataset_dir"] = "unused"
    transforms = parser.get_parsed_content("train#preprocessing", lazy=True).transforms
    assert [t.prob for t in transforms if isinstance(t, RandAffined)] == [1.0]
    # the healthy residual statistics are fitted on the unaugmented images
    statistics = parser.get_parsed_content("residual_stats#dataset#transform", lazy=True).transforms
    assert not any(isinstance(t, RandAffined) for t in statistics)
