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
"""Progress bars of the demo data generation, the 2D slices and the input check (written to stderr)."""

from __future__ import annotations

import pytest

from monai_bigan.data import ensure_demo_data, extract_demo_slices, preflight_check
from monai_bigan.data.demo_slices import main as slices_main
from monai_bigan.data.preflight import PROGRESS_MIN_FILES

SMALL = {"num_training": 1, "num_validation": 2, "num_test": 0, "spacing": 4.0}


def test_demo_data_and_slices_show_one_step_per_subject(tmp_path, capsys):
    folder = ensure_demo_data(tmp_path / "demo", **SMALL)
    err = capsys.readouterr().err
    assert "demo data: 100%" in err and "3/3" in err and "subject" in err  # in a log file: first and last lines
    ensure_demo_data(tmp_path / "demo", **SMALL)  # reused: nothing to show
    assert "demo data" not in capsys.readouterr().err

    extract_demo_slices(folder, tmp_path / "demo2d")
    err = capsys.readouterr().err
    assert "demo slices: 100%" in err and "3/3" in err
    assert slices_main(["--source_dir", folder, "--output_dir", str(tmp_path / "quiet"), "--no_progress"]) == 0
    assert "demo slices" not in capsys.readouterr().err


def test_demo_data_without_progress_writes_nothing(tmp_path, capsys):
    ensure_demo_data(tmp_path / "demo", progress=False, **SMALL)
    assert "demo data" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "count, progress, shown",
    [(PROGRESS_MIN_FILES, True, True), (PROGRESS_MIN_FILES - 1, True, False), (PROGRESS_MIN_FILES, False, False)],
)
def test_preflight_shows_progress_for_many_files(count, progress, shown, capsys):
    items = [{"image": f"scan_{i}.nii.gz"} for i in range(count)]
    assert preflight_check(items, lambda item: item, progress=progress) == count
    err = capsys.readouterr().err
    assert ("preflight: 100%" in err and f"{count}/{count}" in err and "file" in err) == shown
    assert shown or err == ""
