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
"""DICOMweb against a real Orthanc: STOW-RS upload, QIDO-RS listing, WADO-RS download into a cache, errors, CLI."""

from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from monai.transforms import LoadImage
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from monai_bigan.data import GuardedDataset, inference_datalist
from monai_bigan.data.dicomweb import (
    CACHE_DIRNAME,
    DICOMwebError,
    dicomweb_datalist,
    inference_inputs,
    list_series,
    main,
    orthanc_config,
    upload,
)
from monai_bigan.data.guarded import ERROR_KEY, SOURCE_KEY
from monai_bigan.io.dicom import write_dicom_series
from tests.io.test_dicom import assert_same_in_world


def dicom_series_of(nifti: Path, folder: Path, study_uid: str, patient_id: str = "TINY") -> list[Path]:
    """The volume of a NIfTI file of the tiny data set, written as a DICOM series of the study ``study_uid``."""
    image = nib.load(nifti)
    return write_dicom_series(
        image.get_fdata(dtype=np.float32),
        image.affine,
        folder,
        patient_id=patient_id,
        study_instance_uid=study_uid,
        series_description=nifti.name,
    )


def upload_tiny_study(url: str, tiny_dataset: Path, folder: Path, names=("test_0", "test_1")) -> tuple[str, dict]:
    """Upload test volumes of the tiny data set as the series of one new study; the study UID and name -> series UID."""
    study = generate_uid()
    series = {}
    for name in names:
        files = dicom_series_of(tiny_dataset / f"{name}.nii.gz", folder / name, study)
        upload(url, [folder / name])
        series[name] = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    return study, series


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/dicom-web"  # nothing listens there once the socket is closed


@pytest.fixture(scope="module")
def tiny_study(orthanc, tiny_dataset, tmp_path_factory):
    return upload_tiny_study(orthanc.dicomweb_url, tiny_dataset, tmp_path_factory.mktemp("tiny_series"))


def test_orthanc_config_is_local_without_authentication_and_serves_dicomweb(tmp_path, capsys):
    config = orthanc_config(tmp_path / "db", http_port=8100, dicom_port=4300, plugins=["/p/libOrthancDicomWeb.so"])
    assert config["StorageDirectory"] == config["IndexDirectory"] == str((tmp_path / "db").absolute())
    assert (config["HttpPort"], config["DicomPort"]) == (8100, 4300)
    assert config["RemoteAccessAllowed"] is False and config["AuthenticationEnabled"] is False
    assert config["DicomWeb"]["Enable"] is True and config["DicomWeb"]["Root"] == "/dicom-web/"
    assert config["Plugins"] == ["/p/libOrthancDicomWeb.so"]
    with pytest.raises(ValueError, match="http_port"):
        orthanc_config(tmp_path, http_port=70000)
    command = ["orthanc-config", "--storage", str(tmp_path / "db"), "--http-port", "8100", "--dicom-port", "4300"]
    assert main([*command, "--plugin", "/p/libOrthancDicomWeb.so"]) == 0
    assert json.loads(capsys.readouterr().out) == config
    assert config["DicomServerEnabled"] is True  # scanners may send by DICOM; --no-dicom leaves DICOMweb only
    assert main([*command, "--plugin", "/p/libOrthancDicomWeb.so", "--no-dicom"]) == 0
    assert json.loads(capsys.readouterr().out)["DicomServerEnabled"] is False


def test_the_tests_orthanc_serves_dicomweb_only(orthanc):
    # the DICOM port would listen on every interface (Orthanc cannot bind it to one address): the tests turn it off
    config = json.loads((orthanc.log_file.parent / "orthanc.json").read_text())
    assert config["DicomServerEnabled"] is False and config["RemoteAccessAllowed"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", config["DicomPort"]), timeout=5).close()


def test_upload_returns_the_stored_instances_and_list_shows_the_series(orthanc, tiny_study):
    study, series = tiny_study
    rows = [r for r in list_series(orthanc.dicomweb_url) if r["study"] == study]
    assert sorted(r["series"] for r in rows) == sorted(series.values())
    assert {r["modality"] for r in rows} == {"MR"} and {r["instances"] for r in rows} == {"20"}
    assert list_series(orthanc.dicomweb_url, [study]) == rows


def test_upload_sends_files_and_folders_and_names_the_file_the_server_refuses(orthanc, tmp_path):
    template = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    template.StudyInstanceUID, template.SeriesInstanceUID = generate_uid(), generate_uid()
    folder = tmp_path / "series"
    folder.mkdir()
    uids = []
    for i in range(3):
        ds = copy.deepcopy(template)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.save_as(folder / f"{i}.dcm")
        uids.append(str(ds.SOPInstanceUID))
    (folder / "notes.txt").write_text("not DICOM: left out of a folder")
    stored = upload(orthanc.dicomweb_url, [folder / "0.dcm", folder])
    assert stored == [uids[0], *uids]
    # a file without a SOP Instance UID: Orthanc answers 400, the error names the file and the answer
    broken = copy.deepcopy(template)
    del broken.SOPInstanceUID
    broken.save_as(tmp_path / "broken.dcm")
    with pytest.raises(DICOMwebError, match=r"broken\.dcm.*HTTP 400"):
        upload(orthanc.dicomweb_url, [folder / "1.dcm", tmp_path / "broken.dcm"], batch_size=8)
    # nothing is sent when one path is not DICOM or missing
    with pytest.raises(ValueError, match=r"notes\.txt: not a readable DICOM file"):
        upload(orthanc.dicomweb_url, [folder / "notes.txt"])
    with pytest.raises(FileNotFoundError, match="missing.dcm"):
        upload(orthanc.dicomweb_url, [tmp_path / "missing.dcm"])
    with pytest.raises(DICOMwebError, match="cannot reach the DICOMweb server"):
        upload(_dead_url(), [folder])


def test_datalist_downloads_each_series_once_into_its_cache_folder(
    orthanc, tiny_study, tiny_dataset, tmp_path, monkeypatch
):
    study, series = tiny_study
    cache = tmp_path / "cache"
    items = dicomweb_datalist(orthanc.dicomweb_url, cache, studies=[study])
    assert [(i["study"], i["series"]) for i in items] == sorted((study, s) for s in series.values())
    for item in items:
        assert Path(item["image"]) == cache / study / item["series"] and ERROR_KEY not in item
    # the downloaded series is the tiny data set volume
    (first,) = [i["image"] for i in items if i["series"] == series["test_0"]]
    image = LoadImage(image_only=True)(first)
    expected = nib.load(tiny_dataset / "test_0.nii.gz")
    # the series is laid out as a scanner's (LPS): compare voxel by voxel in world space
    tolerance = 0.05 * float(expected.get_fdata().max())
    assert_same_in_world(image, image.affine, expected.get_fdata(), expected.affine, atol=tolerance)
    assert not [p for p in (cache / study).iterdir() if p.name.endswith(".partial")]
    mtimes = {p: p.stat().st_mtime_ns for p in cache.rglob("*.dcm")}

    # a rerun reuses the complete folders: no instance is retrieved again
    def no_download(*args, **kwargs):
        raise AssertionError("a cached series was downloaded again")

    with monkeypatch.context() as patch:
        patch.setattr(DICOMwebClient, "iter_series", no_download)
        assert dicomweb_datalist(orthanc.dicomweb_url, cache, studies=study) == items
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.dcm")} == mtimes
    # an incomplete folder (an instance lost) is fetched again
    next(iter(mtimes)).unlink()
    assert dicomweb_datalist(orthanc.dicomweb_url, cache, studies=[study]) == items
    assert len(list(cache.rglob("*.dcm"))) == len(mtimes)


def test_a_bad_series_or_study_uid_gives_one_error_item_and_the_others_are_kept(orthanc, tiny_study, tmp_path):
    study, series = tiny_study
    items = dicomweb_datalist(orthanc.dicomweb_url, tmp_path, series=[series["test_1"], "1.2.3.999"])
    assert [i["series"] for i in items if ERROR_KEY not in i] == [series["test_1"]]
    (bad,) = [i for i in items if ERROR_KEY in i]
    assert "series 1.2.3.999" in bad[ERROR_KEY] and "not found on the server" in bad[ERROR_KEY]
    assert orthanc.dicomweb_url in bad[ERROR_KEY]
    # GuardedDataset makes it an error item without loading anything; the report makes it one error row
    loaded = GuardedDataset([bad], transform=lambda d: 1 / 0)[0]
    assert loaded == {ERROR_KEY: bad[ERROR_KEY], SOURCE_KEY: bad["image"]}
    items = dicomweb_datalist(orthanc.dicomweb_url, tmp_path, studies=[study, "1.2.3.998"])
    (bad,) = [i for i in items if ERROR_KEY in i]
    assert "study 1.2.3.998" in bad[ERROR_KEY] and "not found" in bad[ERROR_KEY] and len(items) == 3


def test_series_that_hold_no_scan_are_skipped_unless_asked_for(orthanc, tmp_path, caplog):
    study = generate_uid()
    template = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    kinds = {"MR": None, "SEG": "1.2.840.10008.5.1.4.1.1.66.4", "OT": "1.2.840.10008.5.1.4.1.1.30"}
    uids = {}
    for modality, sop_class in kinds.items():
        ds = copy.deepcopy(template)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, generate_uid(), generate_uid()
        ds.Modality = modality
        if sop_class:  # a segmentation, and a parametric map (modality OT): no image storage class
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.save_as(tmp_path / f"{modality}.dcm")
        uids[modality] = str(ds.SeriesInstanceUID)
    upload(orthanc.dicomweb_url, sorted(tmp_path.glob("*.dcm")))
    with caplog.at_level("INFO", logger="monai_bigan.data.dicomweb"):
        items = dicomweb_datalist(orthanc.dicomweb_url, tmp_path / "cache", studies=[study])
    assert [i["series"] for i in items] == [uids["MR"]]
    assert f"skipped SEG series {uids['SEG']}" in caplog.text and "Parametric Map Storage" in caplog.text
    items = dicomweb_datalist(orthanc.dicomweb_url, tmp_path / "cache", series=[uids["SEG"], uids["OT"]])
    assert [ERROR_KEY in i for i in items] == [True, True]
    assert any("not an image series (modality SEG)" in i[ERROR_KEY] for i in items)
    assert any("not an image series (Parametric Map Storage)" in i[ERROR_KEY] for i in items)


def test_an_unreachable_server_is_one_clear_error_before_anything_is_scored(orthanc, tmp_path):
    url = _dead_url()
    with pytest.raises(DICOMwebError, match=f"cannot reach the DICOMweb server {url}") as raised:
        dicomweb_datalist(url, tmp_path / "cache")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no traceback of requests
    assert not (tmp_path / "cache").exists()
    with pytest.raises(DICOMwebError, match="not a DICOMweb root"):
        dicomweb_datalist(orthanc.url + "/no-such-root", tmp_path / "cache")


def test_inference_inputs_reads_files_or_the_pacs_into_the_output_folder(orthanc, tiny_study, tiny_dataset, tmp_path):
    assert inference_inputs(tiny_dataset, "test", tmp_path / "out") == inference_datalist(tiny_dataset, "test")
    with pytest.raises(ValueError, match="set --dicomweb_url"):
        inference_inputs(tiny_dataset, "test", tmp_path / "out", studies=["1.2.3"])
    with pytest.raises(ValueError, match="needs an --output_dir"):
        inference_inputs(None, dicomweb_url=orthanc.dicomweb_url)
    study, series = tiny_study
    # UIDs as the command line gives them: one string, separated by commas
    items = inference_inputs("/no/dataset", "test", tmp_path / "out", orthanc.dicomweb_url, study, "")
    assert {i["series"] for i in items} == set(series.values())
    assert all(Path(i["image"]).parent == tmp_path / "out" / CACHE_DIRNAME / study for i in items)


def test_cli_uploads_nifti_as_dicom_lists_and_reports_errors_in_one_line(orthanc, tiny_dataset, capsys):
    before = {r["series"] for r in list_series(orthanc.dicomweb_url)}
    assert main(["upload", "--url", orthanc.dicomweb_url, str(tiny_dataset / "validation_0.nii.gz")]) == 0
    assert "stored 20 instances" in capsys.readouterr().out
    (new,) = [r for r in list_series(orthanc.dicomweb_url) if r["series"] not in before]
    assert new["description"].startswith("validation_0") and new["patient"] == "validation_0"
    assert main(["list", "--url", orthanc.dicomweb_url]) == 0
    table = capsys.readouterr().out
    assert new["series"] in table and table.splitlines()[0].split()[:3] == ["patient", "study", "series"]
    assert main(["list", "--url", orthanc.dicomweb_url, "--json"]) == 0
    assert new in json.loads(capsys.readouterr().out)
    url = _dead_url()
    assert main(["list", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the DICOMweb server {url}") and "Traceback" not in err
    assert main(["upload", "--url", orthanc.dicomweb_url, os.devnull + "_missing"]) == 1
    assert "file or folder not found" in capsys.readouterr().err


def test_upload_sends_normalised_nifti_intensities_in_a_range_viewers_can_window(tmp_path):
    from monai_bigan.data.dicomweb import _nifti_to_dicom

    volume = np.random.default_rng(0).random((8, 9, 4)).astype(np.float32)  # intensities normalised to [0, 1]
    nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "normalised.nii.gz")
    files = _nifti_to_dicom(tmp_path / "normalised.nii.gz", tmp_path / "series")
    first = pydicom.dcmread(str(files[0]))
    assert float(first.WindowWidth) > 1000  # OHIF rounds window settings to integers: [0, 1] would show as white
    stored = LoadImage(image_only=True)(str(tmp_path / "series" / "normalised"))
    np.testing.assert_allclose([float(stored.min()), float(stored.max())], [0.0, 4095.0], atol=0.1)
    # scanner-like integer intensities are sent as they are
    nib.save(nib.Nifti1Image((volume * 300).round(), np.eye(4)), tmp_path / "integers.nii.gz")
    files = _nifti_to_dicom(tmp_path / "integers.nii.gz", tmp_path / "series")
    assert float(LoadImage(image_only=True)(str(files[0].parent)).max()) == float((volume * 300).round().max())
