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
"""StowHandler and the inference bundle against a real Orthanc: scoring the series of a PACS, sending results back."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from ignite.engine import Engine
from monai.data import MetaTensor
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from monai_bigan.data import InferenceBatch, inference_datalist
from monai_bigan.data.dicomweb import CACHE_DIRNAME
from monai_bigan.handlers import AnomalyReportHandler, StowHandler
from tests.bundle.test_inference_bundle import (  # noqa: F401 (the module's fixture)
    _chain_text,
    _infer,
    _rows,
    trained_bundle,
)
from tests.data.test_dicomweb import upload_tiny_study


def _instances(tmp_path, name: str, count: int = 2, sop_instance_uid: bool = True) -> list:
    """``count`` DICOM files of one new series (copies of pydicom's MR_small.dcm), optionally without their UID."""
    template = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    template.StudyInstanceUID, template.SeriesInstanceUID = generate_uid(), generate_uid()
    files = []
    for i in range(count):
        ds = copy.deepcopy(template)
        ds.SOPInstanceUID = generate_uid()
        if not sop_instance_uid:
            del ds.SOPInstanceUID
        files.append(tmp_path / f"{name}_{i}.dcm")
        ds.save_as(files[-1])
    return files


def _item(source, dicom_outputs=None) -> dict:
    """An evaluator output item of the input ``source`` that the bundle's DICOM writer gave ``dicom_outputs``."""
    item = {"image": MetaTensor(np.zeros((1, 2, 2), np.float32), meta={"filename_or_obj": str(source)}), "score": 0.5}
    if dicom_outputs is not None:
        item["dicom_outputs"] = [str(f) for f in dicom_outputs]
    return item


def _run(items, *handlers) -> Engine:
    engine = Engine(lambda engine, item: [item])
    for handler in handlers:
        handler.attach(engine)
    engine.run(items, max_epochs=1)
    return engine


def _series_uids(orthanc, study: str, modality: str | None = None) -> list[str]:
    client = DICOMwebClient(orthanc.dicomweb_url)
    filters = {"Modality": modality} if modality else None
    found = client.search_for_series(study_instance_uid=study, search_filters=filters)
    return [str(pydicom.Dataset.from_json(s).SeriesInstanceUID) for s in found]


def test_sends_the_dicom_outputs_of_each_input_and_a_refused_one_is_an_error_row_retried(orthanc, tmp_path):
    inputs = [tmp_path / "case_a.nii.gz", tmp_path / "case_b.nii.gz"]
    good = _instances(tmp_path, "good")
    broken = _instances(tmp_path, "broken", count=1, sop_instance_uid=False)
    out = tmp_path / "out"
    batch = InferenceBatch(out, [{"image": str(p)} for p in inputs]).prepare()
    stow = StowHandler(orthanc.dicomweb_url)
    report = AnomalyReportHandler(batch=batch)
    engine = _run([_item(inputs[0], good), _item(inputs[1], broken)], stow, report)
    rows = {row["input"]: row for row in report.rows}
    assert rows[str(inputs[0])]["status"] == "ok"
    sent = pydicom.dcmread(good[0])
    assert _series_uids(orthanc, sent.StudyInstanceUID) == [sent.SeriesInstanceUID]
    assert stow.num_sent == 2 and len(engine.state.output[0].get("stow_instances", [])) == 0  # the last item failed
    failed = rows[str(inputs[1])]
    assert (
        failed["status"] == "error"
        and f"sending its DICOM results to {orthanc.dicomweb_url} failed" in failed["message"]
    )
    assert "broken_0.dcm" in failed["message"] and "HTTP 400" in failed["message"]
    # the failed input is not complete: a rerun into the folder scores (and sends) it again, the other one is kept
    assert [item["image"] for item in InferenceBatch(out, batch.inputs).prepare().pending] == [str(inputs[1])]


def test_missing_outputs_or_an_unreachable_server_are_error_rows_that_do_not_stop_the_run(tmp_path):
    stow = StowHandler("http://127.0.0.1:9/dicom-web")
    report = AnomalyReportHandler(output_dir=tmp_path)
    _run([_item(tmp_path / "a.nii.gz"), _item(tmp_path / "b.nii.gz", _instances(tmp_path, "b"))], stow, report)
    assert [row["status"] for row in report.rows] == ["error", "error"]
    assert "no DICOM results to send ('dicom_outputs' is empty or missing)" in report.rows[0]["message"]
    assert "cannot reach the DICOMweb server http://127.0.0.1:9/dicom-web" in report.rows[1]["message"]
    assert report.rows[1]["message"].startswith(str(tmp_path / "b.nii.gz"))


def test_disabled_attaches_nothing_and_enabled_needs_a_url(tmp_path):
    engine = Engine(lambda engine, item: [item])
    StowHandler(None, enabled="false").attach(engine)
    assert not engine.has_event_handler(StowHandler)
    with pytest.raises(ValueError, match="set --dicomweb_url"):
        StowHandler(None, enabled=True)


def test_bundle_scores_the_series_of_a_pacs_from_its_cache(trained_bundle, orthanc, tiny_dataset, tmp_path):  # noqa
    study, series = upload_tiny_study(orthanc.dicomweb_url, tiny_dataset, tmp_path / "upload")
    out = tmp_path / "out"
    _, run = _infer(trained_bundle, tiny_dataset, out, dicomweb_url=orthanc.dicomweb_url, dicomweb_studies=[study])
    run()
    rows = _rows(out)
    cache = out / CACHE_DIRNAME / study
    assert sorted(r["input"] for r in rows) == sorted(str(cache / s) for s in series.values())
    assert {r["status"] for r in rows} == {"ok"}, rows
    # each row names the study and the series it was fetched from, not only the cached copy
    assert sorted((r["study"], r["series"]) for r in rows) == sorted((study, s) for s in series.values())
    with open(out / "scores.csv") as f:
        assert f.readline().startswith("input,study,series,output,score")
    for uid in series.values():
        assert (out / f"{uid}_heatmap.nii.gz").is_file()
    # the cache and the outputs are in the output folder, whose manifest keeps them out of a listing of that folder
    with pytest.raises(ValueError, match="holds only results"):
        inference_datalist(out)
    # a bad series UID: one error row naming it, and the good series is scored
    out = tmp_path / "out_bad_series"
    _, run = _infer(
        trained_bundle,
        tiny_dataset,
        out,
        dicomweb_url=orthanc.dicomweb_url,
        dicomweb_series=[series["test_0"], "1.2.3.999"],
    )
    with pytest.raises(RuntimeError) as raised:
        run()
    assert "1 of 2 inputs could not be scored" in _chain_text(raised.value)
    rows = {r["input"].rsplit("/", 1)[-1]: r for r in _rows(out)}
    assert rows[series["test_0"]]["status"] == "ok"
    assert rows["1.2.3.999"]["status"] == "error" and "series 1.2.3.999" in rows["1.2.3.999"]["message"]
    assert "not found on the server" in rows["1.2.3.999"]["message"]


def test_bundle_with_stow_sends_seg_pmap_and_sr_to_the_pacs(trained_bundle, orthanc, tiny_dataset, tmp_path):  # noqa
    study, series = upload_tiny_study(orthanc.dicomweb_url, tiny_dataset, tmp_path / "upload", names=("test_1",))
    out = tmp_path / "out"
    _, run = _infer(
        trained_bundle, tiny_dataset, out, dicomweb_url=orthanc.dicomweb_url, dicomweb_studies=study, stow=True
    )
    run()
    assert {r["status"] for r in _rows(out)} == {"ok"}
    assert len(_series_uids(orthanc, study, "SEG")) == 1 and len(_series_uids(orthanc, study, "SR")) == 1
    assert len(_series_uids(orthanc, study)) == 4  # the scan, its SEG, its parametric map and its SR
    # a rerun scores nothing again, and the results it sent are not scored as scans
    _, run = _infer(
        trained_bundle, tiny_dataset, out, dicomweb_url=orthanc.dicomweb_url, dicomweb_studies=study, stow=True
    )
    run()
    assert [r["input"] for r in _rows(out)] == [str(out / CACHE_DIRNAME / study / series["test_1"])]
