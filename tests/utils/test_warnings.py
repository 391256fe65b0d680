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
"""filter_framework_warnings hides exactly the listed framework messages, from the real MONAI code paths."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from monai_bigan.utils import filter_framework_warnings
from monai_bigan.utils.warnings import FRAMEWORK_LOG_RECORDS, FrameworkMessageFilter

PLUGIN_LOGGER = "monai.data.nvimgcodec_pydicom_plugin"
PLUGIN_MESSAGE = "nvImageCodec is not available; skipping pydicom decoder plugin registration."
READER_MESSAGE = (
    "NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register successfully. "
    "Falling back to default pydicom decoders."
)


@pytest.fixture
def isolated() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning recorded (``always``), without the loggers' framework filters that an earlier bundle run in this
    process installed; the warning filters and the loggers' filters restored afterwards."""
    loggers = {name: list(logging.getLogger(name).filters) for name in FRAMEWORK_LOG_RECORDS}
    for name in FRAMEWORK_LOG_RECORDS:
        logger = logging.getLogger(name)
        logger.filters[:] = [f for f in logger.filters if not isinstance(f, FrameworkMessageFilter)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    for name, filters in loggers.items():
        logging.getLogger(name).filters[:] = filters


def _messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught]


def _nvimgcodec_missing() -> bool:
    from monai.data.nvimgcodec_pydicom_plugin import is_nvimgcodec_available

    return not is_nvimgcodec_available()


def _create_workflow(tmp_path) -> None:
    """MONAI's bundle entry point on a trivial config: it warns that the config is code."""
    from monai.bundle.scripts import create_workflow

    (tmp_path / "config.json").write_text(json.dumps({"run": ["$1"]}))
    (tmp_path / "metadata.json").write_text(json.dumps({"version": "0.0.1"}))
    create_workflow(
        config_file=str(tmp_path / "config.json"),
        meta_file=str(tmp_path / "metadata.json"),
        workflow_type="infer",
        logging_file=False,
    )


def _build_reader() -> None:
    """What every LoadImage(d) does: build the default readers, the nvImageCodec DICOM reader among them."""
    from monai.data import NvImgCodecPydicomReader

    NvImgCodecPydicomReader()


@pytest.mark.skipif(not _nvimgcodec_missing(), reason="nvImageCodec is available: MONAI emits nothing to filter")
def test_the_framework_emits_them_without_the_filter(isolated, caplog, tmp_path):
    """The filtered texts are MONAI's current ones (a change upstream shows here first)."""
    with caplog.at_level(logging.WARNING, logger=PLUGIN_LOGGER):
        _build_reader()
        _create_workflow(tmp_path)
    assert READER_MESSAGE in _messages(isolated)
    assert any(m.startswith("parsing config_file ") for m in _messages(isolated))
    assert PLUGIN_MESSAGE in [r.getMessage() for r in caplog.records if r.name == PLUGIN_LOGGER]


def test_filter_hides_exactly_the_framework_messages(isolated, caplog, tmp_path):
    filter_framework_warnings()
    with caplog.at_level(logging.INFO):
        _build_reader()
        _create_workflow(tmp_path)
        # unrelated messages still show: other text, other category, other module, other log record
        warnings.warn("an unrelated warning")
        warnings.warn(READER_MESSAGE, RuntimeWarning)
        warnings.warn_explicit(READER_MESSAGE, UserWarning, "elsewhere.py", 1, module="my_package.reader")
        warnings.warn_explicit(
            "NvImgCodecPydicomReader ignores to_gpu=True; GPU direct loading is disabled to preserve GPU-accelerated "
            "decompression.",
            UserWarning,
            "image_reader.py",
            1,
            module="monai.data.image_reader",
        )
        logging.getLogger(PLUGIN_LOGGER).warning("nvImageCodec plugin: some other problem")
        logging.getLogger(PLUGIN_LOGGER).warning(PLUGIN_MESSAGE + " And more.")
    messages = _messages(isolated)
    assert not any(m.startswith("parsing config_file ") for m in messages)
    assert [m for m in messages if "nvImageCodec" in m or "NvImgCodec" in m] == [
        READER_MESSAGE,  # RuntimeWarning
        READER_MESSAGE,  # attributed to another module
        "NvImgCodecPydicomReader ignores to_gpu=True; GPU direct loading is disabled to preserve GPU-accelerated "
        "decompression.",
    ]
    assert "an unrelated warning" in messages
    records = [r.getMessage() for r in caplog.records if r.name == PLUGIN_LOGGER]
    assert records == ["nvImageCodec plugin: some other problem", PLUGIN_MESSAGE + " And more."]


def test_the_filter_is_idempotent(isolated):
    filter_framework_warnings()
    before = (len(warnings.filters), len(logging.getLogger(PLUGIN_LOGGER).filters))
    filter_framework_warnings()
    assert (len(warnings.filters), len(logging.getLogger(PLUGIN_LOGGER).filters)) == before
    assert sum(isinstance(f, FrameworkMessageFilter) for f in logging.getLogger(PLUGIN_LOGGER).filters) == 1
