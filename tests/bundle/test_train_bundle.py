"""The training bundle end to end, as `python -m monai.bundle run training` runs it, on tiny generated data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from monai.bundle import ConfigWorkflow

from monai_bigan.exceptions import ModelMismatchError
from tests.conftest import REPO_ROOT

TRAIN = str(REPO_ROOT / "bundles" / "bigan" / "train.json")
PRESET_3D = str(REPO_ROOT / "configs" / "brain_3d.json")
TINY_2D = {
    "channels": [4, 8],
    "strides": [2, 2],
    "image_size": [16, 16],
    "num_slices": 12,
    "latent_size": 8,
    "slices_per_volume": 2,
    "batch_size": 2,
}
TINY_3D = {
    "channels": [4, 8],
    "strides": [2, 2],
    "image_size": [16, 16, 16],
    "latent_size": 8,
    "batch_size": 2,
}


def _workflow(config_file, bundle_root, dataset_dir, **override):
    wf = ConfigWorkflow(
        config_file=config_file,
        workflow_type="train",
        run_id="training",
        bundle_root=str(bundle_root),
        dataset_dir=str(dataset_dir),
        max_epochs=1,
        **override,
    )
    wf.initialize()
    return wf


@pytest.mark.parametrize("config_file, tiny", [(TRAIN, TINY_2D), ([TRAIN, PRESET_3D], TINY_3D)], ids=["2d", "3d"])
def test_bundle_trains_one_epoch_and_writes_checkpoints(tmp_path, tiny_dataset, config_file, tiny):
    wf = _workflow(config_file, tmp_path / "bundle", tiny_dataset, **tiny)
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    models = tmp_path / "bundle" / "models"
    assert (models / "model.pt").is_file() and (models / "model_best.pt").is_file()
    ckpt = torch.load(models / "model.pt", weights_only=True)
    assert {"network", "ema_network", "eg_optimizer", "d_optimizer", "trainer"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == ckpt["trainer"]["epoch_length"] > 0  # one full epoch
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert 0.0 <= evaluator.state.metrics["val_criterion"] <= 1.0
    assert (tmp_path / "bundle" / "logs").is_dir()  # TensorBoard events
    # the trained network really is 2D or 3D, as the preset asks
    network = wf.parser.get_parsed_content("network")
    sample = torch.zeros([1, 1] + tiny["image_size"])
    assert network.reconstruct(sample.to(next(network.parameters()).device)).shape == sample.shape


def test_run_id_alias_and_cli(tmp_path, tiny_dataset):
    """The exact CLI form from the README, with overrides, in a subprocess."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN]
    cmd += [
        "--bundle_root",
        str(tmp_path / "b"),
        "--dataset_dir",
        str(tiny_dataset),
        "--max_epochs",
        "1",
        "--device",
        "cpu",
    ]
    for key, value in TINY_2D.items():
        cmd += [f"--{key}", json.dumps(value)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "b" / "models" / "model.pt").is_file()
    assert "val_criterion" in proc.stdout


@pytest.mark.parametrize(
    "datalist, match",
    [
        (None, "datalist.json"),
        ({"training": []}, "training"),
        ({"training": [{"image": "missing.nii.gz"}]}, "missing.nii.gz"),
    ],
    ids=["no-datalist", "empty-training", "missing-file"],
)
def test_bad_datalist_fails_fast_naming_the_file(tmp_path, datalist, match):
    data = tmp_path / "data"
    data.mkdir()
    if datalist is not None:
        (data / "datalist.json").write_text(json.dumps(datalist))
    wf = _workflow(TRAIN, tmp_path / "bundle", data, **TINY_2D)
    with pytest.raises(Exception) as info:
        wf.run()
    text = "".join(str(e) for e in _chain(info.value))
    assert match in text
    assert not (tmp_path / "bundle" / "models").exists()


def test_metadata_verifies_against_vendored_schema(tmp_path):
    from monai.bundle import verify_metadata

    bundle = REPO_ROOT / "bundles" / "bigan"
    verify_metadata(meta_file=str(bundle / "metadata.json"), filepath=str(bundle / "docs" / "meta_schema.json"))
    broken = json.loads((bundle / "metadata.json").read_text())
    del broken["network_data_format"]
    (tmp_path / "meta.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "meta.json"), filepath=str(bundle / "docs" / "meta_schema.json"))


def _chain(exc):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_gpu_speed_options_run_on_cpu(tmp_path, tiny_dataset):
    """channels-last 2D batches and the cudnn flag are wired through the bundle (AMP stays off without CUDA)."""
    wf = _workflow(TRAIN, tmp_path / "bundle", tiny_dataset, channels_last=True, cudnn_benchmark=True, **TINY_2D)
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.to_kwargs == {"memory_format": torch.channels_last}
    assert trainer.amp is False
    assert (tmp_path / "bundle" / "models" / "model.pt").is_file()


def test_another_preset_into_the_same_bundle_root_is_refused_in_one_line(tmp_path, tiny_dataset):
    """Training the 3D preset after the 2D default into one bundle_root: one line that says what to do, no
    state-dict listing (resume is on by default)."""
    root = tmp_path / "bundle"
    _workflow(TRAIN, root, tiny_dataset, **TINY_2D).run()
    wf = _workflow([TRAIN, PRESET_3D], root, tiny_dataset, **TINY_3D)
    with pytest.raises(Exception) as info:
        wf.run()
    error = info.value
    while not isinstance(error, ModelMismatchError) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, ModelMismatchError), repr(info.value)
    message = str(error)
    assert "\n" not in message and "--bundle_root" in message and "--resume false" in message
    assert "size mismatch" in message and message.count("size mismatch") == 1
