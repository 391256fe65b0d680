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
"""The MONAI Label app's DICOM outputs without a server: the infer task writes them only for DICOM series."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pydicom
import pytest

if os.environ.get("CI") != "true":  # CI installs the label extra (README test command): never skip there
    pytest.importorskip("monailabel", reason="monailabel is not installed (see the README, section MONAI Label)")

from monai_bigan.io.dicom import write_dicom_series  # noqa: E402
from monai_bigan.label.dicom import (  # noqa: E402
    DICOM_DIR_KEY,
    DicomOutputFolder,
    dicom_output_summary,
    new_request_folder,
    remove_request_folder,
    seg_file,
)
from monai_bigan.label.infer import BiGANInferTask  # noqa: E402
from monai_bigan.label.workflow import DICOM_FILES_KEY, InferenceModel, LabelBundle  # noqa: E402


@pytest.fixture(scope="module")
def task(trained_label_bundle):
    bundle = LabelBundle.from_conf(trained_label_bundle, {"bundle_root": str(trained_label_bundle)})
    return BiGANInferTask(InferenceModel(bundle), output="mask")


def test_a_dicom_series_gets_seg_pmap_and_sr_and_a_nifti_none(task, tiny_dataset, tmp_path):
    image = nib.load(tiny_dataset / "test_1.nii.gz")
    series = tmp_path / "series"
    write_dicom_series(np.asarray(image.dataobj), image.affine, series, patient_id="LABEL-DICOM")
    folder = new_request_folder()
    try:
        _, result = task({"image": str(series), "device": "cpu", DICOM_DIR_KEY: folder})
        files = result[DICOM_FILES_KEY]
        assert sorted(os.path.basename(f) for f in files) == ["series_pmap.dcm", "series_seg.dcm", "series_sr.dcm"]
        assert all(os.path.dirname(f) == folder for f in files)  # the request's own folder, never the input's
        summary = dicom_output_summary(files)
        study = str(pydicom.dcmread(str(next(series.iterdir())), stop_before_pixels=True).StudyInstanceUID)
        assert {kind: item["Modality"] for kind, item in summary.items()} == {"seg": "SEG", "pmap": "OT", "sr": "SR"}
        assert {item["StudyInstanceUID"] for item in summary.values()} == {study}
        assert seg_file(files).endswith("_seg.dcm")
        # a NIfTI input: nothing to reference, no DICOM objects
        _, result = task({"image": str(tiny_dataset / "test_1.nii.gz"), "device": "cpu", DICOM_DIR_KEY: folder})
        assert DICOM_FILES_KEY not in result
    finally:
        remove_request_folder(folder)
    assert not os.path.exists(folder)


def test_without_a_request_folder_nothing_is_written(task, tiny_dataset, tmp_path):
    image = nib.load(tiny_dataset / "test_0.nii.gz")
    series = tmp_path / "series"
    write_dicom_series(np.asarray(image.dataobj), image.affine, series)
    before = set(tmp_path.rglob("*"))
    _, result = task({"image": str(series), "device": "cpu"})
    assert DICOM_FILES_KEY not in result and set(tmp_path.rglob("*")) == before


def test_output_folder_names_outputs_by_the_input_name(tmp_path):
    outputs = DicomOutputFolder(tmp_path / "req")
    assert outputs.output_path("/data/1.2.3/", "seg", ".dcm") == tmp_path / "req" / "1.2.3_seg.dcm"
    assert (tmp_path / "req").is_dir()
