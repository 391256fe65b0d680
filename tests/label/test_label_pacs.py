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
The BiGAN app behind a real PACS: Orthanc (DICOMweb) started on 127.0.0.1 with temporary storage, a demo study
uploaded as a DICOM series, `monailabel start_server --studies http://127.0.0.1:PORT/dicom-web`, `/infer` with the
JSON and the DICOM SEG outputs, the SEG, Parametric Map and SR stored in Orthanc, and the SEG shown by the OHIF viewer
that MONAI Label serves at /ohif/, in headless Chromium.

Orthanc, its DICOMweb plugin, Chromium and chromedriver are Debian packages (`.ci/run` installs them, as the README
says); outside CI a missing one skips these tests with its name, in CI it fails them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import urllib.parse
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

if os.environ.get("CI") != "true":  # CI installs the label extra (README test command): never skip there
    pytest.importorskip("monailabel", reason="monailabel is not installed (see the README, section MONAI Label)")

from monai_bigan.data.dicomweb import list_series, upload  # noqa: E402
from monai_bigan.io.dicom import write_dicom_series  # noqa: E402
from tests.label.server import label_server, logs, request  # noqa: E402

SCORE_KEYS = ("score", "score_residual", "score_discriminator", "percentile", "flagged", "threshold")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: the study panel's entry of the SEG series
SEG_THUMBNAIL = "//*[normalize-space(text())='SEG']"


@pytest.fixture(scope="module")
def pacs_server(tmp_path_factory, orthanc, tiny_dataset, trained_label_bundle):
    """
    Orthanc holding the tiny test subject with a lesion as a DICOM series, and the app serving it; yields
    (app url, study uid, series uid, number of slices, log file).
    """
    workdir = tmp_path_factory.mktemp("label_pacs")
    image = nib.load(tiny_dataset / "test_1.nii.gz")
    series = write_dicom_series(
        np.asarray(image.dataobj),
        image.affine,
        workdir / "series",
        patient_id="BIGAN-PACS-TEST",
        patient_name="Test^Lesion",
        series_description="tiny test subject with a lesion",
    )
    upload(orthanc.dicomweb_url, series)
    first = pydicom.dcmread(str(series[0]), stop_before_pixels=True)
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    with label_server(workdir, orthanc.dicomweb_url, trained_label_bundle) as (base, log_file):
        yield base, study_uid, series_uid, len(series), log_file


def _infer(base: str, series_uid: str, output: str) -> tuple[int, dict, bytes]:
    query = urllib.parse.urlencode({"image": series_uid, "output": output})
    return request(f"{base}/infer/bigan?{query}", data=b"params=%7B%7D")


def _series_in_pacs(orthanc, study_uid: str) -> dict[str, str]:
    """SeriesInstanceUID -> Modality of every series of the study in Orthanc (QIDO-RS)."""
    return {row["series"]: row["modality"] for row in list_series(orthanc.dicomweb_url, [study_uid])}


def test_infer_from_pacs_stores_seg_pmap_and_sr(pacs_server, orthanc):
    base, study_uid, series_uid, _, log_file = pacs_server
    status, _, body = request(f"{base}/datastore/?output=all")
    assert status == 200, body[:300]

    status, _, body = _infer(base, series_uid, "json")
    assert status == 200, f"{body[:500]!r}\n{logs(log_file)}"
    result = json.loads(body)
    assert set(SCORE_KEYS) <= set(result) and np.isfinite(result["score"]), result
    assert "dicom_files" not in result  # server paths never reach the client
    dicom = result["dicom"]
    assert dicom["stored"] is True, dicom
    in_pacs = _series_in_pacs(orthanc, study_uid)
    for kind, modality in (("seg", "SEG"), ("pmap", "OT"), ("sr", "SR")):
        assert dicom[kind]["StudyInstanceUID"] == study_uid, dicom
        assert in_pacs.get(dicom[kind]["SeriesInstanceUID"]) == modality, (kind, in_pacs)

    status, headers, body = _infer(base, series_uid, "dicom_seg")
    assert status == 200, f"{body[:500]!r}\n{logs(log_file)}"
    assert "application/dicom" in next(v for k, v in headers.items() if k.lower() == "content-type")
    seg = pydicom.dcmread(io.BytesIO(body))
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == study_uid
    referenced = {str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence}
    assert referenced == {series_uid}
    assert seg.SegmentSequence[0].SegmentLabel == "anomaly"
    # the SEG that came back is the one stored in the PACS
    assert _series_in_pacs(orthanc, study_uid).get(str(seg.SeriesInstanceUID)) == "SEG"


def test_dicom_seg_of_a_series_the_pacs_does_not_hold_is_404(pacs_server):
    base, _, _, _, _ = pacs_server
    status, _, body = _infer(base, "1.2.3.4.5.6.7.8.9", "dicom_seg")
    assert status == 404, body[:300]


# ---------------------------------------------------------------------------------------------------------- viewer
def _viewer_missing() -> str | None:
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not Path(tool).is_file():
            return f"{tool} is not installed (Debian packages chromium and chromium-driver, see the README)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the test extra)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _viewer_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: CI must run the viewer test.")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    options.add_argument("--force-device-scale-factor=1")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _wait_for(driver, xpath: str, timeout: float = 90.0) -> list:
    """The elements matching ``xpath`` once there are any (fails after ``timeout`` seconds)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = driver.find_elements(By.XPATH, xpath)
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"OHIF did not show {xpath} within {timeout} s; page text: {driver.page_source[-2000:]}")


def _overlay_pixels(png: bytes) -> int:
    """Pixels of a viewport screenshot coloured by a (red) segmentation overlay: red well above green and blue."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((red - green > 40) & (red - blue > 40)).sum())


def _click(driver, xpath: str, double: bool = False, timeout: float = 90.0) -> None:
    """Clicks the first element matching ``xpath``, found again when React re-rendered it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains

    deadline = time.monotonic() + timeout
    while True:
        element = _wait_for(driver, xpath, timeout)[0]
        try:
            if double:
                ActionChains(driver).double_click(element).perform()
            else:
                element.click()
            return
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _canvas(driver):
    """The viewport's canvas (found again each time: OHIF replaces it when the layout changes)."""
    return _wait_for(driver, "//canvas[contains(@class, 'cornerstone-canvas')]")[0]


def _scan_slices(driver, num_slices: int) -> tuple[int, bytes]:
    """Steps through every slice of the viewport; returns the most overlay pixels on one slice and its screenshot."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(driver).move_to_element(_canvas(driver)).click().perform()
    for _ in range(num_slices):  # to the first slice, whichever end the viewer starts from
        ActionChains(driver).send_keys(Keys.ARROW_UP).perform()
    best, best_png = -1, b""
    for _ in range(num_slices):
        time.sleep(0.3)
        count = _overlay_pixels(_canvas(driver).screenshot_as_png)
        if count > best:
            best, best_png = count, driver.get_screenshot_as_png()
        ActionChains(driver).send_keys(Keys.ARROW_DOWN).perform()
    return best, best_png


def test_ohif_shows_the_anomaly_seg_over_the_study(pacs_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, study_uid, series_uid, num_slices, log_file = pacs_server
    status, _, body = _infer(base, series_uid, "json")
    assert status == 200, f"{body[:500]!r}\n{logs(log_file)}"
    result = json.loads(body)
    assert result["mask_voxels"] > 0, f"the tiny model found no anomalous voxel to show: {result}"

    browser.get(f"{base}/ohif/viewer?StudyInstanceUIDs={study_uid}")
    for button in browser.find_elements(By.XPATH, "//button[contains(., 'Confirm and Hide')]"):
        button.click()  # OHIF's "investigational use" banner covers the bottom of the viewport
    _canvas(browser)
    _wait_for(browser, SEG_THUMBNAIL)
    time.sleep(2)
    before, _ = _scan_slices(browser, num_slices)

    _click(browser, SEG_THUMBNAIL, double=True)  # OHIF shows the SEG over its series, and offers to load it
    _click(browser, "//*[normalize-space(text())='LOAD']")
    time.sleep(3)
    after, screenshot = _scan_slices(browser, num_slices)
    (tmp_path / "ohif_anomaly_seg.png").write_bytes(screenshot)
    keep = os.environ.get("MONAI_BIGAN_SCREENSHOT_DIR")  # README screenshots: opt in with a folder
    if keep:
        shutil.copy(tmp_path / "ohif_anomaly_seg.png", Path(keep) / "ohif_anomaly_seg.png")
    assert before < 50, f"red pixels before the SEG was loaded: {before}"
    assert after > before + 200, f"the SEG overlay did not render: {after} red pixels after LOAD, {before} before"
