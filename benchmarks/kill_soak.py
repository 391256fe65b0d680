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
Kill soak of the training bundle: one tiny training, run as ``python -m monai.bundle run training``, is killed with
SIGKILL ``--kills`` times at random moments (seeded delays after each run took the training lock), each time rerun
with the same command, and then left to finish.

A rerun is **unresumable** when a checkpoint had been committed before it (an earlier run logged
``Epoch[N] Complete``, which Ignite logs after the epoch checkpoint is written) and it either starts from scratch or
resumes from an earlier epoch. The figure must be zero; the last run must finish with a ``model.pt`` whose identity
matches ``calibration.json``. Prints a Markdown table line.

Run from the repository root (a tiny NIfTI data set is generated in the work folder):

    python benchmarks/kill_soak.py [--kills 50] [--seed 0] [--max_epochs N] [--work_dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(REPO_ROOT / "bundles" / "bigan" / "train.json")
#: a network and images small enough for an epoch of a fraction of a second on a CPU
TINY = {
    "channels": [4, 8],
    "strides": [2, 2],
    "image_size": [16, 16],
    "num_slices": 12,
    "latent_size": 8,
    "slices_per_volume": 2,
    "batch_size": 2,
    "num_workers": 0,
    "device": "cpu",
}
TIMEOUT = 600


def make_dataset(folder: Path, seed: int = 0) -> Path:
    """Four healthy training volumes and two validation volumes (one with a bright lesion), and their datalist."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in (24, 28, 20)], indexing="ij")
    head = sum((g / 0.8) ** 2 for g in grid) < 1
    datalist: dict[str, list] = {"training": [], "validation": []}
    for split, n in (("training", 4), ("validation", 2)):
        for i in range(n):
            image = np.where(head, 100.0, 0.0) + rng.normal(0, 2, head.shape)
            mask = np.zeros(head.shape, np.uint8)
            label = int(split == "validation" and i == 1)
            if label:
                mask[10:14, 12:16, 8:12] = 1
                image[mask > 0] += 150.0
            name = f"{split}_{i}"
            nib.save(
                nib.Nifti1Image(np.abs(image).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])),
                folder / f"{name}.nii.gz",
            )
            entry = {"image": f"{name}.nii.gz"}
            if split == "validation":
                nib.save(nib.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0])), folder / f"{name}_mask.nii.gz")
                entry.update(label=label, mask=f"{name}_mask.nii.gz")
            datalist[split].append(entry)
    (folder / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return folder


def lock_holder(models: Path) -> int | None:
    """The pid the training lock names, or None."""
    try:
        return int(json.loads((models / ".training.lock").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def launch(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the run's process group; False when it had already ended."""
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def outcome(log_text: str, committed: int) -> str:
    """``resumed``, ``too early`` (killed before it resumed), ``fresh`` (nothing to resume) or ``unresumable``."""
    resumed = re.search(r"resumed from \S+ \(epoch (\d+)", log_text)
    if resumed is not None:
        return "resumed" if int(resumed.group(1)) >= committed else "unresumable"
    if "starts from scratch" in log_text:
        return "unresumable" if committed > 0 else "fresh"
    return "too early"


def trained_epochs(log_text: str) -> list[int]:
    return [int(e) for e in re.findall(r"BiGANTrainer - INFO - Epoch\[(\d+)\] Complete", log_text)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50, help="number of SIGKILLs (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument(
        "--max_epochs", type=int, default=None, help="epochs of the training (default 10 per kill + 20: long enough)"
    )
    parser.add_argument("--min_delay", type=float, default=0.5, help="earliest kill, seconds after the lock is taken")
    parser.add_argument("--max_delay", type=float, default=3.0, help="latest kill, seconds after the lock is taken")
    parser.add_argument("--work_dir", default=None, help="folder of the data, bundle and logs (default: a new one)")
    args = parser.parse_args()
    if args.max_epochs is None:
        args.max_epochs = 10 * args.kills + 20

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="kill_soak_"))
    data = make_dataset(work / "data")
    bundle, models = work / "bundle", work / "bundle" / "models"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN]
    cmd += ["--bundle_root", str(bundle), "--dataset_dir", str(data), "--max_epochs", str(args.max_epochs)]
    for key, value in TINY.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    rng = random.Random(args.seed)
    start = time.monotonic()
    committed, kills, counts = 0, 0, {"resumed": 0, "too early": 0, "fresh": 0, "unresumable": 0}
    for i in range(args.kills):
        log = work / f"run{i:03d}.log"
        proc = launch(cmd, log)
        deadline = time.monotonic() + TIMEOUT
        while lock_holder(models) != proc.pid and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(args.min_delay, args.max_delay))
        killed = kill(proc)
        text = log.read_text(errors="replace")
        result = outcome(text, committed)
        counts[result] += 1
        committed = max([committed, *trained_epochs(text)])
        kills += killed
        print(f"run {i}: {'killed' if killed else 'ended'}, {result}, committed epoch {committed}", flush=True)
        if not killed:  # training finished (or failed) before the kill: nothing left to kill
            break

    log = work / "final.log"
    proc = launch(cmd, log)
    proc.wait(timeout=TIMEOUT)
    text = log.read_text(errors="replace")
    counts[outcome(text, committed)] += 1
    final_ok = proc.returncode == 0
    matches = False
    if final_ok:
        from monai_bigan.bundle.loading import check_model_identity

        try:
            check_model_identity(models / "model.pt", models / "calibration.json")
            matches = True
        except Exception as e:  # report the mismatch, do not hide it in a traceback
            print(f"final model check failed: {e}")
    else:
        print(text[-3000:])
    epochs = max([committed, *trained_epochs(text)])
    print()
    print(
        "| SIGKILLs | runs left unresumable | killed before resuming | final run | epochs trained "
        "| model.pt matches calibration.json | wall time |"
    )
    print("| ---: | ---: | ---: | --- | ---: | --- | ---: |")
    print(
        f"| {kills} | **{counts['unresumable']}** | {counts['too early']} | {'completed' if final_ok else 'FAILED'} | "
        f"{epochs}/{args.max_epochs} | {'yes' if matches else 'NO'} | {time.monotonic() - start:.0f} s |"
    )
    return 0 if final_ok and matches and counts["unresumable"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
