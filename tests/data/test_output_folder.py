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
Output folders that never collide, never mix and resume: output names, the batch manifest and records, the refusals,
``rescore``, output folders inside input folders; first on hand-made records, then through the inference bundle.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import SaveImaged

from monai_bigan.data import (
    MANIFEST_FILENAME,
    DistributedShareSampler,
    InferenceBatch,
    OutputLayout,
    OutputNames,
    inference_datalist,
    open_inference_batch,
    output_stem,
)
from tests.bundle.test_inference_bundle import _chain_text, _infer, trained_bundle  # noqa: F401 (fixture)

MODEL = {"settings": {"alpha": 0.9}}


def _nifti(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 3), value, np.float32), np.eye(4)), path)
    return path


def _items(*paths: Path) -> list[dict]:
    return [{"image": str(p)} for p in paths]


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "models" / "model.pt"
    path.parent.mkdir()
    path.write_bytes(b"weights v1")
    return path


def _score(batch: InferenceBatch, items: list[dict], status: str = "ok") -> None:
    """What an inference run does per input: write its outputs through the batch's names, then its record."""
    for item in items:
        for postfix in ("heatmap", "mask"):
            batch.output_path(item["image"], postfix, ".nii.gz").write_bytes(b"output")
        row = {"input": item["image"], "output": batch.stem(item["image"]), "score": 0.5, "status": status}
        batch.write_record(row, batch.take_outputs(item["image"]))


# ---------------------------------------------------------------------------------------------------- names
def test_output_names_are_relative_to_the_data_root_and_unique():
    names = OutputNames(
        ["/d/a/scan.nii.gz", "/d/b/scan.nii.gz", "/d/b/case.nii", "/d/b/case.nii.gz", "/d/b/1.2.840.7/", "/d/b/x.PNG"]
    )
    assert names.root == "/d"
    assert names.stems == {
        "/d/a/scan.nii.gz": "a/scan",
        "/d/b/scan.nii.gz": "b/scan",
        "/d/b/case.nii": "b/case.nii",  # same folder and name, other extension: the whole file name
        "/d/b/case.nii.gz": "b/case.nii.gz",
        "/d/b/1.2.840.7": "b/1.2.840.7",  # a DICOM series folder named by its UID keeps its dots
        "/d/b/x.PNG": "b/x",
    }
    # a flat folder (or a single input) gives the file names, as before
    assert OutputNames(["/d/imagesTs/case_1.nii.gz", "/d/imagesTs/case_2.nii.gz"]).stem(
        "/d/imagesTs/case_1.nii.gz"
    ) == ("case_1")
    assert OutputNames(["/d/series_7/"]).stems == {"/d/series_7": "series_7"}
    assert output_stem("/a/b/case_1.nii.gz") == "case_1" and output_stem("/a/b/case_1.nii.gz", "/a") == "b/case_1"
    with pytest.raises(KeyError, match="not an input of this batch"):
        names.stem("/elsewhere/scan.nii.gz")


def test_nifti_writer_and_layout_name_and_record_outputs(tmp_path, model_file):
    inputs = [_nifti(tmp_path / "in" / site / "scan.nii.gz") for site in ("a", "b")]
    batch = InferenceBatch(tmp_path / "out", _items(*inputs))
    save = SaveImaged(
        "pred", folder_layout=OutputLayout(batch, "heatmap", ".nii.gz"), output_ext=".nii.gz", print_log=False
    )
    for path in inputs:
        save({"pred": MetaTensor(torch.rand(1, 4, 4, 3), meta={"filename_or_obj": str(path)})})
    assert (tmp_path / "out" / "a" / "scan_heatmap.nii.gz").is_file()
    assert (tmp_path / "out" / "b" / "scan_heatmap.nii.gz").is_file()
    assert batch.take_outputs(inputs[1]) == [tmp_path / "out" / "b" / "scan_heatmap.nii.gz"]
    assert batch.take_outputs(inputs[1]) == []


# ---------------------------------------------------------------------------------------------------- batches
def test_a_new_folder_gets_a_manifest_and_everything_to_score(tmp_path, model_file):
    inputs = _items(_nifti(tmp_path / "in" / "a.nii.gz"), _nifti(tmp_path / "in" / "b.nii.gz"))
    batch = open_inference_batch(tmp_path / "out", inputs + inputs[:1], [model_file], MODEL)
    assert batch.pending == inputs and batch.num_skipped == 0  # an input listed twice is scored once
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILENAME).read_text())
    assert manifest["model"] == {"model.pt": hashlib.sha256(b"weights v1").hexdigest()}
    assert manifest["settings"] == MODEL and manifest["data_root"] == str(tmp_path / "in")
    assert manifest["inputs"] == [
        {"input": inputs[0]["image"], "output": "a"},
        {"input": inputs[1]["image"], "output": "b"},
    ]


def test_rerun_scores_only_missing_incomplete_or_failed_inputs(tmp_path, model_file):
    inputs = _items(*(_nifti(tmp_path / "in" / f"s{i}.nii.gz") for i in range(4)))
    out = tmp_path / "out"
    batch = open_inference_batch(out, inputs, [model_file], MODEL)
    _score(batch, inputs[:3])
    _score(batch, inputs[3:], status="error")
    (out / "s1_mask.nii.gz").unlink()  # an incomplete result
    again = open_inference_batch(out, inputs, [model_file], MODEL)
    # s0 and s2 are done; s1 lost an output, s3 failed, so both are scored again
    assert again.pending == [inputs[1], inputs[3]] and again.num_skipped == 2
    # the leftovers of the results scored again are gone, the complete ones untouched
    assert not (out / "s1_heatmap.nii.gz").exists() and not (out / "records" / "s3.json").exists()
    assert (out / "s0_heatmap.nii.gz").is_file() and (out / "records" / "s2.json").is_file()
    assert [r and r["row"]["status"] for r in again.records()] == ["ok", None, "ok", None]


@pytest.mark.parametrize(
    "change, message",
    [
        ("model", "holds results of another model (model.pt differ"),
        ("settings", "other settings (settings.alpha 0.9 -> 0.5)"),
        ("inputs", "results of 1 inputs that are not in this batch"),
    ],
)
def test_refuses_to_mix_results(tmp_path, model_file, change, message):
    inputs = _items(*(_nifti(tmp_path / "in" / f"s{i}.nii.gz") for i in range(3)))
    out = tmp_path / "out"
    _score(open_inference_batch(out, inputs, [model_file], MODEL), inputs)
    settings = MODEL
    if change == "model":
        model_file.write_bytes(b"weights v2")
    elif change == "settings":
        settings = {"settings": {"alpha": 0.5}}
    else:
        inputs = inputs[:2]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError) as info:
        open_inference_batch(out, inputs, [model_file], settings)
    text = str(info.value)
    assert message in text and "pass --rescore true" in text and "\n" not in text, text
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched


def test_refuses_a_folder_of_an_older_version(tmp_path, model_file):
    inputs = _items(_nifti(tmp_path / "in" / "a.nii.gz"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scores.csv").write_text("input,score\n")
    for rescore in (False, True):
        with pytest.raises(
            ValueError, match="holds scores.csv but no inference_batch.json: it was written by an older"
        ):
            open_inference_batch(tmp_path / "out", inputs, [model_file], MODEL, rescore=rescore)
    assert (tmp_path / "out" / "scores.csv").read_text() == "input,score\n"


def test_rescore_removes_only_what_the_previous_batch_recorded(tmp_path, model_file):
    inputs = _items(*(_nifti(tmp_path / "in" / site / "scan.nii.gz") for site in ("a", "b")))
    out = tmp_path / "out"
    _score(open_inference_batch(out, inputs, [model_file], MODEL), inputs)
    (out / "scores.csv").write_text("old report")
    (out / "notes.txt").write_text("mine")
    (out / "a" / "mine.txt").write_text("mine too")
    model_file.write_bytes(b"weights v2")
    batch = open_inference_batch(out, inputs[:1], [model_file], MODEL, rescore="true")
    assert batch.pending == inputs[:1]
    remaining = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert remaining == ["a/mine.txt", MANIFEST_FILENAME, "notes.txt"]
    assert not (out / "b").exists() and not (out / "records").exists()  # the folders it emptied are gone


def test_output_folders_inside_an_input_folder_are_not_inputs(tmp_path):
    folder = tmp_path / "scans"
    for name in ("a.nii.gz", "sub/b.nii.gz"):
        _nifti(folder / name)
    _nifti(folder / "results" / "a_heatmap.nii.gz")
    _nifti(folder / "old" / "sub" / "b_heatmap.nii.gz")
    (folder / "old" / MANIFEST_FILENAME).write_text("{}")
    listed = [e["image"] for e in inference_datalist(folder, output_dir=folder / "results")]
    assert listed == [str(folder / "a.nii.gz"), str(folder / "sub" / "b.nii.gz")]
    with pytest.raises(ValueError, match="holds only results of monai_bigan"):
        inference_datalist(folder / "old")
    # the folder itself as output folder is refused by prepare_output_dir, not hidden by the listing
    assert len(inference_datalist(folder, output_dir=folder)) == 3


def test_an_output_folder_holding_dicom_objects_is_not_a_series_to_score(tmp_path):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "scans"
    _nifti(folder / "a.nii.gz")
    # a finished batch with DICOM outputs: the SEG, Parametric Map and SR sit at the top of the output folder
    out = folder / "out"
    out.mkdir()
    for name in ("a_seg.dcm", "a_pmap.dcm", "a_sr.dcm"):
        shutil.copy(get_testdata_file("MR_small.dcm"), out / name)
    (out / MANIFEST_FILENAME).write_text("{}")
    assert [e["image"] for e in inference_datalist(folder)] == [str(folder / "a.nii.gz")]


def test_distributed_share_sampler_gives_every_item_to_one_rank():
    data = list(range(5))
    shares = [list(DistributedShareSampler(data, num_replicas=2, rank=r)) for r in (0, 1)]
    assert shares == [[0, 2, 4], [1, 3]] and len(DistributedShareSampler(data, 2, 1)) == 2
    # fewer items than ranks (a resumed batch): the last ranks get none, where MONAI's sampler refuses
    assert [list(DistributedShareSampler([0], num_replicas=3, rank=r)) for r in range(3)] == [[0], [], []]
    assert list(DistributedShareSampler(data)) == data  # without a process group: everything


# ---------------------------------------------------------------------------------------------------- bundle
def _rows(output_dir: Path) -> list[dict]:
    with open(output_dir / "scores.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def same_names(tmp_path_factory, tiny_dataset) -> Path:
    """A plain folder with two scans of the same file name in two sub-folders."""
    folder = tmp_path_factory.mktemp("same_names")
    for site, source in (("site_a", "test_0"), ("site_b", "test_1")):
        (folder / site).mkdir()
        shutil.copy(tiny_dataset / f"{source}.nii.gz", folder / site / "scan.nii.gz")
    return folder


@pytest.fixture(scope="module")
def first_run(trained_bundle, same_names, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("first") / "out"
    _, run = _infer(trained_bundle, same_names, out)
    run()
    return out


@pytest.fixture
def scored(first_run, tmp_path) -> Path:
    """A copy of the first run's output folder, for a test to rerun into."""
    return Path(shutil.copytree(first_run, tmp_path / "out"))


def test_same_file_names_in_two_folders_get_distinct_outputs_and_rows(first_run, same_names):
    rows = _rows(first_run)
    assert [(r["input"], r["output"]) for r in rows] == [
        (str(same_names / "site_a" / "scan.nii.gz"), "site_a/scan"),
        (str(same_names / "site_b" / "scan.nii.gz"), "site_b/scan"),
    ]
    assert rows[0]["score"] != rows[1]["score"]
    for site in ("site_a", "site_b"):
        for name in ("heatmap.nii.gz", "reconstruction.nii.gz", "mask.nii.gz", "review.png"):
            assert (first_run / site / f"scan_{name}").is_file(), (site, name)
        # each heatmap is its own input's, in its geometry
        assert (
            nib.load(first_run / site / "scan_heatmap.nii.gz").shape
            == nib.load(same_names / site / "scan.nii.gz").shape
        )
    assert not list(first_run.glob("scan_*")), "no flat output may be shared by the two inputs"


def test_rerun_after_losing_outputs_scores_only_those(trained_bundle, same_names, scored):  # noqa: F811
    before = _rows(scored)
    (scored / "site_b" / "scan_review.png").unlink()
    wf, run = _infer(trained_bundle, same_names, scored)
    run()
    batch, report = wf.parser.get_parsed_content("batch"), wf.parser.get_parsed_content("report")
    assert batch.num_skipped == 1 and [p["image"] for p in batch.pending] == [
        str(same_names / "site_b" / "scan.nii.gz")
    ]
    assert report.num_scored == 1
    assert (scored / "site_b" / "scan_review.png").is_file()
    after = _rows(scored)
    assert [r["input"] for r in after] == [r["input"] for r in before]
    assert float(after[1]["score"]) == pytest.approx(float(before[1]["score"]), rel=1e-5)


def test_another_model_refuses_and_rescore_replaces(trained_bundle, same_names, scored, tmp_path):  # noqa: F811
    # a recalibrated model: its percentiles and flags are no longer those of the results in the folder
    other = Path(shutil.copytree(trained_bundle, tmp_path / "other_model"))
    calibration = other / "models" / "calibration.json"
    calibration.write_text(json.dumps(json.loads(calibration.read_text()), indent=1))
    report = (scored / "scores.csv").read_bytes()
    with pytest.raises(Exception) as info:
        _, run = _infer(other, same_names, scored)
        run()
    assert "holds results of another model (calibration.json differ" in _chain_text(info.value)
    assert (scored / "scores.csv").read_bytes() == report

    wf, run = _infer(other, same_names, scored, rescore=True)
    run()
    assert wf.parser.get_parsed_content("batch").num_skipped == 0
    assert wf.parser.get_parsed_content("report").num_scored == 2
    manifest = json.loads((scored / MANIFEST_FILENAME).read_text())
    assert manifest["model"]["calibration.json"] == hashlib.sha256(calibration.read_bytes()).hexdigest()
    assert len(_rows(scored)) == 2


def test_a_failing_rerun_leaves_the_report_as_it_was(trained_bundle, same_names, scored, monkeypatch):  # noqa: F811
    from monai_bigan.engines import AnomalyEvaluator

    report = {name: (scored / name).read_bytes() for name in ("scores.csv", "scores.json")}
    (scored / "site_a" / "scan_heatmap.nii.gz").unlink()

    def broken(self, engine, batchdata):
        raise OSError("disk full")

    monkeypatch.setattr(AnomalyEvaluator, "_iteration", broken)
    with pytest.raises(Exception) as info:
        _, run = _infer(trained_bundle, same_names, scored)
        run()
    assert "disk full" in _chain_text(info.value)
    assert {name: (scored / name).read_bytes() for name in report} == report


def test_an_output_folder_inside_the_input_folder_is_not_scored(trained_bundle, tiny_dataset, tmp_path):  # noqa: F811
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(tiny_dataset / "test_0.nii.gz", scans / "scan.nii.gz")
    for out in ("results", "results_2"):
        _, run = _infer(trained_bundle, scans, scans / out)
        run()
        assert [r["input"] for r in _rows(scans / out)] == [str(scans / "scan.nii.gz")]
