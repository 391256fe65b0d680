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
How the cost of scoring an archive and of training grows, on the machine it runs on. Prints Markdown tables.

Run from the repository root with a trained bundle (the README's first command, or any ``--bundle_root``)::

    python benchmarks/archive_scaling.py --bundle_root bundles/bigan [--only processes,size,resume,training]

Parts:

* ``processes``: volumes per second against the number of processes. An archive of copies of the demo test volumes
  (in sub-folders, so names repeat) is scored by ``multi_gpu_inference.json`` under ``torch.distributed.run`` with
  1, 2, ... processes, all outputs written. Each setting runs on ``K`` and ``2K`` volumes; the difference of the two
  wall times gives the steady rate without the start-up (imports, model loading, process group).
* ``size``: seconds per volume by stage at 2 mm and 1 mm (the demo generator at both spacings); the model grid is
  the same, so only loading, inversion and writing grow with the voxels.
* ``resume``: the ``2K`` archive is scored, half of its inputs' outputs are deleted, and the rerun is timed; its log
  says how many inputs it skipped.
* ``training``: seconds per epoch of the bundle's trainer against the number of training scans and the image size
  (validation, logging and progress removed; volumes cached before the clock starts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from inference_speed import stage_times  # noqa: E402

from monai_bigan.data import ensure_demo_data  # noqa: E402

INFERENCE_CONFIGS = "['bundles/bigan/inference.json','bundles/bigan/multi_gpu_inference.json']"


def build_archive(source_dir: str, folder: str, num_volumes: int) -> str:
    """Copies of the test volumes of ``source_dir``, spread over sub-folders so that file names repeat."""
    datalist = json.loads(Path(source_dir, "datalist.json").read_text())
    images = [os.path.join(source_dir, item["image"]) for item in datalist["test"]]
    shutil.rmtree(folder, ignore_errors=True)
    for i in range(num_volumes):
        target = Path(folder, f"site{i // len(images)}", os.path.basename(images[i % len(images)]))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(images[i % len(images)], target)
    return folder


def score_archive(bundle_root: str, archive: str, output_dir: str, processes: int) -> tuple[float, str]:
    """Wall time and log of one distributed inference over ``archive``."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "monai.bundle",
        "run",
        "inferring",
        "--config_file",
        INFERENCE_CONFIGS,
        "--bundle_root",
        bundle_root,
        "--dataset_dir",
        archive,
        "--output_dir",
        output_dir,
    ]  # each rank takes its own device (monai_bigan.bundle.default_device reads LOCAL_RANK)
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // processes)), PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"inference failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return elapsed, result.stdout + result.stderr


def processes_table(args: argparse.Namespace, work: str) -> None:
    print(f"\n### Volumes per second against processes ({args.device}, archive of K={args.volumes} and 2K volumes)\n")
    print("| processes | wall s, K volumes | wall s, 2K volumes | start-up s | steady volumes / s | s / volume |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    archives = {k: build_archive(args.dataset_dir, os.path.join(work, f"archive{k}"), k) for k in (args.volumes,)}
    archives[2 * args.volumes] = build_archive(args.dataset_dir, os.path.join(work, "archive2k"), 2 * args.volumes)
    for processes in args.processes:
        walls = {}
        for k, archive in archives.items():
            out = os.path.join(work, f"out_p{processes}_k{k}")
            shutil.rmtree(out, ignore_errors=True)
            walls[k], _ = score_archive(args.bundle_root, archive, out, processes)
        k1, k2 = sorted(walls)
        per_volume = (walls[k2] - walls[k1]) / (k2 - k1)
        startup = walls[k1] - per_volume * k1
        print(
            f"| {processes} | {walls[k1]:.1f} | {walls[k2]:.1f} | {startup:.1f} | {1 / per_volume:.2f} | "
            f"{per_volume:.3f} |"
        )


def resume_table(args: argparse.Namespace, work: str) -> None:
    archive = build_archive(args.dataset_dir, os.path.join(work, "archive_resume"), 2 * args.volumes)
    out = os.path.join(work, "out_resume")
    shutil.rmtree(out, ignore_errors=True)
    full, _ = score_archive(args.bundle_root, archive, out, 1)
    heatmaps = sorted(Path(out).rglob("*_heatmap.nii.gz"))
    for path in heatmaps[::2]:  # half of the inputs lose an output: they are incomplete
        path.unlink()
    rerun, log = score_archive(args.bundle_root, archive, out, 1)
    skipped = [line.strip() for line in log.splitlines() if "skip" in line.lower()]
    print(f"\n### Resuming an archive of {2 * args.volumes} volumes after deleting half of the heatmaps\n")
    print("| run | wall s |")
    print("| --- | ---: |")
    print(f"| full batch | {full:.1f} |")
    print(f"| rerun, {len(heatmaps[::2])} heatmaps deleted | {rerun:.1f} |")
    print(f"\nlog: {skipped[-1] if skipped else '(no skip line found)'}")


def size_table(args: argparse.Namespace, work: str) -> None:
    print(f"\n### Seconds per volume by stage against voxel size ({args.device}, {args.size_volumes} volumes each)\n")
    rows = {}
    for spacing in (2.0, 1.0):
        data = (
            args.dataset_dir
            if spacing == 2.0
            else ensure_demo_data(
                os.path.join(work, "demo_1mm"),
                spacing=1.0,
                num_training=1,
                num_validation=1,
                num_test=args.size_volumes + 1,
            )
        )
        rows[spacing] = stage_times(
            bundle_root=args.bundle_root, dataset_dir=data, num_volumes=args.size_volumes, device=args.device
        )
    stages = list(rows[2.0][0])
    header = " | ".join(f"{s:g} mm, grid {'×'.join(map(str, rows[s][3]))}" for s in rows)
    print(f"| stage | {header} | ratio 1 mm / 2 mm |")
    print("| --- | ---: | ---: | ---: |")
    for stage in stages + ["total"]:
        values = [sum(rows[s][0].values()) if stage == "total" else rows[s][0][stage] for s in rows]
        print(f"| {stage} | {values[0]:.3f} | {values[1]:.3f} | {values[1] / max(values[0], 1e-9):.1f} |")


def epoch_seconds(num_scans: int, image_size: int | None, device: str, epochs: int = 2) -> tuple[float, int]:
    """Seconds per epoch of the bundle's trainer on the first ``num_scans`` training scans."""
    from monai_bigan.bundle import bundle_config_parser

    config = bundle_config_parser("bundles/bigan/train.json")
    config["device"] = f"$torch.device('{device}')"
    config["max_epochs"] = epochs
    config["healthy_datalist"] = f"$monai_bigan.data.load_datalist(@dataset_dir, 'training')[:{num_scans}]"
    if image_size is not None:
        config["image_size"] = [image_size, image_size]
    config["train#handlers"] = []  # no validation, logging or progress bar: the training loop and its loader only
    config["train#dataset#progress"] = False
    trainer = config.get_parsed_content("train#trainer")  # caches the volumes before the clock starts
    trainer.logger.setLevel("WARNING")
    start = time.perf_counter()
    trainer.run()
    return (time.perf_counter() - start) / epochs, trainer.state.epoch_length


def training_table(args: argparse.Namespace) -> None:
    print(f"\n### Training seconds per epoch ({args.device}; batch 4 scans × 8 slices)\n")
    print("| training scans | image size | iterations / epoch | s / epoch | s / scan |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for num_scans in args.scans:
        seconds, length = epoch_seconds(num_scans, None, args.device)
        print(f"| {num_scans} | 64×64 (default) | {length} | {seconds:.2f} | {seconds / num_scans:.3f} |")
    for size in args.image_sizes:
        seconds, length = epoch_seconds(max(args.scans), size, args.device)
        print(f"| {max(args.scans)} | {size}×{size} | {length} | {seconds:.2f} | {seconds / max(args.scans):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle_root", default="bundles/bigan", help="folder holding the trained models/")
    parser.add_argument("--dataset_dir", default="bundles/bigan/data/demo", help="the 2 mm demo data set")
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--volumes", type=int, default=12, help="K: the archive sizes are K and 2K volumes")
    parser.add_argument("--processes", default="1,2", help="process counts for the 'processes' part")
    parser.add_argument("--size_volumes", type=int, default=6)
    parser.add_argument("--scans", default="12,24,48", help="training scan counts for the 'training' part")
    parser.add_argument("--image_sizes", default="32,64,128", help="image sizes for the 'training' part")
    parser.add_argument("--only", default="processes,resume,size,training")
    parser.add_argument("--work_dir", default=None, help="scratch folder (default: a new temporary folder)")
    args = parser.parse_args()
    args.processes = [int(p) for p in args.processes.split(",")]
    args.scans = [int(s) for s in args.scans.split(",")]
    args.image_sizes = [int(s) for s in args.image_sizes.split(",")]
    work = args.work_dir or tempfile.mkdtemp(prefix="bigan_scaling_")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )
    parts = args.only.split(",")
    if "processes" in parts:
        processes_table(args, work)
    if "resume" in parts:
        resume_table(args, work)
    if "size" in parts:
        size_table(args, work)
    if "training" in parts:
        training_table(args)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
