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
"""Export of the trained scorer to TorchScript and ONNX, and the inference bundle run from the exported model."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from monai_bigan.export import bundle_parser, export_bundle, load_scorer
from tests.bundle.test_train_bundle import PRESET_3D, TINY_2D, TINY_3D, TRAIN
from tests.conftest import REPO_ROOT, train_tiny_bundle

BUNDLE = REPO_ROOT / "bundles" / "bigan"
INFERENCE = str(BUNDLE / "inference.json")
INFERENCE_TS = str(BUNDLE / "inference_ts.json")
META = str(BUNDLE / "metadata.json")
CASES = {
    "2d": {"train": TRAIN, "infer": [INFERENCE], "tiny": TINY_2D, "drop": ("slices_per_volume", "batch_size")},
    "3d": {"train": [TRAIN, PRESET_3D], "infer": [INFERENCE, PRESET_3D], "tiny": TINY_3D, "drop": ("batch_size",)},
}
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
# in CI the ONNX tests must run (the `export` extra is installed there); elsewhere they need the optional packages
needs_onnx = pytest.mark.skipif(
    not HAS_ONNX and os.environ.get("CI") != "true", reason="onnx, onnxscript and onnxruntime are not installed"
)


def _infer_overrides(dims: str) -> dict:
    case = CASES[dims]
    return {k: v for k, v in case["tiny"].items() if k not in case["drop"]}


def _cli_overrides(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value)]
    return args


@pytest.fixture(scope="module", params=["2d", "3d"])
def exported(request, tmp_path_factory, tiny_dataset):
    """A bundle trained for one epoch on the tiny data, with models/model.ts (and model.onnx when onnx is here)."""
    dims = request.param
    root = tmp_path_factory.mktemp(f"export_{dims}")
    train_tiny_bundle(root, tiny_dataset, CASES[dims]["train"], **CASES[dims]["tiny"])
    written = export_bundle(
        root, "all" if HAS_ONNX else "torchscript", config_file=CASES[dims]["infer"], **_infer_overrides(dims)
    )
    assert written[0] == str(root / "models" / "model.ts")
    return dims, root


def _scorer_and_batch(dims: str, root: Path, batch_size: int = 3):
    parser = bundle_parser(root, CASES[dims]["infer"], META, **_infer_overrides(dims))
    scorer = load_scorer(parser)
    shape = [int(s) for s in parser.get_parsed_content("geometry").in_shape]
    batch = torch.rand([batch_size] + shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = scorer(batch)
    assert expected.shape == (batch_size, 3, *shape[1:])
    return scorer, batch, expected


def test_torchscript_export_matches_the_scorer(exported):
    dims, root = exported
    _, batch, expected = _scorer_and_batch(dims, root)
    extra = {"metadata.json": "", "inference.json": ""}
    ts = torch.jit.load(str(root / "models" / "model.ts"), _extra_files=extra)
    with torch.no_grad():
        torch.testing.assert_close(ts(batch), expected, atol=1e-5, rtol=1e-5)
    assert json.loads(extra["metadata.json"])["name"] == "BiGAN anomaly detection"
    assert "scorer" in json.loads(extra["inference.json"])


@needs_onnx
def test_onnx_export_matches_the_scorer(exported):
    import onnx
    import onnxruntime

    dims, root = exported
    _, batch, expected = _scorer_and_batch(dims, root, batch_size=5)  # exported with a batch of 2: dynamic batch
    model = onnx.load(str(root / "models" / "model.onnx"))
    assert model.opset_import[0].version >= 17
    assert json.loads({p.key: p.value for p in model.metadata_props}["metadata.json"])["version"]
    session = onnxruntime.InferenceSession(str(root / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    (maps,) = session.run(None, {"image": batch.numpy()})
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-4, rtol=1e-4)


def test_torchscript_runs_without_monai_or_monai_bigan(exported, tmp_path):
    dims, root = exported
    _, batch, expected = _scorer_and_batch(dims, root)
    torch.save(batch, tmp_path / "batch.pt")
    code = (
        "import sys; sys.modules['monai'] = None; sys.modules['monai_bigan'] = None\n"  # any import of them fails
        "import torch\n"
        f"net = torch.jit.load({str(root / 'models' / 'model.ts')!r}).eval()\n"
        "with torch.no_grad():\n"
        f"    torch.save(net(torch.load({str(tmp_path / 'batch.pt')!r})), {str(tmp_path / 'maps.pt')!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "maps.pt"), expected, atol=1e-5, rtol=1e-5)


def _rows(output_dir: Path) -> list[dict]:
    with open(output_dir / "scores.csv") as f:
        return list(csv.DictReader(f))


def test_bundle_run_from_torchscript_equals_the_checkpoint_run(exported, tiny_dataset, tmp_path):
    dims, root = exported
    overrides = _infer_overrides(dims)
    wf = ConfigWorkflow(
        config_file=CASES[dims]["infer"],
        workflow_type="infer",
        bundle_root=str(root),
        dataset_dir=str(tiny_dataset),
        output_dir=str(tmp_path / "ckpt"),
        **overrides,
    )
    wf.initialize()
    wf.run()
    # the exported model alone: no training checkpoint in this bundle
    ts_root = tmp_path / "ts_bundle"
    (ts_root / "models").mkdir(parents=True)
    for name in ("model.ts", "calibration.json", "residual_statistics.pt"):
        shutil.copy(root / "models" / name, ts_root / "models" / name)
    config_files = json.dumps(CASES[dims]["infer"] + [INFERENCE_TS])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_files, "--bundle_root", str(ts_root)]
    cmd += ["--dataset_dir", str(tiny_dataset), "--output_dir", str(tmp_path / "ts"), "--device", "cpu"]
    proc = subprocess.run(cmd + _cli_overrides(overrides), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt_rows, ts_rows = _rows(tmp_path / "ckpt"), _rows(tmp_path / "ts")
    assert len(ts_rows) == len(ckpt_rows) > 0 and all(r["status"] == "ok" for r in ts_rows)
    for ckpt_row, ts_row in zip(ckpt_rows, ts_rows):
        assert ts_row["input"] == ckpt_row["input"]
        for key in ("score", "score_residual", "score_discriminator", "percentile"):
            assert float(ts_row[key]) == pytest.approx(float(ckpt_row[key]), rel=1e-4, abs=1e-6), key
        assert ts_row["flagged"] == ckpt_row["flagged"] and ts_row["worst_slice"] == ckpt_row["worst_slice"]
        stem = Path(ckpt_row["input"]).name.replace(".nii.gz", "")
        for postfix in ("heatmap", "reconstruction"):
            ckpt_map = nib.load(tmp_path / "ckpt" / f"{stem}_{postfix}.nii.gz")
            ts_map = nib.load(tmp_path / "ts" / f"{stem}_{postfix}.nii.gz")
            np.testing.assert_allclose(ts_map.get_fdata(), ckpt_map.get_fdata(), atol=1e-5, rtol=1e-4)
            np.testing.assert_allclose(ts_map.affine, ckpt_map.affine)


def test_ckpt_export_command_writes_the_scorer(exported, tmp_path):
    """The documented `python -m monai.bundle ckpt_export` command exports the whole scorer, like the export CLI."""
    dims, root = exported
    _, batch, expected = _scorer_and_batch(dims, root)
    config_files = json.dumps(CASES[dims]["infer"])
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "--net_id", "scorer_def", "--key_in_ckpt"]
    cmd += ["ema_network", "--config_file", config_files, "--meta_file", META, "--bundle_root", str(root)]
    cmd += ["--filepath", str(tmp_path / "model.ts")]
    proc = subprocess.run(
        cmd + _cli_overrides(_infer_overrides(dims)), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    extra = {"metadata.json": ""}
    ts = torch.jit.load(str(tmp_path / "model.ts"), _extra_files=extra)
    with torch.no_grad():
        torch.testing.assert_close(ts(batch), expected, atol=1e-5, rtol=1e-5)
    assert json.loads(extra["metadata.json"])["network_data_format"]


def test_export_cli_writes_model_ts(exported, tmp_path):
    dims, root = exported
    cmd = [sys.executable, "-m", "monai_bigan.export", "--bundle_root", str(root), "--format", "torchscript"]
    cmd += ["--config_file", *CASES[dims]["infer"], "--output_dir", str(tmp_path)]
    proc = subprocess.run(
        cmd + _cli_overrides(_infer_overrides(dims)), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the written files, one per line: the model, then the heatmap normalization's statistics it needs
    assert proc.stdout.strip().splitlines()[-2:] == [
        str(tmp_path / "model.ts"),
        str(tmp_path / "residual_statistics.pt"),
    ]
    _, batch, expected = _scorer_and_batch(dims, root)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "model.ts"))(batch), expected, atol=1e-5, rtol=1e-5)


def test_missing_checkpoint_and_bad_format_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt not found"):
        export_bundle(tmp_path, "torchscript")
    with pytest.raises(ValueError, match="format"):
        export_bundle(tmp_path, "tflite")
