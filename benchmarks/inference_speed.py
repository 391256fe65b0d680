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
Where the time of the inference bundle goes, per volume: loading + preprocessing, the model (slice inferer over the
scorer), scoring + calibration, the PNG review sheet, inversion to the input's space, and writing the NIfTI outputs.

Run from the repository root after training the default bundle:

    python benchmarks/inference_speed.py [--num_volumes 12] [--device cpu|cuda] [--sw_batch_size 128]

It uses bundles/bigan/inference.json as the inference command does and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections import defaultdict

import torch
from monai.data import decollate_batch, list_data_collate
from monai.networks import eval_mode
from monai.transforms import Compose

from monai_bigan.bundle import bundle_config_parser

STAGES = {
    "AnomalyScored": "scoring",
    "ScoreCalibrationd": "scoring",
    "ReviewSheetd": "review sheet (PNG)",
    "SplitDimd": "inversion",
    "Invertd": "inversion",
    "CopyItemsd": "inversion",
    "AsDiscreted": "inversion",
    "SaveImaged": "writing NIfTI",
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage_times(
    config_file: str | list[str] = "bundles/bigan/inference.json",
    bundle_root: str | None = None,
    dataset_dir: str | None = None,
    num_volumes: int = 12,
    device: str = "cpu",
    sw_batch_size: int = 128,
) -> tuple[dict[str, float], int, tuple[int, ...], tuple[int, ...]]:
    """
    Seconds per volume of each inference stage, over ``num_volumes`` inputs after one warm-up volume.

    Returns:
        (seconds per volume by stage, volumes timed, model input grid, input voxel grid of the last volume)
    """
    config = bundle_config_parser(config_file)
    config["device"] = f"$torch.device('{device}')"
    config["sw_batch_size"] = sw_batch_size
    if bundle_root:
        config["bundle_root"] = bundle_root
    if dataset_dir:
        config["dataset_dir"] = dataset_dir
    config["output_dir"] = tempfile.mkdtemp(prefix="bigan_bench_")
    torch_device = config.get_parsed_content("device")
    config.get_parsed_content("trained_model")  # the bundle's loader: weights, statistics and calibration
    scorer = config.get_parsed_content("scorer")
    inferer = config.get_parsed_content("inferer")
    preprocessing = config.get_parsed_content("preprocessing")
    postprocessing = config.get_parsed_content("postprocessing")
    datalist = config.get_parsed_content("datalist")[: num_volumes + 1]
    amp = bool(config.get_parsed_content("use_amp")) and torch_device.type == "cuda"
    amp_kwargs = config.get_parsed_content("amp_kwargs")

    times: dict[str, float] = defaultdict(float)
    for i, item in enumerate(datalist):
        t0 = time.perf_counter()
        data = preprocessing(dict(item))
        batch = list_data_collate([data])
        image = batch["image"].to(torch_device)
        _sync(torch_device)
        t1 = time.perf_counter()
        with eval_mode(scorer), torch.no_grad(), torch.autocast(torch_device.type, enabled=amp, **amp_kwargs):
            pred = inferer(image, scorer)
        _sync(torch_device)
        t2 = time.perf_counter()
        out = decollate_batch({"image": image, "pred": pred})[0]
        if i > 0:  # the first volume warms up allocators and kernels
            times["load + preprocess"] += t1 - t0
            times["model"] += t2 - t1
        for transform in postprocessing.transforms if isinstance(postprocessing, Compose) else [postprocessing]:
            start = time.perf_counter()
            out = transform(out)
            if i > 0:
                times[STAGES.get(type(transform).__name__, type(transform).__name__)] += time.perf_counter() - start
    n = max(len(datalist) - 1, 1)
    input_grid = tuple(int(s) for s in data["image"].meta["spatial_shape"])
    return {k: v / n for k, v in times.items()}, n, tuple(data["image"].shape[1:]), input_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", default="bundles/bigan/inference.json")
    parser.add_argument("--bundle_root", default=None, help="bundle folder holding models/ (default: the bundle's own)")
    parser.add_argument("--dataset_dir", default=None, help="data to score (default: the demo data)")
    parser.add_argument("--num_volumes", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sw_batch_size", type=int, default=128)
    args = parser.parse_args()

    times, n, shape, input_grid = stage_times(
        args.config_file, args.bundle_root, args.dataset_dir, args.num_volumes, args.device, args.sw_batch_size
    )
    total = sum(times.values())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"device: {args.device}, volumes timed: {n} (after 1 warm-up), input grid {input_grid}, model grid {shape}\n")
    print("| stage | seconds per volume | share |")
    print("| --- | ---: | ---: |")
    for stage, seconds in times.items():
        print(f"| {stage} | {seconds:.3f} | {100 * seconds / total:.0f} % |")
    print(f"| **total** | **{total:.3f}** | 100 % |")


if __name__ == "__main__":
    main()
