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
"""Distributed inference bundle: two CPU processes with gloo, launched by torchrun as the README says."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from monai_bigan.data import MANIFEST_FILENAME, RECORDS_DIRNAME
from tests.bundle.test_inference_bundle import (  # noqa: F401 (fixture)
    INFERENCE,
    TINY_INFER,
    _chain_text,
    _infer,
    trained_bundle,
)
from tests.conftest import REPO_ROOT

MULTI_GPU_INFERENCE = str(REPO_ROOT / "bundles" / "bigan" / "multi_gpu_inference.json")


def _torchrun(bundle_root, dataset_dir, output_dir) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", json.dumps([INFERENCE, MULTI_GPU_INFERENCE])]
    cmd += ["--bundle_root", str(bundle_root), "--dataset_dir", str(dataset_dir), "--output_dir", str(output_dir)]
    cmd += ["--device", "cpu"]
    for key, value in TINY_INFER.items():
        cmd += [f"--{key}", json.dumps(value)]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def _rows(output_dir):
    with open(output_dir / "scores.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def inputs(tmp_path, tiny_dataset):
    """5 inputs (an odd number: the ranks get 3 and 2), two with the same name in two folders, one corrupt."""
    folder = tmp_path / "inputs"
    for sub in ("site_a", "site_b"):
        (folder / sub).mkdir(parents=True)
    shutil.copy(tiny_dataset / "test_0.nii.gz", folder / "site_a" / "scan.nii.gz")
    shutil.copy(tiny_dataset / "test_1.nii.gz", folder / "site_b" / "scan.nii.gz")
    shutil.copy(tiny_dataset / "validation_0.nii.gz", folder / "site_a" / "other.nii.gz")
    shutil.copy(tiny_dataset / "validation_1.nii.gz", folder / "site_b" / "other.nii.gz")
    (folder / "site_b" / "corrupt.nii.gz").write_bytes(b"not a nifti file")
    return folder


def test_two_processes_write_the_report_of_a_single_process(trained_bundle, inputs, tmp_path):  # noqa: F811
    single = tmp_path / "single"
    _, run = _infer(trained_bundle, inputs, single, device="cpu")
    with pytest.raises(Exception) as info:
        run()
    assert "1 of 5 inputs could not be scored" in _chain_text(info.value)

    multi = tmp_path / "multi"
    proc = _torchrun(trained_bundle, inputs, multi)
    log = proc.stdout + proc.stderr
    # the corrupt input fails the command (on rank 0, which reports every rank's inputs), after the report is written
    assert proc.returncode != 0 and "1 of 5 inputs could not be scored" in log, log[-4000:]
    assert log.count("could not be scored") == 1, log[-4000:]

    expected, merged = _rows(single), _rows(multi)
    # every input exactly once, in the batch's order, error row included, with the outputs of a single process
    assert [r["input"] for r in merged] == [r["input"] for r in expected]
    assert len({r["input"] for r in merged}) == 5
    assert [r["output"] for r in merged] == [
        "site_a/other",
        "site_a/scan",
        "site_b/corrupt",
        "site_b/other",
        "site_b/scan",
    ]
    for got, want in zip(merged, expected):
        assert got["status"] == want["status"] and got["flagged"] == want["flagged"], got
        assert got["worst_slice"] == want["worst_slice"]
        for key in ("score", "score_residual", "score_discriminator", "percentile", "threshold"):
            if want[key]:
                assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-5, abs=1e-7), key
    assert json.loads((multi / "scores.json").read_text())[2]["status"] == "error"
    # the same files, one record per input, one manifest, and nothing left over by a rank
    files = {p.relative_to(multi).as_posix() for p in multi.rglob("*") if p.is_file()}
    assert files == {p.relative_to(single).as_posix() for p in single.rglob("*") if p.is_file()}
    assert MANIFEST_FILENAME in files and len([f for f in files if f.startswith(RECORDS_DIRNAME + "/")]) == 5
    assert not [f for f in files if f.split("/")[-1].startswith(".")]

    # the corrupt scan is replaced: a rerun scores it alone (one rank has nothing to score) and reports all five
    shutil.copy(inputs / "site_a" / "scan.nii.gz", inputs / "site_b" / "corrupt.nii.gz")
    proc = _torchrun(trained_bundle, inputs, multi)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "4 of 5 inputs already scored with this model and these settings are skipped, 1 to score" in log
    assert "nothing to score in this run" in log
    rows = _rows(multi)
    assert [r["input"] for r in rows] == [r["input"] for r in expected] and {r["status"] for r in rows} == {"ok"}
    assert rows[2]["score"] == rows[1]["score"] and (multi / "site_b" / "corrupt_heatmap.nii.gz").is_file()
