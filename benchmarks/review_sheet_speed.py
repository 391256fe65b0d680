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
Wall-clock time of one review sheet: :py:func:`monai_bigan.visualize.render_review_sheet` on a random 64x64x48 volume
(the default model grid) with a voxel threshold, 4 rows, written as PNG to a temporary folder; best and median of a
few runs after a warm-up.

Run from the repository root:

    python benchmarks/review_sheet_speed.py [--repeats 5] [--num_slices 4] [--shape 64 64 48]

It prints the figures; nothing is written outside the temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from monai_bigan.visualize import render_review_sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num_slices", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 48))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    image = rng.random(tuple(args.shape), dtype=np.float32)
    heatmap = np.abs(image - 0.5)
    inputs = (image, image * 0.9, heatmap, heatmap.mean(axis=(0, 1)))
    kwargs = {
        "title": "benchmark.nii.gz",
        "info_lines": ["scan score 0.25 vs flag threshold 0.3 -> not flagged"],
        "warning_lines": ["percentiles from only 6 healthy scans: coarse"],
        "heatmap_vmax": 0.5,
        "threshold": 0.45,
        "num_slices": args.num_slices,
    }
    with tempfile.TemporaryDirectory() as tmp:
        render_review_sheet(*inputs, Path(tmp) / "warmup.png", **kwargs)
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            render_review_sheet(*inputs, Path(tmp) / f"sheet_{i}.png", **kwargs)
            times.append(time.perf_counter() - start)
    print(f"review sheet, {tuple(args.shape)} volume, {args.num_slices} rows, {args.repeats} runs")
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"best {min(times):.3f} s, median {statistics.median(times):.3f} s per sheet")


if __name__ == "__main__":
    main()
