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
"""A check of every input file before training starts, so that a bad scan fails the run at once, not hours later."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from monai.transforms import apply_transform

from monai_bigan.utils.progress import progress_bar

from .guarded import describe_error

__all__ = ["PROGRESS_MIN_FILES", "preflight_check"]

logger = logging.getLogger(__name__)

# fewer files load in a moment: no progress bar
PROGRESS_MIN_FILES = 16


def preflight_check(
    datalist: Sequence[dict],
    transform: Callable | Sequence[Callable],
    image_key: str = "image",
    num_workers: int = 4,
    progress: bool = True,
) -> int:
    """
    Load every item of ``datalist`` once through ``transform`` (typically ``LoadImaged`` plus
    :py:class:`monai_bigan.transforms.CheckImaged`) and raise one error listing **all** the files that fail, each
    with its problem (truncated file, NaN voxels, constant image, 4D volume, ...), instead of MONAI's chain of
    "applying transform" errors for the first one. Nothing is kept: the data sets load the files again.

    Args:
        datalist: entries with ``image_key`` holding the file path, e.g. the training plus validation splits.
        transform: a callable or a sequence of transforms, applied in order.
        image_key: key of the file path, used to name the file.
        num_workers: threads loading files in parallel.
        progress: show a progress bar with an ETA, one step per file, when there are at least
            :py:data:`PROGRESS_MIN_FILES` files (on a terminal; in a log file a status line every 10 s at most).

    Returns:
        the number of items checked.

    Raises:
        ValueError: naming every bad file and its problem.

    Example::

        preflight_check(train_files + val_files, [LoadImaged("image", ensure_channel_first=True), CheckImaged("image")])
    """
    transforms = list(transform) if isinstance(transform, Sequence) else [transform]

    def check(item: dict) -> str | None:
        source = str(item.get(image_key, item)) if isinstance(item, dict) else str(item)
        try:
            data = item
            for t in transforms:
                data = apply_transform(t, data)
        except Exception as e:  # every bad file is reported, not only the first
            return describe_error(e, source)
        return None

    items = list(datalist)
    with ThreadPoolExecutor(max_workers=max(1, min(num_workers, len(items) or 1))) as pool:
        results = progress_bar(
            pool.map(check, items),
            total=len(items),
            desc="preflight",
            unit="file",
            enabled=progress and len(items) >= PROGRESS_MIN_FILES,
        )
        errors = [e for e in results if e is not None]
    if errors:
        listing = "\n".join(f"  - {e}" for e in errors)
        raise ValueError(
            f"{len(errors)} of {len(items)} input file(s) cannot be used for training; fix or remove them from the "
            f"datalist:\n{listing}"
        )
    logger.info(f"preflight check: all {len(items)} input files load and pass the image checks.")
    return len(items)
