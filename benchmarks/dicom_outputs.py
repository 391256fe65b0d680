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
What the DICOM outputs of one volume cost: reading the source series, sampling the mask and heatmap on its instances,
building the SEG, Parametric Map and SR with highdicom, and writing them. No model is needed: the source is the MNI152
template that nilearn ships (2 mm, 99 x 117 x 95), written as a DICOM MR series, with a planted spherical "lesion" mask
and a smooth random heatmap.

    python benchmarks/dicom_outputs.py [--repeats 3]

Prints a Markdown table of the median time of each stage.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from monai.transforms import LoadImage
from nilearn import datasets
from scipy.ndimage import gaussian_filter

from monai_bigan.io.dicom import (
    anomaly_segmentation,
    heatmap_parametric_map,
    read_series,
    score_report,
    volume_to_frames,
    write_dataset,
    write_dicom_series,
)

RESULT = {
    "score": 0.66,
    "score_residual": 0.70,
    "score_discriminator": 0.26,
    "percentile": 100.0,
    "flagged": True,
    "threshold": 0.63,
}
MODEL = {"model_name": "monai_bigan BiGAN", "model_version": "benchmark"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # highdicom logs every module it copies
    template = datasets.load_mni152_template(resolution=2)
    volume = np.asarray(template.get_fdata(), np.float32) * 4095
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in volume.shape], indexing="ij"))
    centre = np.array(volume.shape)[:, None, None, None] // 2
    mask = (np.sqrt(((grid - centre) ** 2).sum(0)) < 5).astype(np.uint8)
    heatmap = gaussian_filter(rng.standard_normal(volume.shape), 2).astype(np.float32)
    times: dict[str, list[float]] = {}

    def timed(stage: str, fn, *a, **k):
        start = time.perf_counter()
        out = fn(*a, **k)
        times.setdefault(stage, []).append(time.perf_counter() - start)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        write_dicom_series(volume, template.affine, folder, patient_id="BENCH")
        loaded = LoadImage(image_only=True)(str(folder))  # the input's geometry, as the bundle reads it
        for i in range(args.repeats):
            sources = timed("read the source series (headers)", read_series, folder, stop_before_pixels=True)
            mask_frames, heat_frames = timed(
                "sample mask and heatmap on the instances",
                lambda: (
                    volume_to_frames(mask, template.affine, sources),
                    volume_to_frames(heatmap, template.affine, sources, order=1).astype(np.float32),
                ),
            )
            seg = timed("SEG (highdicom)", anomaly_segmentation, mask_frames > 0, sources, **MODEL)
            pmap = timed(
                "Parametric Map (highdicom)", heatmap_parametric_map, heat_frames, sources, heatmap_label="z", **MODEL
            )
            sr = timed("SR, TID 1500 (highdicom)", score_report, RESULT, sources, segmentation=seg, **MODEL)
            for name, ds in (("seg", seg), ("pmap", pmap), ("sr", sr)):
                timed("write the three files", write_dataset, ds, Path(tmp) / f"{i}_{name}.dcm")
    totals = {stage: statistics.median(v) for stage, v in times.items()}
    totals["write the three files"] = sum(times["write the three files"]) / args.repeats
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; volume {tuple(loaded.shape)}"
        f" ({len(sources)} instances); median of {args.repeats}"
    )
    print("\n| stage | seconds |\n| --- | ---: |")
    for stage, seconds in totals.items():
        print(f"| {stage} | {seconds:.2f} |")
    print(f"| **all** | **{sum(totals.values()):.2f}** |")


if __name__ == "__main__":
    main()
