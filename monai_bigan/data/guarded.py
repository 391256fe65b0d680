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
"""A dataset that reports a broken input as an error item instead of stopping the whole run."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from monai.data import Dataset
from monai.transforms import apply_transform

__all__ = ["GuardedDataset", "describe_error", "item_source", "ERROR_KEY", "SOURCE_KEY"]

ERROR_KEY = "error"
SOURCE_KEY = "source"


def describe_error(exc: BaseException, source: str) -> str:
    """
    One readable line for ``exc``, prefixed with ``source`` unless the message already names it: the first error of
    the cause chain whose message names ``source`` (a check's message, written for the user, over the library error
    it was raised from), else the innermost cause (MONAI wraps transform errors in "applying transform ..." runtime
    errors).
    """
    root = exc
    while root.__cause__ is not None and source not in str(root):
        root = root.__cause__
    message = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    if type(root).__name__ not in ("InvalidImageError", "ValueError", "RuntimeError"):
        message = f"{type(root).__name__}: {message}"
    return message if source in message else f"{source}: {message}"


def item_source(item: dict, image_key: str = "image") -> str:
    """
    The input path of an engine output item: the ``source`` of an error item, else the ``filename_or_obj`` of its
    image's metadata (how the report names an input's row, and how the handlers that act per input find it).
    """
    if SOURCE_KEY in item:
        return str(item[SOURCE_KEY])
    meta = getattr(item.get(image_key), "meta", None) or {}
    return str(meta.get("filename_or_obj", "<unknown input>"))


class GuardedDataset(Dataset):
    """
    ``monai.data.Dataset`` whose items that fail to load or preprocess become ``{"error": message, "source": path}``
    instead of raising, so that one truncated DICOM or NaN-filled scan does not stop a batch of hundreds.
    :py:class:`monai_bigan.engines.AnomalyEvaluator` turns such items into error rows. Use ``batch_size=1``: error
    items cannot be collated with images.

    Args:
        data: list of dicts, each with ``image_key`` holding the input path.
        transform: preprocessing applied to each item.
        image_key: key of the input path, reported in the error.
    """

    def __init__(self, data: Sequence, transform: Callable | None = None, image_key: str = "image") -> None:
        super().__init__(data=data, transform=transform)
        self.image_key = image_key

    def _transform(self, index: int):
        item = self.data[index]
        if isinstance(item, dict) and ERROR_KEY in item:
            # an input its datalist could not fetch (e.g. a PACS series that failed to download): reported, not loaded
            return {ERROR_KEY: str(item[ERROR_KEY]), SOURCE_KEY: str(item.get(self.image_key, f"item {index}"))}
        try:
            return apply_transform(self.transform, item) if self.transform is not None else item
        except Exception as e:  # a broken input must not stop the others
            source = str(item.get(self.image_key, f"item {index}")) if isinstance(item, dict) else f"item {index}"
            return {ERROR_KEY: describe_error(e, source), SOURCE_KEY: source}
